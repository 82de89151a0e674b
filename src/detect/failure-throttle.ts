import type { Clock } from '../shared/clock.js';

interface Entry {
  failures: number[];
  blockedUntil: number;
  blocks: number;
}

/**
 * Slows a source that keeps failing to authenticate: after `threshold` failures within `windowMs`
 * it is refused (429 with Retry-After) for a period that doubles with each block, up to `maxBlockMs`.
 * In memory, per process: each replica throttles what it sees.
 */
export class FailureThrottle {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly clock: Clock,
    private readonly threshold = 10,
    private readonly windowMs = 60_000,
    private readonly baseBlockMs = 10_000,
    private readonly maxBlockMs = 600_000,
  ) {}

  /** Seconds the source must wait, or 0 when it may try. */
  retryAfter(source: string): number {
    const e = this.entries.get(source);
    if (!e) return 0;
    const wait = e.blockedUntil - this.clock.now().getTime();
    return wait > 0 ? Math.ceil(wait / 1000) : 0;
  }

  /** Records a failure; returns true when this failure started a block. */
  fail(source: string): boolean {
    const now = this.clock.now().getTime();
    const e = this.entries.get(source) ?? { failures: [], blockedUntil: 0, blocks: 0 };
    e.failures = e.failures.filter((t) => now - t < this.windowMs);
    e.failures.push(now);
    this.entries.set(source, e);
    if (this.entries.size > 100_000) this.prune(now);
    if (e.failures.length >= this.threshold && e.blockedUntil <= now) {
      e.blockedUntil = now + Math.min(this.baseBlockMs * 2 ** e.blocks, this.maxBlockMs);
      e.blocks++;
      e.failures = [];
      return true;
    }
    return false;
  }

  succeed(source: string): void {
    this.entries.delete(source);
  }

  private prune(now: number): void {
    for (const [k, e] of this.entries) if (e.blockedUntil < now && e.failures.every((t) => now - t >= this.windowMs)) this.entries.delete(k);
  }
}
