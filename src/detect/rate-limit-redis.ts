import { Redis } from 'ioredis';
import { MemoryRateLimiter, RedisRateLimiter, type RateLimiter } from './rate-limits.js';

/** How often a broken rate-limit Redis connection is reported at most. */
const COMPLAIN_EVERY_MS = 60_000;

/**
 * The rate limiter: shared by every replica through Redis when there is a REDIS_URL (each process
 * falls back to its own buckets while Redis is away), else per process. `close` drops the connection.
 */
export function rateLimiterFor(
  redisUrl: string | undefined,
  prefix: string,
  warn: (e: unknown, message: string) => void,
): { limiter: RateLimiter; close(): void } {
  if (!redisUrl) return { limiter: new MemoryRateLimiter(), close: () => undefined };
  const redis = new Redis(redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 250 });
  let complained = 0;
  redis.on('error', (e: unknown) => {
    if (Date.now() - complained < COMPLAIN_EVERY_MS) return;
    complained = Date.now();
    warn(e, 'rate-limit Redis connection error: limits hold per process until it is back');
  });
  const limiter = new RedisRateLimiter(redis, prefix, new MemoryRateLimiter(), (e) =>
    warn(e, 'rate limits: Redis did not answer; limiting per process'),
  );
  return { limiter, close: () => redis.disconnect() };
}
