import type { Redis } from 'ioredis';
import type { Limit, RateScope } from '../shared/rate-limit-settings.js';
import { NO_TELEMETRY, type Telemetry } from '../shared/telemetry.js';

/** Whether one more request fits, and if not, how long until it would. */
export interface Admission {
  allowed: boolean;
  retryAfterSeconds: number;
}

export interface RateLimiter {
  take(bucket: string, limit: Limit): Promise<Admission>;
}

/** Buckets kept in memory at most; beyond it, the ones already back to full are dropped. */
const MEMORY_BUCKETS_MAX = 100_000;

/**
 * GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp per bucket): each
 * request moves the bucket's "theoretical arrival time" one interval on; a request that would
 * put it more than a burst ahead of now is refused. In memory, per process.
 */
export class MemoryRateLimiter implements RateLimiter {
  private readonly tat = new Map<string, number>();

  constructor(private readonly now: () => number = () => performance.timeOrigin + performance.now()) {}

  async take(bucket: string, limit: Limit): Promise<Admission> {
    return this.takeNow(bucket, limit);
  }

  takeNow(bucket: string, limit: Limit): Admission {
    const now = this.now();
    const interval = 1000 / limit.perSecond;
    const next = Math.max(this.tat.get(bucket) ?? now, now) + interval;
    const ahead = next - now - limit.burst * interval;
    if (ahead > 0) return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(ahead / 1000)) };
    this.tat.set(bucket, next);
    if (this.tat.size > MEMORY_BUCKETS_MAX) for (const [k, t] of this.tat) if (t <= now) this.tat.delete(k);
    return { allowed: true, retryAfterSeconds: 0 };
  }
}

/** The same algorithm in one Redis script, on Redis's own clock: every process shares the buckets. */
const GCRA_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local nxt = tat + interval
local ahead = nxt - now - capacity
if ahead > 0 then return {0, math.ceil(ahead / 1000)} end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil(capacity / 1000) + 1000)
return {1, 0}
`;

type GcraRedis = Redis & { mqttcaGcra(key: string, intervalUs: number, capacityUs: number): Promise<[number, number]> };

/**
 * Buckets shared by every replica through Redis. When Redis does not answer, each process falls
 * back to its own buckets (the limits still hold per process) and says so, at most once a minute.
 */
export class RedisRateLimiter implements RateLimiter {
  private readonly redis: GcraRedis;
  private lastComplaint = 0;

  constructor(
    redis: Redis,
    private readonly prefix: string,
    private readonly fallback: RateLimiter,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {
    redis.defineCommand('mqttcaGcra', { numberOfKeys: 1, lua: GCRA_LUA });
    this.redis = redis as GcraRedis;
  }

  async take(bucket: string, limit: Limit): Promise<Admission> {
    const interval = 1_000_000 / limit.perSecond;
    try {
      const [allowed, waitMs] = await this.redis.mqttcaGcra(`${this.prefix}:rate:${bucket}`, interval, interval * limit.burst);
      return allowed === 1
        ? { allowed: true, retryAfterSeconds: 0 }
        : { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(Number(waitMs) / 1000)) };
    } catch (e) {
      if (Date.now() - this.lastComplaint > 60_000) {
        this.lastComplaint = Date.now();
        this.onError(e);
      }
      return this.fallback.take(bucket, limit);
    }
  }
}

/**
 * The service's rate limits: per source address and per API key on the API, per source address
 * on enrollment. A scope without a limit (0 in the configuration) admits everything.
 */
export class RateLimits {
  constructor(
    private readonly limiter: RateLimiter,
    private readonly limits: Record<RateScope, Limit | undefined>,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {}

  /** Seconds to wait, or 0 when the request may go on. */
  async check(scope: RateScope, key: string): Promise<number> {
    const limit = this.limits[scope];
    if (!limit) return 0;
    const a = await this.limiter.take(`${scope}:${key}`, limit);
    if (a.allowed) return 0;
    this.telemetry.rateLimited(scope);
    return a.retryAfterSeconds;
  }
}
