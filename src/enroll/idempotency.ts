import { createHash } from 'node:crypto';
import type { Db } from '../store/db.js';
import type { IdempotencyStore } from '../store/idempotency-store.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, badRequest } from '../shared/errors.js';

const KEY_RE = /^[\x21-\x7e]{1,255}$/;

/** An Idempotency-Key as the draft (draft-ietf-httpapi-idempotency-key-header) and this service take it: 1 to 255 printable ASCII characters. */
export function checkIdempotencyKey(key: string): void {
  if (!KEY_RE.test(key)) throw badRequest('Idempotency-Key must be 1 to 255 printable characters');
}

/** When something begun and unfinished is taken to have died with its process (AbandonedAttempts). */
export interface Lease {
  isAbandoned(begunAt: Date): boolean;
  secondsLeft(begunAt: Date): number;
}

/**
 * The API's lease: a request still in flight after `leaseMs` is taken for one whose process died,
 * and a repeat runs it; until then a repeat is told to come back in a second (the usual request
 * is done by then), not when the lease ends.
 */
export function inFlightLease(clock: Clock, leaseMs: number): Lease {
  return {
    isAbandoned: (at) => clock.now().getTime() - at.getTime() >= leaseMs,
    secondsLeft: () => 1,
  };
}

/** What a run records beside the request's hash, and how long its key lives. */
export interface RunOptions<T> {
  /** The API request's method and route, recorded with the key: the key reused on another route is refused as with another body. */
  method?: string | undefined;
  route?: string | undefined;
  /** A key claimed longer ago than this has expired: it is forgotten and the request runs as a first one. */
  ttlMs?: number | undefined;
  /** What is kept of the response (a replay gets this form): the response without its shown-once secrets. The response itself by default. */
  keep?: ((response: T) => T) | undefined;
}

/**
 * Idempotency-Key handling: the first request with a key runs and its response is kept; a retry
 * with the same key and the same request gets that response again (never a second certificate);
 * the same key with a different request is refused; a retry while the first still runs is told to
 * wait. A claim unfinished past its `lease` belongs to a process that died mid-request: a retry
 * takes it over, and `recover` finds what that attempt recorded (its answer, lost with the
 * process) or settles what it left, before the request runs as a first one.
 *
 * Enrollment (scope: the token and device, or the certificate renewing) and the API's
 * state-changing routes (scope: the API key; src/http/idempotent-routes.ts) share it; the API's
 * runs also record method and route, expire after IDEMPOTENCY_KEY_TTL_HOURS, and keep a response
 * without its secrets.
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
    statusCode: number | ((response: T) => number),
    work: () => Promise<T>,
    recover?: (claimedAt: Date) => Promise<T | undefined>,
    opts: RunOptions<T> = {},
  ): Promise<{ response: T; replayed: boolean }> {
    if (key === undefined) return { response: await work(), replayed: false };
    checkIdempotencyKey(key);
    const hash = createHash('sha256').update(request).digest();
    const now = this.clock.now();
    const expiredBefore = opts.ttlMs === undefined ? undefined : new Date(now.getTime() - opts.ttlMs);
    const existing = await this.store.claim(
      this.db,
      scope,
      key,
      { requestHash: hash, method: opts.method, route: opts.route },
      now,
      expiredBefore,
    );
    const statusOf = (r: T) => (typeof statusCode === 'number' ? statusCode : statusCode(r));
    const keep = opts.keep ?? ((r: T) => r);
    if (existing) {
      if ((existing.method ?? undefined) !== opts.method || (existing.route ?? undefined) !== opts.route) {
        throw new DomainError('PolicyViolation', 'this Idempotency-Key was used with a request to another route');
      }
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
        await this.store.complete(this.db, scope, key, statusOf(recorded), keep(recorded));
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
    await this.store.complete(this.db, scope, key, statusOf(response), keep(response));
    return { response, replayed: false };
  }

  /** Forgets the API's keys claimed more than `ttlMs` ago (enrollment's are kept: their scope is a one-time credential). */
  purgeApiKeys(ttlMs: number): Promise<number> {
    return this.store.purgeBefore(this.db, new Date(this.clock.now().getTime() - ttlMs), { apiOnly: true });
  }
}
