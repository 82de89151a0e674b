import type { Executor } from './db.js';

export type SessionKeyScope = 'device' | 'channel';

/** Why a version was made. */
export type SessionKeyOrigin = 'created' | 'scheduled' | 'manual' | 'member-revoked' | 'member-removed' | 'member-key-revoked';

export interface ChannelRow {
  name: string;
  topicTree: string;
  periodSeconds: number;
  overlapSeconds: number;
  createdAt: Date;
  updatedAt: Date;
}

/** A channel with what its view shows of its members and keys. */
export interface ChannelSummaryRow extends ChannelRow {
  memberCount: number;
  currentVersion: number | null;
}

export interface ChannelMemberRow {
  deviceId: string;
  addedAt: Date;
}

/** A session key version without its sealed material. */
export interface SessionKeyMetaRow {
  id: string;
  scope: SessionKeyScope;
  owner: string;
  version: number;
  origin: SessionKeyOrigin;
  notBefore: Date;
  rotateAt: Date;
  notAfter: Date;
  supersededAt: Date | null;
  revokedAt: Date | null;
  reason: string | null;
  createdAt: Date;
}

/** A version with its key sealed under the KEK (see src/ca/envelope.ts; the aad is the id). */
export interface SealedSessionKeyRow extends SessionKeyMetaRow {
  kekId: string;
  wrappedDek: Buffer;
  ciphertext: Buffer;
}

/** The next version of a series to insert: its number is taken in the statement (one more than the newest). */
export interface NextSessionKeyRow {
  id: string;
  scope: SessionKeyScope;
  owner: string;
  kekId: string;
  wrappedDek: Buffer;
  ciphertext: Buffer;
  origin: SessionKeyOrigin;
  notBefore: Date;
  rotateAt: Date;
  notAfter: Date;
  createdAt: Date;
}

const META = [
  'id',
  'scope',
  'owner',
  'version',
  'origin',
  'not_before',
  'rotate_at',
  'not_after',
  'superseded_at',
  'revoked_at',
  'reason',
  'created_at',
];
const SEALED = [...META, 'kek_id', 'wrapped_dek', 'ciphertext'];
const CHANNEL = ['name', 'topic_tree', 'period_seconds', 'overlap_seconds', 'created_at', 'updated_at'];

const date = (v: unknown) => new Date(v as string | Date);
const dateOrNull = (v: unknown) => (v == null ? null : date(v));

function metaOf(r: Record<string, unknown>): SessionKeyMetaRow {
  return {
    id: r.id as string,
    scope: r.scope as SessionKeyScope,
    owner: r.owner as string,
    version: Number(r.version),
    origin: r.origin as SessionKeyOrigin,
    notBefore: date(r.not_before),
    rotateAt: date(r.rotate_at),
    notAfter: date(r.not_after),
    supersededAt: dateOrNull(r.superseded_at),
    revokedAt: dateOrNull(r.revoked_at),
    reason: (r.reason as string | null) ?? null,
    createdAt: date(r.created_at),
  };
}

function sealedOf(r: Record<string, unknown>): SealedSessionKeyRow {
  return {
    ...metaOf(r),
    kekId: r.kek_id as string,
    wrappedDek: Buffer.from(r.wrapped_dek as Uint8Array),
    ciphertext: Buffer.from(r.ciphertext as Uint8Array),
  };
}

function channelOf(r: Record<string, unknown>): ChannelRow {
  return {
    name: r.name as string,
    topicTree: r.topic_tree as string,
    periodSeconds: Number(r.period_seconds),
    overlapSeconds: Number(r.overlap_seconds),
    createdAt: date(r.created_at),
    updatedAt: date(r.updated_at),
  };
}

/** SQL for channels, their members and session key versions. */
export class SessionKeyStore {
  // ---- channels --------------------------------------------------------------------------

  /** Inserts the channel unless the name is taken; true when inserted. */
  async insertChannel(ex: Executor, row: ChannelRow): Promise<boolean> {
    const r = await ex.raw(
      `insert into channels (name, topic_tree, period_seconds, overlap_seconds, created_at, updated_at)
       values (?, ?, ?, ?, ?, ?) on conflict (name) do nothing returning name`,
      [row.name, row.topicTree, row.periodSeconds, row.overlapSeconds, row.createdAt, row.updatedAt],
    );
    return r.rows.length === 1;
  }

  async getChannel(ex: Executor, name: string): Promise<ChannelSummaryRow | undefined> {
    return (await this.summaries(ex, { names: [name], limit: 1 }))[0];
  }

