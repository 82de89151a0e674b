import type { Knex } from 'knex';
import type { Executor } from './db.js';
import type { DeviceKind, DeviceStatus } from '../shared/api-views.js';

/**
 * What one flush knows of one (broker, identity): the events of a batch coalesced in order
 * (PresenceRecorder). Times are the broker's.
 */
export interface PresenceUpdate {
  broker: string;
  identity: string;
  /**
   * The client id the batch's state is about: the latest connect's; without a connect, the latest
   * disconnect's; without either, the latest event's.
   */
  clientId: string | null;
  /**
   * The state after the batch's latest connect or disconnect (a disconnect of another client id
   * than the batch's connect does not end that session). False when the batch has neither: the
   * stored state is then left as it is.
   */
  connected: boolean;
  /** The batch's latest connect. */
  connect: {
    at: Date;
    username: string | null;
    source: { host: string; port: number | null } | null;
    protocol: string | null;
    keepAliveSeconds: number | null;
  } | null;
  /** The batch's latest disconnect. */
  disconnect: { at: Date; reason: string; detail: string | null } | null;
  connects: number;
  disconnects: number;
  /** The batch's latest event other than a connect or disconnect (subscribe, publish, a denied act...). */
  activityAt: Date | null;
}

/** A bus_presence row as the domain sees it. */
export interface PresenceRow {
  broker: string;
  identity: string;
  clientId: string | null;
  connected: boolean;
  lastConnectAt: Date | null;
  lastDisconnectAt: Date | null;
  lastDisconnectReason: string | null;
  lastDisconnectDetail: string | null;
  source: { host: string; port: number | null } | null;
  username: string | null;
  protocol: string | null;
  keepAliveSeconds: number | null;
  connectsTotal: number;
  disconnectsTotal: number;
  lastActivityAt: Date | null;
  /** The latest of the connect, disconnect and activity times. */
  lastSeenAt: Date;
  updatedAt: Date;
}

/** A device seen on the bus, not connected now, and last seen before the query's time. */
export interface SilentDevice {
  deviceId: string;
  kind: DeviceKind;
  lot: string | null;
  site: string | null;
  /** The latest time any broker saw it. */
  lastSeenAt: Date;
}

export interface SilentQuery {
  /** Last seen (on every broker) before this time. */
  before: Date;
  lot?: string | undefined;
  site?: string | undefined;
  kind?: DeviceKind | undefined;
  /** Default: every status but revoked and decommissioned (devices not expected on the bus). */
  statuses?: readonly DeviceStatus[] | undefined;
  /** Where the previous page stopped: ordered by (lastSeenAt, deviceId), oldest first. */
  after?: { lastSeenAt: Date; deviceId: string } | undefined;
  limit: number;
}

/** One (broker, site, lot) group of the network map; `unregistered` groups identities that are no device. */
export interface MapGroupRow {
  broker: string;
  site: string | null;
  lot: string | null;
  unregistered: boolean;
  connected: number;
  seen: number;
  known: number;
}

/** The device list's presence filters (DeviceStore.list): see presenceFilterSql. */
export interface PresenceFilter {
  connected?: boolean | undefined;
  silentSince?: Date | undefined;
  broker?: string | undefined;
}

/**
 * Activity alone (no connect or disconnect in the batch) updates a row only when it moves the
 * stored activity time on by at least this: a chatty client rewrites its row once a minute, not
 * on every flush. Silence is measured in minutes and more.
 */
export const ACTIVITY_RESOLUTION_SECONDS = 60;

const COLUMNS = [
  'broker',
  'identity',
  'client_id',
  'connected',
  'last_connect_at',
  'last_disconnect_at',
  'last_disconnect_reason',
  'last_disconnect_detail',
  'source_host',
  'source_port',
  'username',
  'protocol',
  'keep_alive_seconds',
  'connects_total',
  'disconnects_total',
  'last_activity_at',
  'last_seen_at',
  'updated_at',
];

const dateOrNull = (v: unknown): Date | null => (v == null ? null : new Date(v as string | Date));
const textOrNull = (v: unknown): string | null => (v == null ? null : (v as string));
const intOrNull = (v: unknown): number | null => (v == null ? null : Number(v));

