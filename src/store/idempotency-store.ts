import type { Executor } from './db.js';

export type IdempotencyRecord =
  | { state: 'in-progress'; requestHash: Buffer; method: string | null; route: string | null; claimedAt: Date }
  | { state: 'done'; requestHash: Buffer; method: string | null; route: string | null; statusCode: number; response: unknown };

/** What a claim records of the request beside its hash: the API's method and route (null for enrollment's keys). */
export interface ClaimedRequest {
  requestHash: Buffer;
  method?: string | undefined;
  route?: string | undefined;
}

export class IdempotencyStore {
  /**
   * Claims (scope, key) for a new request; returns the existing record when someone already did.
   * A claim made before `expiredBefore` is gone: it is deleted, and the key claimed anew.
   */
  async claim(
    db: Executor,
    scope: string,
    key: string,
    request: ClaimedRequest,
    now: Date,
    expiredBefore?: Date,
  ): Promise<IdempotencyRecord | undefined> {
    if (expiredBefore) await db('idempotency_keys').where({ scope, key }).andWhere('created_at', '<', expiredBefore).delete();
    const inserted = await db.raw(
      `insert into idempotency_keys (scope, key, request_hash, method, route, state, created_at) values (?, ?, ?, ?, ?, 'in-progress', ?)
       on conflict do nothing returning scope`,
      [scope, key, request.requestHash, request.method ?? null, request.route ?? null, now],
    );
    if (inserted.rows.length === 1) return undefined;
    const r = await db('idempotency_keys')
      .select('request_hash', 'method', 'route', 'state', 'status_code', 'response', 'created_at')
      .where({ scope, key })
      .first();
    if (!r) return undefined; // released between the two statements: treat as new next time
    const requestHashStored = Buffer.from(r.request_hash as Uint8Array);
    const method = (r.method as string | null) ?? null;
    const route = (r.route as string | null) ?? null;
    if (r.state === 'in-progress')
      return { state: 'in-progress', requestHash: requestHashStored, method, route, claimedAt: new Date(r.created_at as string) };
    return {
      state: 'done',
      requestHash: requestHashStored,
      method,
      route,
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

  /** Deletes the claims made before `before`: all of them, or only the API's (`apiOnly`: those with a route). */
  async purgeBefore(db: Executor, before: Date, opts: { apiOnly?: boolean } = {}): Promise<number> {
    const q = db('idempotency_keys').where('created_at', '<', before);
    if (opts.apiOnly) q.whereNotNull('route');
    return q.delete();
  }
}