  /** By name, from after `afterName`. */
  async listChannels(ex: Executor, page: { afterName?: string | undefined; limit: number }): Promise<ChannelSummaryRow[]> {
    return this.summaries(ex, page);
  }

  private async summaries(
    ex: Executor,
    q: { names?: string[]; afterName?: string | undefined; limit: number },
  ): Promise<ChannelSummaryRow[]> {
    const query = ex('channels as c')
      .select(CHANNEL.map((c) => `c.${c}`))
      .select(ex.raw('(select count(*) from channel_members m where m.channel = c.name) as member_count'))
      .select(
        ex.raw(
          `(select k.version from session_keys k where k.scope = 'channel' and k.owner = c.name and k.superseded_at is null) as current_version`,
        ),
      );
    if (q.names) query.whereRaw('c.name = any(?::text[])', [q.names]);
    if (q.afterName !== undefined) query.where('c.name', '>', q.afterName);
    const rows = (await query.orderBy('c.name').limit(q.limit)) as Record<string, unknown>[];
    return rows.map((r) => ({
      ...channelOf(r),
      memberCount: Number(r.member_count),
      currentVersion: r.current_version == null ? null : Number(r.current_version),
    }));
  }

  /** Locks the channels (in name order, so lockers never deadlock) until the transaction ends; returns those that exist. */
  async lockChannels(tx: Executor, names: string[]): Promise<ChannelRow[]> {
    if (names.length === 0) return [];
    const rows = (await tx('channels').select(CHANNEL).whereRaw('name = any(?::text[])', [names]).orderBy('name').forUpdate()) as Record<
      string,
      unknown
    >[];
    return rows.map(channelOf);
  }

  async touchChannel(tx: Executor, name: string, at: Date): Promise<void> {
    await tx('channels').where({ name }).update({ updated_at: at });
  }

  // ---- members ---------------------------------------------------------------------------

  /** Adds the devices (one statement); returns the ids that were not members yet. */
  async addMembers(tx: Executor, channel: string, deviceIds: string[], at: Date): Promise<string[]> {
    if (deviceIds.length === 0) return [];
    const r = await tx.raw(
      `insert into channel_members (channel, device_id, added_at)
       select ?, d, ? from unnest(?::text[]) as d
       on conflict (channel, device_id) do nothing
       returning device_id`,
      [channel, at, deviceIds],
    );
    return (r.rows as { device_id: string }[]).map((x) => x.device_id);
  }

  async removeMember(tx: Executor, channel: string, deviceId: string): Promise<boolean> {
    const rows = (await tx('channel_members').where({ channel, device_id: deviceId }).delete().returning('device_id')) as unknown[];
    return rows.length === 1;
  }

  /** By device id, from after `afterDeviceId`. */
  async listMembers(
    ex: Executor,
    channel: string,
    page: { afterDeviceId?: string | undefined; limit: number },
  ): Promise<ChannelMemberRow[]> {
    const q = ex('channel_members').select('device_id', 'added_at').where({ channel });
    if (page.afterDeviceId !== undefined) q.where('device_id', '>', page.afterDeviceId);
    const rows = (await q.orderBy('device_id').limit(page.limit)) as Record<string, unknown>[];
    return rows.map((r) => ({ deviceId: r.device_id as string, addedAt: date(r.added_at) }));
  }

  /** The channels these devices belong to. */
  async channelsOf(ex: Executor, deviceIds: string[]): Promise<{ channel: string; deviceId: string }[]> {
    if (deviceIds.length === 0) return [];
    const rows = (await ex('channel_members')
      .select('channel', 'device_id')
      .whereRaw('device_id = any(?::text[])', [deviceIds])
      .orderBy(['channel', 'device_id'])) as Record<string, unknown>[];
    return rows.map((r) => ({ channel: r.channel as string, deviceId: r.device_id as string }));
  }

  // ---- devices and certificates (read, and the owner lock of a device's series) ------------

  /** Kind, status and current certificate of these devices (those that exist). */
  async devices(ex: Executor, ids: string[]): Promise<{ id: string; kind: string; status: string; currentSerial: Buffer | null }[]> {
    if (ids.length === 0) return [];
    const rows = (await ex('devices').select('id', 'kind', 'status', 'current_serial').whereRaw('id = any(?::text[])', [ids])) as Record<
      string,
      unknown
    >[];
    return rows.map((r) => ({
      id: r.id as string,
      kind: r.kind as string,
      status: r.status as string,
      currentSerial: r.current_serial == null ? null : Buffer.from(r.current_serial as Uint8Array),
    }));
  }