function fromRow(r: Record<string, unknown>): PresenceRow {
  return {
    broker: r.broker as string,
    identity: r.identity as string,
    clientId: textOrNull(r.client_id),
    connected: r.connected === true,
    lastConnectAt: dateOrNull(r.last_connect_at),
    lastDisconnectAt: dateOrNull(r.last_disconnect_at),
    lastDisconnectReason: textOrNull(r.last_disconnect_reason),
    lastDisconnectDetail: textOrNull(r.last_disconnect_detail),
    source: r.source_host == null ? null : { host: r.source_host as string, port: intOrNull(r.source_port) },
    username: textOrNull(r.username),
    protocol: textOrNull(r.protocol),
    keepAliveSeconds: intOrNull(r.keep_alive_seconds),
    connectsTotal: Number(r.connects_total),
    disconnectsTotal: Number(r.disconnects_total),
    lastActivityAt: dateOrNull(r.last_activity_at),
    lastSeenAt: new Date(r.last_seen_at as string | Date),
    updatedAt: new Date(r.updated_at as string | Date),
  };
}

const NEVER = `'-infinity'::timestamptz`;
/** The time of the latest connect or disconnect a row (or the batch's row, `excluded`) knows; -infinity for none. */
const stateAt = (t: string) => `coalesce(greatest(${t}.last_connect_at, ${t}.last_disconnect_at), ${NEVER})`;
/** The batch's connect is the latest known (or as late): its attributes replace the stored ones. */
const NEWER_CONNECT = `(excluded.last_connect_at is not null and excluded.last_connect_at >= coalesce(p.last_connect_at, ${NEVER}))`;
const NEWER_DISCONNECT = `(excluded.last_disconnect_at is not null and excluded.last_disconnect_at >= coalesce(p.last_disconnect_at, ${NEVER}))`;
const fromConnect = (c: string) => `${c} = case when ${NEWER_CONNECT} then excluded.${c} else p.${c} end`;

/**
 * The state a batch leaves: its own when its latest connect or disconnect is as late as the
 * row's or later (a tie goes to the batch: flushes of one process follow the broker's order);
 * the row's when the batch is older news (another process's late flush) or has no connect or
 * disconnect. A disconnect ends the stored session only when the batch saw that session's
 * connect or the client ids agree: a disconnect of another client id (an older session of the same
 * identity, one taken over) leaves the current one connected.
 */
const CONNECTED = `case
  when excluded.last_connect_at is null and excluded.last_disconnect_at is null then p.connected
  when ${stateAt('excluded')} < ${stateAt('p')} then p.connected
  when excluded.connected then true
  when excluded.last_connect_at is not null and excluded.last_connect_at >= coalesce(p.last_connect_at, ${NEVER}) then false
  when p.client_id is null or excluded.client_id is null or excluded.client_id = p.client_id then false
  else p.connected
end`;

