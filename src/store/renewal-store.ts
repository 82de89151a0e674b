import type { Executor } from './db.js';
import type { NoticeSink } from './rotation-policy-store.js';

export interface NoticeRow {
  serial: Buffer;
  deviceId: string;
  dueAt: Date;
  deadline: Date;
  state: 'pending' | 'sent' | 'superseded';
  notify: NoticeSink[];
  mqttSentAt: Date | null;
  webhookSentAt: Date | null;
  attempts: number;
  lastError: string | null;
  plannedAt: Date;
  sentAt: Date | null;
  /** 'server' when the service generated the certificate's key (its successor is staged, not asked for). */
  keyOrigin?: string | null;
  /** due: the policy's renewal point; rollover: a wave of an issuing-CA rollover. */
  reason: 'due' | 'rollover';
}

const COLUMNS = [
  'serial',
  'device_id',
  'due_at',
  'deadline',
  'state',
  'notify',
  'mqtt_sent_at',
  'webhook_sent_at',
  'attempts',
  'last_error',
  'planned_at',
  'sent_at',
  'reason',
];
const date = (v: unknown) => (v == null ? null : new Date(v as string));

function fromRow(r: Record<string, unknown>): NoticeRow {
  return {
    serial: Buffer.from(r.serial as Uint8Array),
    deviceId: r.device_id as string,
    dueAt: new Date(r.due_at as string),
    deadline: new Date(r.deadline as string),
    state: r.state as NoticeRow['state'],
    notify: (r.notify as NoticeSink[]) ?? [],
    mqttSentAt: date(r.mqtt_sent_at),
    webhookSentAt: date(r.webhook_sent_at),
    attempts: Number(r.attempts),
    lastError: (r.last_error as string | null) ?? null,
    plannedAt: new Date(r.planned_at as string),
    sentAt: date(r.sent_at),
    ...(r.key_origin !== undefined ? { keyOrigin: (r.key_origin as string | null) ?? null } : {}),
    reason: r.reason === 'rollover' ? 'rollover' : 'due',
  };
}

/** The renewal point of certificate c under the lot's (lp) and profile's (pp) policies; ? = the default fraction. */
const DUE_AT = `case
    when lp.renew_days_before is not null then c.not_after - make_interval(days => lp.renew_days_before)
    when lp.renew_at_fraction is not null then c.not_before + (c.not_after - c.not_before) * lp.renew_at_fraction
    when pp.renew_days_before is not null then c.not_after - make_interval(days => pp.renew_days_before)
    when pp.renew_at_fraction is not null then c.not_before + (c.not_after - c.not_before) * pp.renew_at_fraction
    else c.not_before + (c.not_after - c.not_before) * ?::float8
  end`;

export class RenewalStore {
  /** Current certificates of active devices past their renewal point (not yet expired), and how many current certificates there are. */
  async pastRenewalPoint(ex: Executor, now: Date, fraction: number): Promise<{ past: number; current: number }> {
    const r = await ex.raw(
      `select count(*) filter (where ${DUE_AT} <= ?) as past, count(*) as current
         from certificates c
         join devices d on d.current_serial = c.serial and d.status = 'active'
         left join rotation_policies lp on lp.scope = 'lot' and lp.name = d.lot
         left join rotation_policies pp on pp.scope = 'profile' and pp.name = c.profile
        where c.status = 'issued' and c.not_after > ?`,
      [fraction, now, now],
    );
    const row = (r.rows as { past: unknown; current: unknown }[])[0]!;
    return { past: Number(row.past), current: Number(row.current) };
  }

  /**
   * Records a notice for up to `limit` current certificates of active devices that passed their
   * renewal point and have none yet; returns their serials. Running it twice plans nothing twice.
   */
  async plan(ex: Executor, now: Date, defaults: { fraction: number; notify: NoticeSink[] }, limit: number): Promise<Buffer[]> {
    const r = await ex.raw(
      `insert into renewal_notices (serial, device_id, due_at, deadline, state, notify, planned_at, enqueued_at)
       select serial, device_id, due_at, not_after, 'pending', notify, ?, ?
         from (select c.serial, c.device_id, c.not_after, ${DUE_AT} as due_at,
                      coalesce(lp.notify, pp.notify, ?::text[]) as notify
                 from certificates c
                 join devices d on d.current_serial = c.serial and d.status = 'active'
                 left join rotation_policies lp on lp.scope = 'lot' and lp.name = d.lot
                 left join rotation_policies pp on pp.scope = 'profile' and pp.name = c.profile
                where c.status = 'issued' and c.not_after > ? and c.profile in ('device', 'broker')
                  and not exists (select 1 from renewal_notices n where n.serial = c.serial)) due
        where due_at <= ?
        order by due_at
        limit ?
       on conflict (serial) do nothing
       returning serial`,
      [now, now, defaults.fraction, defaults.notify, now, now, limit],
    );
    return (r.rows as { serial: Uint8Array }[]).map((x) => Buffer.from(x.serial));
  }