  /** Locks the devices' rows (in id order) until the transaction ends; returns their status. */
  async lockDevices(tx: Executor, ids: string[]): Promise<{ id: string; status: string; currentSerial: Buffer | null }[]> {
    if (ids.length === 0) return [];
    const rows = (await tx('devices')
      .select('id', 'status', 'current_serial')
      .whereRaw('id = any(?::text[])', [ids])
      .orderBy('id')
      .forUpdate()) as Record<string, unknown>[];
    return rows.map((r) => ({
      id: r.id as string,
      status: r.status as string,
      currentSerial: r.current_serial == null ? null : Buffer.from(r.current_serial as Uint8Array),
    }));
  }

  /** Of these certificates, the revoked ones (held included) that belong to a device, with their reason. */
  async revokedDeviceCertificates(ex: Executor, serials: Buffer[]): Promise<{ serial: Buffer; deviceId: string; reason: string }[]> {
    if (serials.length === 0) return [];
    const r = await ex.raw(
      `select serial, device_id, revocation_reason from certificates
        where serial = any(?::bytea[]) and status = 'revoked' and device_id is not null`,
      [serials],
    );
    return (r.rows as { serial: Uint8Array; device_id: string; revocation_reason: string }[]).map((x) => ({
      serial: Buffer.from(x.serial),
      deviceId: x.device_id,
      reason: x.revocation_reason,
    }));
  }

  async certificateStatus(ex: Executor, serial: Buffer): Promise<string | undefined> {
    const r = (await ex('certificates').select('status').where({ serial }).first()) as { status: string } | undefined;
    return r?.status;
  }

  // ---- key versions ------------------------------------------------------------------------

  /** The current version (superseded_at is null) of each series. */
  async current(ex: Executor, scope: SessionKeyScope, owners: string[]): Promise<SessionKeyMetaRow[]> {
    if (owners.length === 0) return [];
    const rows = (await ex('session_keys')
      .select(META)
      .where({ scope })
      .whereRaw('owner = any(?::text[])', [owners])
      .whereNull('superseded_at')) as Record<string, unknown>[];
    return rows.map(metaOf);
  }

  /**
   * Inserts the next version of each series in one statement: its number is one more than the
   * newest there is, and (scope, owner, version) is unique, so two writers can never make the same
   * version. The callers hold the series' owner lock, and have superseded the current version.
   */
  async insertNext(tx: Executor, rows: NextSessionKeyRow[]): Promise<SessionKeyMetaRow[]> {
    if (rows.length === 0) return [];
    const r = await tx.raw(
      `insert into session_keys (id, scope, owner, version, kek_id, wrapped_dek, ciphertext, origin, not_before, rotate_at, not_after, created_at)
       select r.id, r.scope, r.owner,
              coalesce((select max(k.version) from session_keys k where k.scope = r.scope and k.owner = r.owner), 0) + 1,
              r.kek_id, r.wrapped_dek, r.ciphertext, r.origin, r.not_before, r.rotate_at, r.not_after, r.created_at
         from unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::bytea[], ?::bytea[], ?::text[], ?::timestamptz[], ?::timestamptz[], ?::timestamptz[], ?::timestamptz[])
           as r(id, scope, owner, kek_id, wrapped_dek, ciphertext, origin, not_before, rotate_at, not_after, created_at)
       returning ${META.join(', ')}`,
      [
        rows.map((x) => x.id),
        rows.map((x) => x.scope),
        rows.map((x) => x.owner),
        rows.map((x) => x.kekId),
        rows.map((x) => x.wrappedDek),
        rows.map((x) => x.ciphertext),
        rows.map((x) => x.origin),
        rows.map((x) => x.notBefore),
        rows.map((x) => x.rotateAt),
        rows.map((x) => x.notAfter),
        rows.map((x) => x.createdAt),
      ],
    );
    return (r.rows as Record<string, unknown>[]).map(metaOf);
  }

  /**
   * Marks these versions superseded (only those still current: a concurrent rotation that got
   * there first wins). With `validUntil`, each one's not_after is cut to it (never extended).
   * Returns the versions it superseded.
   */
  async supersede(tx: Executor, ids: string[], at: Date, validUntil?: Date): Promise<SessionKeyMetaRow[]> {
    if (ids.length === 0) return [];
    const set: Record<string, unknown> = { superseded_at: at };
    if (validUntil) set.not_after = tx.raw('least(not_after, greatest(?::timestamptz, not_before))', [validUntil]);
    const rows = (await tx('session_keys')
      .whereRaw('id = any(?::text[])', [ids])
      .whereNull('superseded_at')
      .update(set)
      .returning(META)) as Record<string, unknown>[];
    return rows.map(metaOf);
  }