/** SQL for presence on the bus (bus_presence, migration 0030). */
export class BusPresenceStore {
  /**
   * Writes a batch in ONE statement, whatever its size (the rows travel as one jsonb parameter).
   * The rows' keys must be distinct (the recorder's map keeps one per key). Counts add up; times
   * keep the later; a connect's attributes (client id, source, username, protocol, keep-alive) and
   * a disconnect's reason follow the latest of each; the state follows the latest connect or
   * disconnect (see CONNECTED). So batches of two processes, flushed in either order, leave the
   * same row. Returns the rows inserted or updated (activity-only rows within
   * ACTIVITY_RESOLUTION_SECONDS of the stored activity are left alone).
   */
  async upsert(db: Executor, rows: readonly PresenceUpdate[], at: Date): Promise<number> {
    if (rows.length === 0) return 0;
    const payload = JSON.stringify(
      rows.map((r) => ({
        broker: r.broker,
        identity: r.identity,
        client_id: r.clientId,
        connected: r.connected,
        connect_at: r.connect?.at.toISOString() ?? null,
        username: r.connect?.username ?? null,
        source_host: r.connect?.source?.host ?? null,
        source_port: r.connect?.source?.port ?? null,
        protocol: r.connect?.protocol ?? null,
        keep_alive_seconds: r.connect?.keepAliveSeconds ?? null,
        disconnect_at: r.disconnect?.at.toISOString() ?? null,
        disconnect_reason: r.disconnect?.reason ?? null,
        disconnect_detail: r.disconnect?.detail ?? null,
        connects: r.connects,
        disconnects: r.disconnects,
        activity_at: r.activityAt?.toISOString() ?? null,
      })),
    );
    const result = await db.raw(
      `insert into bus_presence as p (broker, identity, client_id, connected, last_connect_at, last_disconnect_at,
              last_disconnect_reason, last_disconnect_detail, source_host, source_port, username, protocol, keep_alive_seconds,
              connects_total, disconnects_total, last_activity_at, last_seen_at, updated_at)
       select r.broker, r.identity, r.client_id, r.connected, r.connect_at, r.disconnect_at,
              r.disconnect_reason, r.disconnect_detail, r.source_host, r.source_port, r.username, r.protocol, r.keep_alive_seconds,
              r.connects, r.disconnects, r.activity_at, greatest(r.connect_at, r.disconnect_at, r.activity_at), ?::timestamptz
         from jsonb_to_recordset(?::jsonb) as r(broker text, identity text, client_id text, connected boolean,
              connect_at timestamptz, username text, source_host text, source_port integer, protocol text, keep_alive_seconds integer,
              disconnect_at timestamptz, disconnect_reason text, disconnect_detail text,
              connects bigint, disconnects bigint, activity_at timestamptz)
       on conflict (broker, identity) do update set
         connected = ${CONNECTED},
         client_id = case when ${NEWER_CONNECT} or p.client_id is null then excluded.client_id else p.client_id end,
         ${fromConnect('source_host')},
         ${fromConnect('source_port')},
         ${fromConnect('username')},
         ${fromConnect('protocol')},
         ${fromConnect('keep_alive_seconds')},
         last_connect_at = greatest(p.last_connect_at, excluded.last_connect_at),
         last_disconnect_reason = case when ${NEWER_DISCONNECT} then excluded.last_disconnect_reason else p.last_disconnect_reason end,
         last_disconnect_detail = case when ${NEWER_DISCONNECT} then excluded.last_disconnect_detail else p.last_disconnect_detail end,
         last_disconnect_at = greatest(p.last_disconnect_at, excluded.last_disconnect_at),
         connects_total = p.connects_total + excluded.connects_total,
         disconnects_total = p.disconnects_total + excluded.disconnects_total,
         last_activity_at = greatest(p.last_activity_at, excluded.last_activity_at),
         last_seen_at = greatest(p.last_seen_at, excluded.last_seen_at),
         updated_at = excluded.updated_at
       where excluded.connects_total > 0 or excluded.disconnects_total > 0 or p.last_activity_at is null
          or excluded.last_activity_at >= p.last_activity_at + interval '${ACTIVITY_RESOLUTION_SECONDS} seconds'`,
      [at, payload],
    );
    return Number((result as { rowCount?: number }).rowCount ?? 0);
  }

  /** Every broker's row for this identity (a device's presence: identity = device id), by broker. */
  async ofIdentity(db: Executor, identity: string): Promise<PresenceRow[]> {
    const rows = (await db('bus_presence').select(COLUMNS).where({ identity }).orderBy('broker')) as Record<string, unknown>[];
    return rows.map(fromRow);
  }

  /** Active devices seen on any broker since `since` (the bus watch's coverage of the fleet). */
  async activeSeen(db: Executor, since: Date): Promise<number> {
    const r = await db.raw(
      `select count(*)::bigint as n from devices d
        where d.status = 'active'
          and exists (select 1 from bus_presence p where p.identity = d.id and p.last_seen_at >= ?)`,
      [since],
    );
    return Number((r.rows[0] as { n: string | number }).n);
  }

