import type { Executor } from './db.js';

export type IdempotencyRecord =
  | { state: 'in-progress'; requestHash: Buffer; claimedAt: Date }
  | { state: 'done'; requestHash: Buffer; statusCode: number; response: unknown };

export class IdempotencyStore {
  /** Claims (scope, key) for a new request; returns the existing record when someone already did. */
  async claim(db: Executor, scope: string, key: string, requestHash: Buffer, now: Date): Promise<IdempotencyRecord | undefined> {
    const inserted = await db.raw(
      `insert into idempotency_keys (scope, key, request_hash, state, created_at) values (?, ?, ?, 'in-progress', ?)
       on conflict do nothing returning scope`,
      [scope, key, requestHash, now],
    );
    if (inserted.rows.length === 1) return undefined;
    const r = await db('idempotency_keys')
      .select('request_hash', 'state', 'status_code', 'response', 'created_at')
      .where({ scope, key })
      .first();
    if (!r) return undefined; // released between the two statements: treat as new next time
    const requestHashStored = Buffer.from(r.request_hash as Uint8Array);
    if (r.state === 'in-progress')
      return { state: 'in-progress', requestHash: requestHashStored, claimedAt: new Date(r.created_at as string) };
    return {
      state: 'done',
      requestHash: requestHashStored,
      statusCode: Number(r.status_code),
      response: typeof r.response === 'string' ? JSON.parse(r.response) : r.response,
    };
  }

  /** Takes over an in-progress claim made at `claimedAt` (its process died): true for the one caller that wins it. */
  async takeOver(db: Executor, scope: string, key: string, claimedAt: Date, now: Date): Promise<boolean> {
    const n = await db('idempotency_keys').where({ scope, key, state: 'in-progress', created_at: claimedAt }).update({ created_at: now });
    return n === 1;
  }

  async complete(db: Executor, scope: string, key: string, statusCode: number, response: unknown): Promise<void> {
    await db('idempotency_keys')
      .where({ scope, key })
      .update({ state: 'done', status_code: statusCode, response: JSON.stringify(response) });
  }

  async release(db: Executor, scope: string, key: string): Promise<void> {
    await db('idempotency_keys').where({ scope, key, state: 'in-progress' }).delete();
  }

  async purgeBefore(db: Executor, before: Date): Promise<number> {
    return db('idempotency_keys').where('created_at', '<', before).delete();
  }
}
