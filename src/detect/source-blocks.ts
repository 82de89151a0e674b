import type { Clock } from '../shared/clock.js';

interface Block {
  until: number;
  /** Blocks so far: each one lasts twice the one before, up to the maximum. */
  count: number;
}

/** Sources blocked by the failing-source response: how long is left, and when a block ends. */
export interface SourceGuard {
  /** Seconds the source must wait, or 0 when it may try. */
  retryAfter(source: string): number;
  /** The source got something right: its next block starts short again. */
  succeeded(source: string): void;
}

/**
 * Sources (client addresses) refused for a time after repeated failures: enrollment and the API
 * answer them 429 with Retry-After. Each block of a source lasts twice the one before it (from
 * `baseMs` up to `maxMs`) until the source succeeds. In memory, per process: each replica blocks
 * what it sees.
 */
export class SourceBlocks implements SourceGuard {
  private readonly blocks = new Map<string, Block>();

  constructor(
    private readonly clock: Clock,
    private readonly baseMs = 10_000,
    private readonly maxMs = 600_000,
  ) {}

  retryAfter(source: string): number {
    const b = this.blocks.get(source);
    if (!b) return 0;
    const wait = b.until - this.clock.now().getTime();
    return wait > 0 ? Math.ceil(wait / 1000) : 0;
  }

  /** Blocks the source; returns the block's length in seconds. */
  block(source: string): number {
    const now = this.clock.now().getTime();
    const b = this.blocks.get(source) ?? { until: 0, count: 0 };
    const ms = Math.min(this.baseMs * 2 ** b.count, this.maxMs);
    b.until = now + ms;
    b.count++;
    this.blocks.set(source, b);
    if (this.blocks.size > 100_000) this.prune(now);
    return Math.ceil(ms / 1000);
  }

  succeeded(source: string): void {
    // The common case by far: a source that was never blocked costs one lookup.
    const b = this.blocks.get(source);
    if (b && b.until <= this.clock.now().getTime()) this.blocks.delete(source);
  }

  private prune(now: number): void {
    for (const [k, b] of this.blocks) if (b.until + this.maxMs < now) this.blocks.delete(k);
  }
}
