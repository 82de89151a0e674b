import type { Executor } from './db.js';

export type PolicyScope = 'profile' | 'lot';
export type NoticeSink = 'mqtt' | 'webhook';

/** A stored rotation policy; a null field inherits (lot → profile → built-in default). */
export interface RotationPolicyRow {
  scope: PolicyScope;
  name: string;
  renewAtFraction: number | null;
  renewDaysBefore: number | null;
  graceDays: number | null;
  sessionKeyPeriodHours: number | null;
  sessionKeyOverlapHours: number | null;
  notify: NoticeSink[] | null;
  createdAt: Date;
  updatedAt: Date;
  updatedBy: string;
}

export type RotationPolicyFields = Omit<RotationPolicyRow, 'scope' | 'name' | 'createdAt' | 'updatedAt' | 'updatedBy'>;

const COLUMNS = [
  'scope',
  'name',
  'renew_at_fraction',
  'renew_days_before',
  'grace_days',
  'session_key_period_hours',
  'session_key_overlap_hours',
  'notify',
  'created_at',
  'updated_at',
  'updated_by',
];

function fromRow(r: Record<string, unknown>): RotationPolicyRow {
  const num = (v: unknown) => (v == null ? null : Number(v));
  return {
    scope: r.scope as PolicyScope,
    name: r.name as string,
    renewAtFraction: num(r.renew_at_fraction),
    renewDaysBefore: num(r.renew_days_before),
    graceDays: num(r.grace_days),
    sessionKeyPeriodHours: num(r.session_key_period_hours),
    sessionKeyOverlapHours: num(r.session_key_overlap_hours),
    notify: (r.notify as NoticeSink[] | null) ?? null,
    createdAt: new Date(r.created_at as string),
    updatedAt: new Date(r.updated_at as string),
    updatedBy: r.updated_by as string,
  };
}

export class RotationPolicyStore {
  async list(ex: Executor): Promise<RotationPolicyRow[]> {
    return (await ex('rotation_policies').select(COLUMNS).orderBy(['scope', 'name'])).map(fromRow);
  }

  async get(ex: Executor, scope: PolicyScope, name: string): Promise<RotationPolicyRow | undefined> {
    const r = await ex('rotation_policies').select(COLUMNS).where({ scope, name }).first();
    return r ? fromRow(r) : undefined;
  }

  /** The rows that apply to a certificate of `profile` held by a device of `lot`: lot first. */
  async applicable(ex: Executor, profile: string, lot: string | null): Promise<RotationPolicyRow[]> {
    const rows = (
      await ex('rotation_policies')
        .select(COLUMNS)
        .where((w) => {
          w.where({ scope: 'profile', name: profile });
          if (lot !== null) w.orWhere({ scope: 'lot', name: lot });
        })
    ).map(fromRow);
    return rows.sort((a, b) => (a.scope === b.scope ? 0 : a.scope === 'lot' ? -1 : 1));
  }

  /** What picks a device's policy: its lot, and the profile of its current certificate (null before it has one). */
  async deviceScope(ex: Executor, deviceId: string): Promise<{ lot: string | null; profile: string | null } | undefined> {
    const r = await ex.raw(
      `select d.lot, c.profile from devices d left join certificates c on c.serial = d.current_serial where d.id = ?`,
      [deviceId],
    );
    const row = r.rows[0] as { lot: string | null; profile: string | null } | undefined;
    return row ? { lot: row.lot ?? null, profile: row.profile ?? null } : undefined;
  }

  /** Creates or replaces; returns the row and whether it was new. */
  async put(
    ex: Executor,
    scope: PolicyScope,
    name: string,
    f: RotationPolicyFields,
    at: Date,
    by: string,
  ): Promise<{ row: RotationPolicyRow; created: boolean }> {
    const values = {
      renew_at_fraction: f.renewAtFraction,
      renew_days_before: f.renewDaysBefore,
      grace_days: f.graceDays,
      session_key_period_hours: f.sessionKeyPeriodHours,
      session_key_overlap_hours: f.sessionKeyOverlapHours,
      notify: f.notify,
      updated_at: at,
      updated_by: by,
    };
    const r = await ex.raw(
      `insert into rotation_policies (scope, name, renew_at_fraction, renew_days_before, grace_days, session_key_period_hours,
                                      session_key_overlap_hours, notify, created_at, updated_at, updated_by)
       values (?, ?, ?, ?, ?, ?, ?, ?::text[], ?, ?, ?)
       on conflict (scope, name) do update set
         renew_at_fraction = excluded.renew_at_fraction, renew_days_before = excluded.renew_days_before,
         grace_days = excluded.grace_days, session_key_period_hours = excluded.session_key_period_hours,
         session_key_overlap_hours = excluded.session_key_overlap_hours, notify = excluded.notify,
         updated_at = excluded.updated_at, updated_by = excluded.updated_by
       returning ${COLUMNS.join(', ')}, (xmax = 0) as created`,
      [
        scope,
        name,
        values.renew_at_fraction,
        values.renew_days_before,
        values.grace_days,
        values.session_key_period_hours,
        values.session_key_overlap_hours,
        values.notify,
        at,
        at,
        by,
      ],
    );
    const row = r.rows[0] as Record<string, unknown>;
    return { row: fromRow(row), created: row.created === true };
  }

  async delete(ex: Executor, scope: PolicyScope, name: string): Promise<boolean> {
    const r = await ex.raw('delete from rotation_policies where scope = ? and name = ? returning scope', [scope, name]);
    return (r.rows as unknown[]).length > 0;
  }
}
