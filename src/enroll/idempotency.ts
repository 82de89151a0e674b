import { createHash } from 'node:crypto';
import type { Db } from '../store/db.js';
import type { IdempotencyStore } from '../store/idempotency-store.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, badRequest } from '../shared/errors.js';

const KEY_RE = /^[\x21-\x7e]{1,255}$/;

/** When something begun and unfinished is taken to have died with its process (AbandonedAttempts). */
export interface Lease {
  isAbandoned(begunAt: Date): boolean;
  secondsLeft(begunAt: Date): number;
}

/**
 * Idempotency-Key handling: the first request with a key runs and its response is kept; a retry
 * with the same key and the same request gets that response again (never a second certificate);
 * the same key with a different request is refused; a retry while the first still runs is told to
 * wait. A claim unfinished past its `lease` belongs to a process that died mid-request: a retry
 * takes it over, and `recover` finds what that attempt recorded (its answer, lost with the
 * process) or settles what it left, before the request runs as a first one.
 */
export class Idempotency {
  constructor(
    private readonly db: Db,
    private readonly store: IdempotencyStore,
    private readonly clock: Clock,
    private readonly lease: Lease,
  ) {}

  async run<T>(
    scope: string,
    key: string | undefined,
    request: Uint8Array | string,
    statusCode: number,
    work: () => Promise<T>,
    recover?: (claimedAt: Date) => Promise<T | undefined>,
  ): Promise<{ response: T; replayed: boolean }> {
    if (key === undefined) return { response: await work(), replayed: false };
    if (!KEY_RE.test(key)) throw badRequest('Idempotency-Key must be 1 to 255 printable characters');
    const hash = createHash('sha256').update(request).digest();
    const now = this.clock.now();
    const existing = await this.store.claim(this.db, scope, key, hash, now);
    if (existing) {
      if (!existing.requestHash.equals(hash)) {
        throw new DomainError('PolicyViolation', 'this Idempotency-Key was used with a different request');
      }
      if (existing.state === 'done') return { response: existing.response as T, replayed: true };
      if (
        !recover ||
        !this.lease.isAbandoned(existing.claimedAt) ||
        !(await this.store.takeOver(this.db, scope, key, existing.claimedAt, now))
      ) {
        throw new DomainError('Conflict', 'a request with this Idempotency-Key is still in progress; retry shortly', {
          retryAfterSeconds: this.lease.secondsLeft(existing.claimedAt),
        });
      }
      const recorded = await recover(existing.claimedAt);
      if (recorded !== undefined) {
        await this.store.complete(this.db, scope, key, statusCode, recorded);
        return { response: recorded, replayed: true };
      }
    }
    let response: T;
    try {
      response = await work();
    } catch (e) {
      await this.store.release(this.db, scope, key).catch(() => undefined);
      throw e;
    }
    await this.store.complete(this.db, scope, key, statusCode, response);
    return { response, replayed: false };
  }
}
