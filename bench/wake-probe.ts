/**
 * How much CPU this machine lets a wake-heavy load use, with no service in it: worker threads
 * that pass tokens to one another (each turn: ~300 µs of work, then wake another thread through
 * a futex, as the service's event loop wakes PostgreSQL's backends and its verify workers), beside
 * the same threads spinning without ever sleeping. On an ordinary SMP kernel both use all cores
 * but a few per cent; where the scheduler leaves a core idle while a woken thread waits (this VM,
 * with its vCPU packing), the first uses less, and so does every service that works this way.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { busyTicksBetween, machineTicks } from './lib.js';

const THREADS = 4;
const WORK_US = 300;

// Plain JavaScript in the worker: `tokens[i]` counts the turns thread i holds; a thread with none sleeps on it.
const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { tokens, i, threads, workUs, spin } = workerData;
const a = new Int32Array(tokens);
for (;;) {
  if (!spin) {
    while (Atomics.load(a, i) === 0) Atomics.wait(a, i, 0, 50);
    Atomics.sub(a, i, 1);
  }
  const end = process.hrtime.bigint() + BigInt(workUs * 1000);
  while (process.hrtime.bigint() < end);
  if (!spin) {
    const j = (i + 1 + Math.floor(Math.random() * (threads - 1))) % threads;
    Atomics.add(a, j, 1);
    Atomics.notify(a, j);
  }
}
`;

/**
 * Cores kept busy (the whole machine's, from /proc/stat) over `seconds` by THREADS worker threads:
 * spinning, or passing `runnable` tokens (at most that many threads have work at once).
 */
export async function coresBusy(o: { spin: true } | { spin: false; runnable: number }, seconds: number): Promise<number | undefined> {
  const tokens = new SharedArrayBuffer(4 * THREADS);
  if (!o.spin) new Int32Array(tokens).fill(1, 0, o.runnable);
  const workers = Array.from(
    { length: THREADS },
    (_, i) => new Worker(WORKER_SOURCE, { eval: true, workerData: { tokens, i, threads: THREADS, workUs: WORK_US, spin: o.spin } }),
  );
  try {
    await new Promise((r) => setTimeout(r, 500)); // the threads started and running
    const t0 = process.hrtime.bigint();
    const m0 = machineTicks();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const m1 = machineTicks();
    const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    return m0 && m1 ? busyTicksBetween(m0, m1) / 100 / elapsed : undefined;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

export const MACHINE_CORES = availableParallelism();
export const PROBE_SHAPE = `${THREADS} worker threads, ~${WORK_US} µs of work a turn`;
