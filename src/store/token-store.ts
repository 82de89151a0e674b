import { prepared, type Executor } from './db.js';

export interface DeviceFacts {
  kind: 'client' | 'broker';
  lot: string | null;
  status: string;
}

export interface TokenRow {
  id: string;
  secretHash: Buffer;
  name: string | null;
  deviceId: string | null;
  lot: string | null;
  profile: string;
  allowedNames: { dnsNames: string[]; ipAddresses: string[] } | null;
  maxUses: number;
  uses: number;
  expiresAt: Date;
  createdAt: Date;
  createdBy: string;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

const COLUMNS = [
  'id',
  'secret_hash',
  'name',
  'device_id',
  'lot',
  'profile',
  'allowed_names',
  'max_uses',
  'uses',
  'expires_at',
  'created_at',
  'created_by',
  'revoked_at',
  'last_used_at',
];

const dateOrNull = (v: unknown) => (v == null ? null : new Date(v as string));

function fromRow(r: Record<string, unknown>): TokenRow {
  return {
    id: r.id as string,
    secretHash: Buffer.from(r.secret_hash as Uint8Array),
    name: (r.name as string | null) ?? null,
    deviceId: (r.device_id as string | null) ?? null,
    lot: (r.lot as string | null) ?? null,
    profile: r.profile as string,
    allowedNames: (typeof r.allowed_names === 'string' ? JSON.parse(r.allowed_names) : r.allowed_names) as TokenRow['allowedNames'],
    maxUses: Number(r.max_uses),
    uses: Number(r.uses),
    expiresAt: new Date(r.expires_at as string),
    createdAt: new Date(r.created_at as string),
    createdBy: r.created_by as string,
    revokedAt: dateOrNull(r.revoked_at),
    lastUsedAt: dateOrNull(r.last_used_at),
  };
}

export class TokenStore {
  async insert(db: Executor, t: TokenRow): Promise<void> {
    await db('enrollment_tokens').insert({
      id: t.id,
      secret_hash: t.secretHash,
      name: t.name,
      device_id: t.deviceId,
      lot: t.lot,
      profile: t.profile,
      allowed_names: t.allowedNames ? JSON.stringify(t.allowedNames) : null,
      max_uses: t.maxUses,
      uses: t.uses,
      expires_at: t.expiresAt,
      created_at: t.createdAt,
      created_by: t.createdBy,
    });
  }

  async get(db: Executor, id: string): Promise<TokenRow | undefined> {
    const r = await db('enrollment_tokens').select(COLUMNS).where({ id }).first();
    return r ? fromRow(r) : undefined;
  }

  /**
   * The token and, in the same round trip, the facts of the device it is being used for: its own
   * device, or for a lot token the device the request names.
   */
  async getWithDevice(
    db: Executor,
    id: string,
    namedDeviceId: string | undefined,
  ): Promise<{ token: TokenRow; device: DeviceFacts | undefined } | undefined> {
    const r = await db('enrollment_tokens as t')
      .select(COLUMNS.map((c) => `t.${c}`))
      .select({ d_id: 'd.id', d_kind: 'd.kind', d_lot: 'd.lot', d_status: 'd.status' })
      .leftJoin('devices as d', 'd.id', db.raw('coalesce(t.device_id, ?::text)', [namedDeviceId ?? null]))
      .where('t.id', id)
      .first();
    if (!r) return undefined;
    return {
      token: fromRow(r),
      device: r.d_id ? { kind: r.d_kind, lot: r.d_lot ?? null, status: r.d_status } : undefined,
    };
  }

  async list(
    db: Executor,
    q: { deviceId?: string | undefined; lot?: string | undefined; before?: { createdAt: Date; id: string } | undefined; limit: number },
  ): Promise<TokenRow[]> {
    const query = db('enrollment_tokens').select(COLUMNS);
    if (q.deviceId) query.where('device_id', q.deviceId);
    if (q.lot) query.where('lot', q.lot);
    if (q.before) query.whereRaw('(created_at, id) < (?, ?)', [q.before.createdAt, q.before.id]);
    return (
      await query
        .orderBy([
          { column: 'created_at', order: 'desc' },
          { column: 'id', order: 'desc' },
        ])
        .limit(q.limit)
    ).map(fromRow);
  }

