import type { Executor } from './db.js';
import { CaStore } from './ca-store.js';

const CA_STORE = new CaStore();
import type { NoticeSink } from './rotation-policy-store.js';

export type RolloverState = 'running' | 'paused' | 'done' | 'cancelled';

export interface RolloverRow {
  id: string;
  fromCa: string;
  toCa: string;
  state: RolloverState;
  waveSize: number;
  waveIntervalSeconds: number;
  waves: number;
  inWaves: number;
  lastWaveAt: Date | null;
  doneAt: Date | null;
  retiredAt: Date | null;
  createdBy: string;
  createdAt: Date;
  updatedAt: Date;
  updatedBy: string;
}

/** What the progress view counts, from the database at the moment of asking. */
export interface RolloverCounts {
  /** Current device certificates of the old CA (issued, not revoked, not expired, the device's current one, device active). */
  remaining: number;
  /** Of those, not taken into a wave yet. */
  unscheduled: number;
  /** Certificates whose notice of this rollover went out through a sink (the wave cleared what an earlier notice had). */
  notified: number;
  /** Certificates taken into a wave that were renewed onto the successor. */
  renewed: number;
}

const COLUMNS = [
  'id',
  'from_ca',
  'to_ca',
  'state',
  'wave_size',
  'wave_interval_seconds',
  'waves',
  'in_waves',
  'last_wave_at',
  'done_at',
  'retired_at',
  'created_by',
  'created_at',
  'updated_at',
  'updated_by',
];
const date = (v: unknown) => (v == null ? null : new Date(v as string));

function fromRow(r: Record<string, unknown>): RolloverRow {
  return {
    id: r.id as string,
    fromCa: r.from_ca as string,
    toCa: r.to_ca as string,
    state: r.state as RolloverState,
    waveSize: Number(r.wave_size),
    waveIntervalSeconds: Number(r.wave_interval_seconds),
    waves: Number(r.waves),
    inWaves: Number(r.in_waves),
    lastWaveAt: date(r.last_wave_at),
    doneAt: date(r.done_at),
    retiredAt: date(r.retired_at),
    createdBy: r.created_by as string,
    createdAt: new Date(r.created_at as string),
    updatedAt: new Date(r.updated_at as string),
    updatedBy: r.updated_by as string,
  };
}

/** The old CA's current device certificates, `c`, held by active devices `d` (the rollover's population; wave() spells it out with the policy joins). */
const POPULATION = `certificates c
    join devices d on d.current_serial = c.serial and d.status = 'active'
   where c.ca_id = ? and c.status = 'issued' and c.not_after > ? and c.profile in ('device', 'broker')`;

export class RolloverStore {
  async insert(ex: Executor, r: RolloverRow): Promise<void> {
    await ex('ca_rollovers').insert({
      id: r.id,
      from_ca: r.fromCa,
      to_ca: r.toCa,
      state: r.state,
      wave_size: r.waveSize,
      wave_interval_seconds: r.waveIntervalSeconds,
      waves: r.waves,
      in_waves: r.inWaves,
      last_wave_at: r.lastWaveAt,
      done_at: r.doneAt,
      retired_at: r.retiredAt,
      created_by: r.createdBy,
      created_at: r.createdAt,
      updated_at: r.updatedAt,
      updated_by: r.updatedBy,
    });
  }

  async get(ex: Executor, id: string): Promise<RolloverRow | undefined> {
    const r = await ex('ca_rollovers').select(COLUMNS).where({ id }).first();
    return r ? fromRow(r) : undefined;
  }

  /** The CA's rollover that is not cancelled, else its newest cancelled one. */
  async latestFrom(ex: Executor, caId: string): Promise<RolloverRow | undefined> {
    const r = await ex('ca_rollovers')
      .select(COLUMNS)
      .where({ from_ca: caId })
      .orderByRaw("(state <> 'cancelled') desc, created_at desc, id desc")
      .first();
    return r ? fromRow(r) : undefined;
  }

  /** The CA that replaces `caId` (its rollover that is not cancelled), if any. */
  successorOf(ex: Executor, caId: string): Promise<string | undefined> {
    return CA_STORE.successorOf(ex, caId);
  }

  async caStatus(ex: Executor, caId: string): Promise<string | undefined> {
    const r = await ex('cas').select('status').where({ id: caId }).first();
    return (r?.status as string | undefined) ?? undefined;
  }

  async caOfCertificate(ex: Executor, serial: Buffer): Promise<string | undefined> {
    const r = await ex('certificates').select('ca_id').where({ serial }).first();
    return (r?.ca_id as string | undefined) ?? undefined;
  }

  /** Locks a rollover row; skips it (undefined) when another transaction holds it. */
  async lockSkip(ex: Executor, id: string): Promise<RolloverRow | undefined> {
    const r = await ex('ca_rollovers').select(COLUMNS).where({ id }).forUpdate().skipLocked().first();
    return r ? fromRow(r) : undefined;
  }

  /** Locks a rollover row, waiting for another transaction that holds it. */
  async lock(ex: Executor, id: string): Promise<RolloverRow | undefined> {
    const r = await ex('ca_rollovers').select(COLUMNS).where({ id }).forUpdate().first();
    return r ? fromRow(r) : undefined;
  }

  async ids(ex: Executor, states: RolloverState[]): Promise<string[]> {
    const rows = (await ex('ca_rollovers').select('id').whereIn('state', states).orderBy('created_at')) as { id: string }[];
    return rows.map((r) => r.id);
  }