  /**
   * Revokes every version of these series that is still valid (or still current): revoked now,
   * with the reason, superseded, and valid no longer (not_after cut to now). Returns them.
   */
  async revokeValid(tx: Executor, scope: SessionKeyScope, owners: string[], at: Date, reason: string): Promise<SessionKeyMetaRow[]> {
    if (owners.length === 0) return [];
    const rows = (await tx('session_keys')
      .where({ scope })
      .whereRaw('owner = any(?::text[])', [owners])
      .whereNull('revoked_at')
      .andWhere((w) => w.where('not_after', '>', at).orWhereNull('superseded_at'))
      .update({
        revoked_at: at,
        reason,
        superseded_at: tx.raw('coalesce(superseded_at, ?::timestamptz)', [at]),
        not_after: tx.raw('least(not_after, greatest(?::timestamptz, not_before))', [at]),
      })
      .returning(META)) as Record<string, unknown>[];
    return rows.map(metaOf);
  }

  /**
   * Up to `limit` current versions of `scope` due at `now`, each with its series' owner row
   * locked (FOR UPDATE SKIP LOCKED: concurrent callers take disjoint sets and never wait). Device
   * series only of active devices; channel series with their channel's period and overlap.
   */
  async claimDue(
    tx: Executor,
    scope: SessionKeyScope,
    now: Date,
    limit: number,
  ): Promise<{ id: string; owner: string; periodSeconds: number | null; overlapSeconds: number | null }[]> {
    const sql =
      scope === 'channel'
        ? `select k.id, k.owner, c.period_seconds, c.overlap_seconds
             from session_keys k join channels c on c.name = k.owner
            where k.scope = 'channel' and k.superseded_at is null and k.rotate_at <= ?
            order by k.rotate_at limit ?
            for update of c skip locked`
        : `select k.id, k.owner, null as period_seconds, null as overlap_seconds
             from session_keys k join devices d on d.id = k.owner
            where k.scope = 'device' and k.superseded_at is null and k.rotate_at <= ? and d.status = 'active'
            order by k.rotate_at limit ?
            for update of d skip locked`;
    const r = await tx.raw(sql, [now, limit]);
    return (r.rows as Record<string, unknown>[]).map((x) => ({
      id: x.id as string,
      owner: x.owner as string,
      periodSeconds: x.period_seconds == null ? null : Number(x.period_seconds),
      overlapSeconds: x.overlap_seconds == null ? null : Number(x.overlap_seconds),
    }));
  }

  /** The versions valid at `at` (not revoked, not_before <= at < not_after) of a device's series and of these channels', with their sealed keys. */
  async validKeys(ex: Executor, deviceId: string, channels: string[], at: Date): Promise<SealedSessionKeyRow[]> {
    const rows = (await ex('session_keys')
      .select(SEALED)
      .where((w) => {
        w.where((d) => d.where('scope', 'device').andWhere('owner', deviceId));
        if (channels.length) w.orWhere((c) => c.where('scope', 'channel').whereRaw('owner = any(?::text[])', [channels]));
      })
      .whereNull('revoked_at')
      .andWhere('not_before', '<=', at)
      .andWhere('not_after', '>', at)
      .orderBy([{ column: 'scope', order: 'desc' }, 'owner', { column: 'version', order: 'desc' }])) as Record<string, unknown>[];
    return rows.map(sealedOf);
  }

  /** A series' versions, newest first, from before `beforeVersion`. */
  async listVersions(
    ex: Executor,
    scope: SessionKeyScope,
    owner: string,
    page: { beforeVersion?: number | undefined; limit: number },
  ): Promise<SessionKeyMetaRow[]> {
    const q = ex('session_keys').select(META).where({ scope, owner });
    if (page.beforeVersion !== undefined) q.where('version', '<', page.beforeVersion);
    const rows = (await q.orderBy('version', 'desc').limit(page.limit)) as Record<string, unknown>[];
    return rows.map(metaOf);
  }

  /** One version with its sealed key (tests and tools; the fetch reads validKeys). */
  async getSealed(ex: Executor, id: string): Promise<SealedSessionKeyRow | undefined> {
    const r = (await ex('session_keys').select(SEALED).where({ id }).first()) as Record<string, unknown> | undefined;
    return r ? sealedOf(r) : undefined;
  }
}