  /**
   * Spends one use per (token, device) pair, for a whole batch in one statement. A pair is
   * granted when the token is live with uses left, the device is in the inventory (in the
   * token's lot, for a lot token) and allowed to enroll, and the device has not spent this token
   * before; a token with fewer uses left than it is asked for grants the earliest pairs. Returns,
   * per pair, the device's status as the statement saw it when granted, or null when refused. The token rows are locked (in id order, so two batches
   * cannot deadlock) and their uses re-read after the lock, so concurrent batches never overspend;
   * the uses table's primary key decides a race of one device with itself. The statement is the
   * function token_spend (migration 0018), so that its plan keeps to the indexes.
   */
  async consumeMany(db: Executor, pairs: { tokenId: string; deviceId: string }[], now: Date): Promise<(string | null)[]> {
    // A lot token's row is hot: every device of the lot updates it, so its lock must not be held
    // through a WAL flush. `set_config(..., true)` turns off the wait for this statement's own
    // transaction only. That is safe: the certificate this use pays for is recorded by a later,
    // synchronous commit, and WAL is flushed in order, so once that certificate is durable so is
    // this use; if the process dies before, no certificate exists and the lost use costs nothing.
    const r = await prepared(
      db,
      'token-spend-batch',
      `with async_commit as materialized (select set_config('synchronous_commit', 'off', true) as v)
       select s.token_id, s.device_id, s.status from async_commit, token_spend(?::text[], ?::text[], ?::timestamptz) s`,
      [pairs.map((p) => p.tokenId), pairs.map((p) => p.deviceId), now],
    );
    const granted = new Map(
      (r.rows as { token_id: string; device_id: string; status: string }[]).map((g) => [`${g.token_id}\n${g.device_id}`, g.status]),
    );
    return pairs.map((p) => granted.get(`${p.tokenId}\n${p.deviceId}`) ?? null);
  }

  /** Why consumeMany() refused a pair, for the error message (the refused path may take more queries). */
  async refusalFacts(
    db: Executor,
    id: string,
    deviceId: string,
  ): Promise<{ token: TokenRow | undefined; device: DeviceFacts | undefined; usedAt: Date | undefined }> {
    const found = await this.getWithDevice(db, id, deviceId);
    const used = await db('enrollment_token_uses').select('used_at').where({ token_id: id, device_id: deviceId }).first();
    return { token: found?.token, device: found?.device, usedAt: used ? new Date(used.used_at as string) : undefined };
  }

  /** Gives a use back when issuance failed after the token was spent (only the use made at `usedAt`, when given). */
  async refund(db: Executor, id: string, deviceId: string, usedAt?: Date): Promise<void> {
    await db.raw(
      `with gone as (delete from enrollment_token_uses where token_id = ? and device_id = ? and (?::timestamptz is null or used_at = ?) returning token_id)
       update enrollment_tokens set uses = uses - 1 where id in (select token_id from gone) and uses > 0`,
      [id, deviceId, usedAt ?? null, usedAt ?? null],
    );
  }

  /** Revokes every unrevoked token bound to the device; returns their ids. */
  async revokeForDevice(db: Executor, deviceId: string, at: Date): Promise<string[]> {
    const rows = await db('enrollment_tokens')
      .where({ device_id: deviceId })
      .whereNull('revoked_at')
      .update({ revoked_at: at })
      .returning(['id']);
    return rows.map((r: { id: string }) => r.id);
  }

  /** Live tokens (not revoked, not expired) for any of these devices or lots. */
  async liveFor(
    db: Executor,
    t: { deviceIds: string[]; lots: string[] },
    now: Date,
  ): Promise<{ id: string; deviceId: string | null; lot: string | null }[]> {
    if (t.deviceIds.length + t.lots.length === 0) return [];
    const rows = await db('enrollment_tokens')
      .select('id', 'device_id', 'lot')
      .whereNull('revoked_at')
      .where('expires_at', '>', now)
      .where((w) => {
        w.whereRaw('device_id = any(?::text[])', [t.deviceIds]);
        w.orWhereRaw('lot = any(?::text[])', [t.lots]);
      })
      .orderBy('id');
    return rows.map((r: { id: string; device_id: string | null; lot: string | null }) => ({ id: r.id, deviceId: r.device_id, lot: r.lot }));
  }

  /** Revokes the tokens of `ids` that are not revoked yet; returns those it revoked. */
  async revokeIds(db: Executor, ids: string[], at: Date): Promise<string[]> {
    if (ids.length === 0) return [];
    const rows = await db('enrollment_tokens')
      .whereRaw('id = any(?::text[])', [ids])
      .whereNull('revoked_at')
      .update({ revoked_at: at })
      .returning(['id']);
    return rows.map((r: { id: string }) => r.id);
  }

  async revoke(db: Executor, id: string, at: Date): Promise<boolean> {
    const n = await db('enrollment_tokens').where({ id }).whereNull('revoked_at').update({ revoked_at: at });
    return n > 0;
  }
}