  /** Done rollovers whose old CA has not been retired yet. */
  async awaitingRetirement(ex: Executor): Promise<RolloverRow[]> {
    const rows = await ex('ca_rollovers').select(COLUMNS).where({ state: 'done' }).whereNull('retired_at').orderBy('created_at');
    return rows.map(fromRow);
  }

  async setState(ex: Executor, id: string, from: RolloverState[], to: RolloverState, at: Date, by: string): Promise<boolean> {
    const n = await ex('ca_rollovers')
      .where({ id })
      .whereIn('state', from)
      .update({ state: to, updated_at: at, updated_by: by, ...(to === 'done' ? { done_at: at } : {}) });
    return Number(n) > 0;
  }

  async recordWave(ex: Executor, id: string, count: number, at: Date): Promise<void> {
    await ex('ca_rollovers')
      .where({ id })
      .update({ waves: ex.raw('waves + 1'), in_waves: ex.raw('in_waves + ?', [count]), last_wave_at: at, updated_at: at });
  }

  async markRetired(ex: Executor, id: string, at: Date): Promise<void> {
    await ex('ca_rollovers').where({ id }).update({ retired_at: at, updated_at: at });
  }

  /**
   * One wave: takes up to `limit` of the old CA's current device certificates that no wave of this
   * rollover took yet, records them as wave `wave` (the primary key keeps a certificate in one wave),
   * and makes each one's renewal notice due now: a new notice, or the existing one set back to
   * pending (and its sinks cleared) so it goes out again. Returns the serials taken.
   */
  async wave(
    ex: Executor,
    r: { id: string; fromCa: string; wave: number; limit: number },
    now: Date,
    defaults: { notify: NoticeSink[] },
  ): Promise<Buffer[]> {
    const res = await ex.raw(
      `with picked as materialized (
         select c.serial, c.device_id, c.not_after, coalesce(lp.notify, pp.notify, ?::text[]) as notify
           from certificates c
           join devices d on d.current_serial = c.serial and d.status = 'active'
           left join rotation_policies lp on lp.scope = 'lot' and lp.name = d.lot
           left join rotation_policies pp on pp.scope = 'profile' and pp.name = c.profile
          where c.ca_id = ? and c.status = 'issued' and c.not_after > ? and c.profile in ('device', 'broker')
            and not exists (select 1 from ca_rollover_members m where m.rollover_id = ? and m.serial = c.serial)
          order by c.not_after, c.serial
          limit ?
       ),
       taken as (
         insert into ca_rollover_members (rollover_id, serial, wave, added_at)
         select ?, serial, ?, ? from picked
         on conflict do nothing
         returning serial
       ),
       noticed as (
         insert into renewal_notices (serial, device_id, due_at, deadline, state, notify, planned_at, enqueued_at, reason)
         select p.serial, p.device_id, ?, p.not_after, 'pending', p.notify, ?, ?, 'rollover'
           from picked p join taken t on t.serial = p.serial
         on conflict (serial) do update
           set state = 'pending', due_at = excluded.due_at, notify = excluded.notify, enqueued_at = excluded.enqueued_at,
               reason = 'rollover', mqtt_sent_at = null, webhook_sent_at = null, sent_at = null, last_error = null
           where renewal_notices.state <> 'superseded'
         returning serial
       )
       select t.serial from taken t`,
      [defaults.notify, r.fromCa, now, r.id, r.limit, r.id, r.wave, now, now, now, now],
    );
    return (res.rows as { serial: Uint8Array }[]).map((x) => Buffer.from(x.serial));
  }

  async counts(ex: Executor, r: { id: string; fromCa: string; toCa: string }, now: Date): Promise<RolloverCounts> {
    const res = await ex.raw(
      `select
         (select count(*) from ${POPULATION}) as remaining,
         (select count(*) from ${POPULATION}
            and not exists (select 1 from ca_rollover_members m where m.rollover_id = ? and m.serial = c.serial)) as unscheduled,
         (select count(*) from ca_rollover_members m join renewal_notices n on n.serial = m.serial
           where m.rollover_id = ? and n.reason = 'rollover' and (n.mqtt_sent_at is not null or n.webhook_sent_at is not null)) as notified,
         (select count(*) from ca_rollover_members m
           where m.rollover_id = ? and exists (select 1 from certificates c2 where c2.renewed_from = m.serial and c2.ca_id = ? and c2.status in ('issued', 'revoked'))) as renewed`,
      [r.fromCa, now, r.fromCa, now, r.id, r.id, r.id, r.toCa],
    );
    const row = res.rows[0] as Record<string, unknown>;
    return {
      remaining: Number(row.remaining),
      unscheduled: Number(row.unscheduled),
      notified: Number(row.notified),
      renewed: Number(row.renewed),
    };
  }

  async remaining(ex: Executor, fromCa: string, now: Date): Promise<number> {
    const res = await ex.raw(`select count(*) as n from ${POPULATION}`, [fromCa, now]);
    return Number((res.rows[0] as { n: unknown }).n);
  }

  /**
   * The latest notAfter of a CA's certificates that still need its CRL and OCSP (issued or
   * revoked; its OCSP responder's own certificates aside), or null when none is left unexpired.
   */
  async lastExpiry(ex: Executor, caId: string, now: Date): Promise<Date | null> {
    const res = await ex.raw(
      `select max(not_after) as last from certificates
        where ca_id = ? and status in ('issued', 'revoked') and profile <> 'ocsp-responder' and not_after > ?`,
      [caId, now],
    );
    return date((res.rows[0] as { last: unknown }).last);
  }
}