  /**
   * Leases the pending notices among `serials` to `worker` until `until`: a notice leased to a
   * live worker is not handed to another; a lapsed lease (the worker died) is taken over.
   */
  async claim(ex: Executor, serials: Buffer[], worker: string, now: Date, until: Date): Promise<NoticeRow[]> {
    const r = await ex.raw(
      `update renewal_notices set claimed_by = ?, claimed_until = ?, attempts = attempts + 1
        where serial = any(?::bytea[]) and state = 'pending' and (claimed_until is null or claimed_until < ?)
        returning ${COLUMNS.join(', ')}, (select c.key_origin from certificates c where c.serial = renewal_notices.serial) as key_origin`,
      [worker, until, serials, now],
    );
    return (r.rows as Record<string, unknown>[]).map(fromRow);
  }

  async markSent(ex: Executor, serials: Buffer[], sink: NoticeSink, at: Date): Promise<void> {
    if (serials.length === 0) return;
    const column = sink === 'mqtt' ? 'mqtt_sent_at' : 'webhook_sent_at';
    await ex.raw(`update renewal_notices set ${column} = ? where serial = any(?::bytea[]) and ${column} is null`, [at, serials]);
  }

  /** Closes notices this worker holds: sent (every sink done), or released with the error for the retry. */
  async finish(ex: Executor, worker: string, sent: Buffer[], failed: Buffer[], error: string | null, at: Date): Promise<void> {
    if (sent.length > 0) {
      await ex.raw(
        `update renewal_notices set state = 'sent', sent_at = ?, claimed_by = null, claimed_until = null, last_error = null
          where serial = any(?::bytea[]) and claimed_by = ?`,
        [at, sent, worker],
      );
    }
    if (failed.length > 0) {
      await ex.raw(
        `update renewal_notices set claimed_by = null, claimed_until = null, last_error = ?
          where serial = any(?::bytea[]) and claimed_by = ?`,
        [error, failed, worker],
      );
    }
  }

  /** Pending notices whose job was enqueued before `before` (its job may be lost with Redis): re-marked as enqueued now. */
  async redrive(ex: Executor, before: Date, now: Date, limit: number): Promise<Buffer[]> {
    const r = await ex.raw(
      `update renewal_notices set enqueued_at = ?
        where serial in (select serial from renewal_notices where state = 'pending' and enqueued_at < ? order by enqueued_at limit ? for update skip locked)
        returning serial`,
      [now, before, limit],
    );
    return (r.rows as { serial: Uint8Array }[]).map((x) => Buffer.from(x.serial));
  }

  /**
   * Pending notices whose certificate the device renewed meanwhile: nothing left to tell. Not those
   * a worker is sending now, nor those renewed by staging (the device still has to be told to pick up).
   */
  async supersedeRenewed(ex: Executor, now: Date): Promise<{ serial: Buffer; deviceId: string }[]> {
    const r = await ex.raw(
      `update renewal_notices n set state = 'superseded', claimed_by = null, claimed_until = null
        where n.state = 'pending' and (n.claimed_until is null or n.claimed_until < ?)
          and exists (select 1 from certificates c where c.renewed_from = n.serial and c.status = 'issued')
          and not exists (select 1 from staged_credentials s where s.renews = n.serial)
        returning n.serial, n.device_id`,
      [now],
    );
    return (r.rows as { serial: Uint8Array; device_id: string }[]).map((x) => ({ serial: Buffer.from(x.serial), deviceId: x.device_id }));
  }

  async pendingAmong(ex: Executor, serials: Buffer[]): Promise<number> {
    const r = await ex.raw(`select count(*) as n from renewal_notices where serial = any(?::bytea[]) and state = 'pending'`, [serials]);
    return Number((r.rows[0] as { n: unknown }).n);
  }

  async get(ex: Executor, serial: Buffer): Promise<NoticeRow | undefined> {
    const r = await ex('renewal_notices').select(COLUMNS).where({ serial }).first();
    return r ? fromRow(r) : undefined;
  }

  async counts(ex: Executor): Promise<Record<NoticeRow['state'], number>> {
    const rows = (await ex('renewal_notices').select('state').count({ n: '*' }).groupBy('state')) as { state: string; n: unknown }[];
    const out = { pending: 0, sent: 0, superseded: 0 };
    for (const r of rows) out[r.state as NoticeRow['state']] = Number(r.n);
    return out;
  }
}
