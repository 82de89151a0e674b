import type { Executor } from './db.js';

export interface NewConsoleSessionRow {
  idHash: Buffer;
  apiKeyId: string;
  role: string;
  createdAt: Date;
  expiresAt: Date;
}

/** A session as authentication reads it, with its key (a revoked or re-roled key's sessions are not returned). */
export interface ConsoleSessionRecord {
  apiKeyId: string;
  keyName: string;
  role: string;
  createdAt: Date;
  lastSeenAt: Date;
  expiresAt: Date;
}

/** SQL for console_sessions. Rows are found by the SHA-256 of the session id, never by the id. */
export class ConsoleSessionStore {
  async insert(db: Executor, row: NewConsoleSessionRow): Promise<void> {
    await db('console_sessions').insert({
      id_hash: row.idHash,
      api_key_id: row.apiKeyId,
      role: row.role,
      created_at: row.createdAt,
      last_seen_at: row.createdAt,
      expires_at: row.expiresAt,
    });
  }

  /** The session and its key, while the key is active and still has the session's role. */
  async find(db: Executor, idHash: Buffer): Promise<ConsoleSessionRecord | undefined> {
    const r = await db('console_sessions as s')
      .join('api_keys as k', 'k.id', 's.api_key_id')
      .select('s.api_key_id', 'k.name', 's.role', 's.created_at', 's.last_seen_at', 's.expires_at')
      .where('s.id_hash', idHash)
      .whereNull('k.revoked_at')
      .whereRaw('k.role = s.role')
      .first();
    if (!r) return undefined;
    return {
      apiKeyId: r.api_key_id as string,
      keyName: r.name as string,
      role: r.role as string,
      createdAt: new Date(r.created_at as string | Date),
      lastSeenAt: new Date(r.last_seen_at as string | Date),
      expiresAt: new Date(r.expires_at as string | Date),
    };
  }

  /** Moves last_seen_at forward (only forward: concurrent requests never move it back). */
  async touch(db: Executor, idHash: Buffer, at: Date): Promise<void> {
    await db('console_sessions').where('id_hash', idHash).where('last_seen_at', '<', at).update({ last_seen_at: at });
  }

  /** Deletes one session; its API key id when there was one. */
  async delete(db: Executor, idHash: Buffer): Promise<{ apiKeyId: string; role: string } | undefined> {
    const [r] = await db('console_sessions').where('id_hash', idHash).delete().returning(['api_key_id', 'role']);
    return r ? { apiKeyId: r.api_key_id as string, role: r.role as string } : undefined;
  }

  /** Deletes the sessions of these keys (a revoked key's); how many. */
  async deleteForKeys(db: Executor, apiKeyIds: string[]): Promise<number> {
    if (apiKeyIds.length === 0) return 0;
    return db('console_sessions').whereIn('api_key_id', apiKeyIds).delete();
  }

  /** Deletes sessions past their absolute expiry or idle since before `idleBefore`; how many. */
  async deleteExpired(db: Executor, now: Date, idleBefore: Date): Promise<number> {
    return db('console_sessions').where('expires_at', '<=', now).orWhere('last_seen_at', '<=', idleBefore).delete();
  }
}