  /**
   * Devices seen on the bus, connected on no broker now, and last seen (on every broker) before
   * `before`: oldest silence first. Devices never seen are not silent (they have never spoken);
   * identities that are no device are left out. Reads the disconnected rows only (the partial
   * index of migration 0030).
   */
  async silent(db: Executor, q: SilentQuery): Promise<SilentDevice[]> {
    const statuses = q.statuses ?? ['registered', 'active', 'suspended'];
    const where: string[] = ['d.status = any(?::text[])'];
    const params: Knex.RawBinding[] = [q.before, q.before, [...statuses]];
    if (q.lot !== undefined) {
      where.push('d.lot = ?');
      params.push(q.lot);
    }
    if (q.site !== undefined) {
      where.push('d.site = ?');
      params.push(q.site);
    }
    if (q.kind !== undefined) {
      where.push('d.kind = ?');
      params.push(q.kind);
    }
    if (q.after) {
      where.push('(s.last_seen_at, d.id) > (?::timestamptz, ?::text)');
      params.push(q.after.lastSeenAt, q.after.deviceId);
    }
    params.push(q.limit);
    const result = await db.raw(
      `select d.id, d.kind, d.lot, d.site, s.last_seen_at
         from (select identity, max(last_seen_at) as last_seen_at
                 from bus_presence where not connected and last_seen_at < ? group by identity) s
         join devices d on d.id = s.identity
        where not exists (select 1 from bus_presence c where c.identity = s.identity and (c.connected or c.last_seen_at >= ?))
          and ${where.join(' and ')}
        order by s.last_seen_at, d.id
        limit ?`,
      params,
    );
    return (result.rows as Record<string, unknown>[]).map((r) => ({
      deviceId: r.id as string,
      kind: r.kind as DeviceKind,
      lot: textOrNull(r.lot),
      site: textOrNull(r.site),
      lastSeenAt: new Date(r.last_seen_at as string | Date),
    }));
  }

  /**
   * The network map: per broker, the identities it knows grouped by their device's site and lot
   * (identities that are no device in one `unregistered` group per broker), with how many are
   * connected, seen since `seenSince` (or connected) and known. One pass over the table.
   */
  async map(db: Executor, seenSince: Date): Promise<MapGroupRow[]> {
    const result = await db.raw(
      `select p.broker, d.site, d.lot, d.id is null as unregistered,
              count(*) filter (where p.connected) as connected,
              count(*) filter (where p.connected or p.last_seen_at >= ?) as seen,
              count(*) as known
         from bus_presence p left join devices d on d.id = p.identity
        group by p.broker, d.site, d.lot, d.id is null
        order by p.broker, d.id is null, d.site nulls last, d.lot nulls last`,
      [seenSince],
    );
    return (result.rows as Record<string, unknown>[]).map((r) => ({
      broker: r.broker as string,
      site: textOrNull(r.site),
      lot: textOrNull(r.lot),
      unregistered: r.unregistered === true,
      connected: Number(r.connected),
      seen: Number(r.seen),
      known: Number(r.known),
    }));
  }
}

/**
 * The device list's presence filters as SQL on `devices` (DeviceStore.list): `connected` true:
 * connected now (on `broker`, when given); false: connected on no broker (not on `broker`) now,
 * devices never seen included, so the two answers add up to the whole list. `broker`: seen on
 * that broker at some time. `silentSince`: seen on the bus (on `broker`), not connected now and
 * not seen since that time; devices never seen are not silent.
 */
export function presenceFilterSql(f: PresenceFilter): { sql: string; bindings: Knex.RawBinding[] }[] {
  const out: { sql: string; bindings: Knex.RawBinding[] }[] = [];
  const onBroker = f.broker !== undefined ? ' and p.broker = ?' : '';
  const broker = f.broker !== undefined ? [f.broker] : [];
  const rows = (cond: string) => `select 1 from bus_presence p where p.identity = devices.id${onBroker}${cond}`;
  if (f.broker !== undefined || f.silentSince !== undefined) out.push({ sql: `exists (${rows('')})`, bindings: broker });
  if (f.connected === true) out.push({ sql: `exists (${rows(' and p.connected')})`, bindings: broker });
  if (f.connected === false) out.push({ sql: `not exists (${rows(' and p.connected')})`, bindings: broker });
  if (f.silentSince !== undefined)
    out.push({
      sql: `not exists (${rows(' and (p.connected or p.last_seen_at >= ?)')})`,
      bindings: [...broker, f.silentSince],
    });
  return out;
}
