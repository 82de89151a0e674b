import type { Executor } from './db.js';

/** An API key without its secret hash: what lists show. */
export interface ApiKeyRecord {
  id: string;
  name: string;
  role: string;
  createdBy: string;
  /** The API key that created this one; null when bootstrap, the CLI or the environment did. */
  createdByKey: string | null;
  createdAt: Date;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

/** The row authentication needs; the only read that returns the secret hash. */
export interface ApiKeyCredential {
  id: string;
  name: string;
  role: string;
  secretHash: Buffer;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

export interface NewApiKeyRow {
  id: string;
  name: string;
  role: string;
  secretHash: Buffer;
  createdBy: string;
  createdByKey: string | null;
  createdAt: Date;
}

const RECORD_COLUMNS = ['id', 'name', 'role', 'created_by', 'created_by_key', 'created_at', 'revoked_at', 'last_used_at'];

const dateOrNull = (v: unknown): Date | null => (v == null ? null : new Date(v as string | Date));

function toRecord(r: Record<string, unknown>): ApiKeyRecord {
  return {
    id: r.id as string,
    name: r.name as string,
    role: r.role as string,
    createdBy: r.created_by as string,
    createdByKey: (r.created_by_key as string | null) ?? null,
    createdAt: new Date(r.created_at as string | Date),
    revokedAt: dateOrNull(r.revoked_at),
    lastUsedAt: dateOrNull(r.last_used_at),
  };
}

/** SQL for api_keys. */
export class ApiKeyStore {
  /** Inserts the key unless one with this id exists; true when inserted. */
  async insert(db: Executor, row: NewApiKeyRow): Promise<boolean> {
    const inserted = await db('api_keys')
      .insert({
        id: row.id,
        name: row.name,
        role: row.role,
        secret_hash: row.secretHash,
        created_by: row.createdBy,
        created_by_key: row.createdByKey,
        created_at: row.createdAt,
      })
      .onConflict('id')
      .ignore()
      .returning('id');
    return inserted.length === 1;
  }

  async credential(db: Executor, id: string): Promise<ApiKeyCredential | undefined> {
    const r = await db('api_keys').select('id', 'name', 'role', 'secret_hash', 'revoked_at', 'last_used_at').where({ id }).first();
    if (!r) return undefined;
    return {
      id: r.id,
      name: r.name,
      role: r.role,
      secretHash: Buffer.from(r.secret_hash as Uint8Array),
      revokedAt: dateOrNull(r.revoked_at),
      lastUsedAt: dateOrNull(r.last_used_at),
    };
  }

  /** The record, locked against concurrent change until `tx` ends. */
  async getForUpdate(tx: Executor, id: string): Promise<ApiKeyRecord | undefined> {
    const r = await tx('api_keys').select(RECORD_COLUMNS).where({ id }).forUpdate().first();
    return r ? toRecord(r) : undefined;
  }

  /**
   * The ids of the active admin keys, locked until `tx` ends (in id order, so two revocations lock
   * alike): revocations of admin keys are serialized here, and the last one is never revoked.
   */
  async lockActiveAdmins(tx: Executor): Promise<string[]> {
    const rows = await tx('api_keys').select('id').where({ role: 'admin' }).whereNull('revoked_at').orderBy('id').forUpdate();
    return rows.map((r: { id: string }) => r.id);
  }

  /** When the key was created, and the keys that created it, nearest first (its creator, that one's creator, ...). */
  async lineage(db: Executor, id: string): Promise<{ createdAt: Date; ancestors: string[] } | undefined> {
    const rows = (await db.raw(
      `with recursive chain(id, created_by_key, created_at, depth) as (
         select id, created_by_key, created_at, 0 from api_keys where id = ?
         union all
         select k.id, k.created_by_key, k.created_at, c.depth + 1 from api_keys k join chain c on k.id = c.created_by_key where c.depth < 1000
       )
       select id, created_at, depth from chain order by depth`,
      [id],
    )) as { rows: { id: string; created_at: string | Date; depth: number }[] };
    const [self, ...ancestors] = rows.rows;
    if (!self) return undefined;
    return { createdAt: new Date(self.created_at), ancestors: ancestors.map((r) => r.id) };
  }

  async list(db: Executor): Promise<ApiKeyRecord[]> {
    const rows = await db('api_keys')
      .select(RECORD_COLUMNS)
      .orderBy([
        { column: 'created_at', order: 'asc' },
        { column: 'id', order: 'asc' },
      ]);
    return rows.map(toRecord);
  }

  /** Sets revoked_at unless already set; true when this call revoked it. */
  async revoke(db: Executor, id: string, at: Date): Promise<boolean> {
    const n = await db('api_keys').where({ id }).whereNull('revoked_at').update({ revoked_at: at });
    return Number(n) === 1;
  }

  /** Sets last_used_at = at unless it is already later than `staleBefore` (so at most one write per interval). */
  async touch(db: Executor, id: string, at: Date, staleBefore: Date): Promise<void> {
    await db('api_keys')
      .where({ id })
      .andWhere((w) => w.whereNull('last_used_at').orWhere('last_used_at', '<', staleBefore))
      .update({ last_used_at: at });
  }
}
