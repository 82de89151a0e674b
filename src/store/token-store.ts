import type { Executor } from './db.js';

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
  'id', 'secret_hash', 'name', 'device_id', 'lot', 'profile', 'allowed_names', 'max_uses', 'uses', 'expires_at',
  'created_at', 'created_by', 'revoked_at', 'last_used_at',
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

  async list(db: Executor, q: { deviceId?: string | undefined; lot?: string | undefined; before?: { createdAt: Date; id: string } | undefined; limit: number }): Promise<TokenRow[]> {
    const query = db('enrollment_tokens').select(COLUMNS);
    if (q.deviceId) query.where('device_id', q.deviceId);
    if (q.lot) query.where('lot', q.lot);
    if (q.before) query.whereRaw('(created_at, id) < (?, ?)', [q.before.createdAt, q.before.id]);
    return (await query.orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).limit(q.limit)).map(fromRow);
  }

  /**
   * Spends one use for a device in one statement: the token must be live and not used up, and a
   * device can spend a token only once (the uses table's primary key decides a race). Returns
   * false when any of that fails. (Two racing requests of one device may count one use too many
   * on a multi-use token; they never issue twice, and a single-use token is never overspent.)
   */
  async consume(db: Executor, id: string, deviceId: string, now: Date): Promise<boolean> {
    const r = await db.raw(
      `with spend as (
         update enrollment_tokens set uses = uses + 1, last_used_at = ?
          where id = ? and revoked_at is null and expires_at > ? and uses < max_uses
            and not exists (select 1 from enrollment_token_uses where token_id = ? and device_id = ?)
          returning id)
       insert into enrollment_token_uses (token_id, device_id, used_at)
       select id, ?, ? from spend
       on conflict do nothing
       returning token_id`,
      [now, id, now, id, deviceId, deviceId, now],
    );
    return r.rows.length === 1;
  }

  /** Gives a use back when issuance failed after the token was spent. */
  async refund(db: Executor, id: string, deviceId: string): Promise<void> {
    await db.raw(
      `with gone as (delete from enrollment_token_uses where token_id = ? and device_id = ? returning token_id)
       update enrollment_tokens set uses = uses - 1 where id in (select token_id from gone) and uses > 0`,
      [id, deviceId],
    );
  }

  async revoke(db: Executor, id: string, at: Date): Promise<boolean> {
    const n = await db('enrollment_tokens').where({ id }).whereNull('revoked_at').update({ revoked_at: at });
    return n > 0;
  }
}
