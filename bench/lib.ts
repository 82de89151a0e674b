/**
 * Shared pieces of the benchmark harness (`npm run bench`, see bench/run.ts).
 *
 * A benchmark module exports
 *
 *   export const description = 'one short paragraph for docs/benchmarks.md';   // optional
 *   export async function run(): Promise<BenchResult[]>;
 *
 * and every result carries its own baseline, measured in the same run on the same machine,
 * so the ratio means something even where the absolute numbers do not travel.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

export interface BenchResult {
  /** What was measured, e.g. "node crypto.sign ECDSA P-256". */
  name: string;
  /** Unit of value and baselineValue, e.g. "signatures/s". */
  unit: string;
  value: number;
  /** The result this one is compared with (may be the result itself: ratio 1). */
  baselineName: string;
  baselineValue: number;
  /** value / baselineValue. */
  ratio: number;
  note?: string;
}

/** What a bench module looks like to bench/run.ts. */
export interface BenchModule {
  run(): Promise<BenchResult[]>;
  description?: string;
}

/** A single operation: sync, or async (a returned promise is awaited before the next call). */
export type Op = () => unknown;

/** `n` copies of an async op kept in flight at once; build it with {@link concurrently}. */
export interface Concurrent {
  readonly kind: 'concurrent';
  readonly inFlight: number;
  readonly op: Op;
}

/**
 * Keeps `n` calls of `op` in flight: each of `n` workers awaits its call and starts the next
 * at once (a pool, not batches, so one slow call does not stall the other n - 1).
 * Pass the result to {@link measureRate}; every completed call counts as one op.
 */
export function concurrently(n: number, op: Op): Concurrent {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`concurrently: n must be a positive integer, got ${n}`);
  return { kind: 'concurrent', inFlight: n, op };
}

export interface MeasureOptions {
  /** Length of the measured window, in seconds (default: BENCH_SECONDS or 2). */
  seconds?: number;
  /** Warm-up before the window, in seconds, not counted (default: 15% of seconds, at most 0.5). */
  warmupSeconds?: number;
}

/** Default window length: the BENCH_SECONDS environment variable, else 2 s. */
export function defaultSeconds(): number {
  const s = Number(process.env.BENCH_SECONDS);
  return Number.isFinite(s) && s > 0 ? s : 2;
}

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return typeof x === 'object' && x !== null && typeof (x as { then?: unknown }).then === 'function';
}

/** Runs one worker until `deadline` (a performance.now() value); returns completed calls. */
async function loop(op: Op, deadline: number): Promise<number> {
  let done = 0;
  while (performance.now() < deadline) {
    const r = op();
    if (isThenable(r)) await r;
    done++;
  }
  return done;
}

async function window(work: Op | Concurrent, seconds: number): Promise<{ ops: number; elapsed: number }> {
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let ops: number;
  if (typeof work === 'function') {
    ops = await loop(work, deadline);
  } else {
    const counts = await Promise.all(Array.from({ length: work.inFlight }, () => loop(work.op, deadline)));
    ops = counts.reduce((a, b) => a + b, 0);
  }
  // Calls started before the deadline finish after it: count them, and the time they took.
  return { ops, elapsed: (performance.now() - start) / 1000 };
}

/**
 * Operations per second of `work` (an op, or {@link concurrently}(n, op)), measured for about
 * `seconds` after a short warm-up. Errors thrown by the op propagate: a benchmark that fails
 * should fail the run, not report a rate.
 */
export async function measureRate(work: Op | Concurrent, options: MeasureOptions = {}): Promise<number> {
  const seconds = options.seconds ?? defaultSeconds();
  const warmup = options.warmupSeconds ?? Math.min(0.5, seconds * 0.15);
  if (warmup > 0) await window(work, warmup);
  const { ops, elapsed } = await window(work, seconds);
  if (ops === 0) throw new Error('measureRate: the operation never completed within the window');
  return ops / elapsed;
}

/** Builds a BenchResult, computing the ratio. */
export function result(name: string, unit: string, value: number, baseline: { name: string; value: number }, note?: string): BenchResult {
  return {
    name,
    unit,
    value,
    baselineName: baseline.name,
    baselineValue: baseline.value,
    ratio: value / baseline.value,
    ...(note === undefined ? {} : { note }),
  };
}

/** 12345.6 → "12,346"; 12.345 → "12.3"; 0.01234 → "0.0123". */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const abs = Math.abs(v);
  if (abs >= 100) return Math.round(v).toLocaleString('en-US');
  if (abs >= 1) return v.toFixed(1);
  return v.toPrecision(3);
}

/** 0.8512 → "0.85×". */
export function formatRatio(r: number): string {
  if (!Number.isFinite(r)) return String(r);
  return `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}×`;
}

/** The machine's idle and busy CPU ticks so far (all cores, Linux /proc/stat), or undefined elsewhere. */
export function machineTicks(): { idle: number; total: number } | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    return { idle: f[3]! + f[4]!, total: f.reduce((a, b) => a + b, 0) };
  } catch {
    return undefined;
  }
}

/** Busy CPU ticks (all cores; Linux USER_HZ, 100 a second) between two machineTicks() readings. */
export function busyTicksBetween(from: { idle: number; total: number }, to: { idle: number; total: number }): number {
  return to.total - to.idle - (from.total - from.idle);
}
