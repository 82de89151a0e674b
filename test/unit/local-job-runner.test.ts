import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LocalJobRunner } from '../../src/jobs/local-runner.js';
import type { QueueDefinition } from '../../src/jobs/runner.js';

const until = async (probe: () => boolean | Promise<boolean>, ms = 5000) => {
  const end = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('in-process job runner (the embedded default)', () => {
  it('retries a failing job with doubling delays, then keeps it as failed with its reason', async () => {
    const tries: number[] = [];
    const def: QueueDefinition = {
      name: 'q',
      concurrency: 1,
      attempts: 3,
      backoffMs: 20,
      process: async () => {
        tries.push(Date.now());
        throw new Error('broker away');
      },
    };
    const runner = new LocalJobRunner([def]);
    await runner.start();
    await runner.enqueue('q', [{ name: 'deliver', payload: { serials: ['ab'] } }]);
    await until(async () => (await runner.overview()).queues[0]!.counts.failed === 1);
    assert.equal(tries.length, 3);
    assert.ok(tries[1]! - tries[0]! >= 20 && tries[2]! - tries[1]! >= 40, `delays ${tries[1]! - tries[0]!}, ${tries[2]! - tries[1]!}`);
    const q = (await runner.overview()).queues[0]!;
    assert.deepEqual(
      [q.failed[0]!.name, q.failed[0]!.attempts, q.failed[0]!.failedReason, q.failed[0]!.state],
      ['deliver', 3, 'broker away', 'failed'],
    );
    assert.ok(await runner.drained('q'));
    await runner.close();
  });

  it('runs at most `concurrency` jobs at once, and a job that succeeds on a retry completes', async () => {
    let running = 0;
    let peak = 0;
    const seen = new Map<string, number>();
    const def: QueueDefinition = {
      name: 'q',
      concurrency: 2,
      attempts: 2,
      backoffMs: 5,
      process: async (_name, payload) => {
        running += 1;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 10));
        running -= 1;
        const id = String(payload.n);
        seen.set(id, (seen.get(id) ?? 0) + 1);
        if (id === '3' && seen.get(id) === 1) throw new Error('first try fails');
      },
    };
    const runner = new LocalJobRunner([def]);
    await runner.start();
    await runner.enqueue(
      'q',
      Array.from({ length: 6 }, (_, n) => ({ name: 'work', payload: { n } })),
    );
    await until(async () => (await runner.overview()).queues[0]!.counts.completed === 6);
    assert.equal(peak, 2);
    assert.equal(seen.get('3'), 2);
    assert.equal((await runner.overview()).queues[0]!.counts.failed, 0);
    await runner.close();
  });

  it('runs schedules at once and every period, and drops a tick while the last one still runs', async () => {
    let runs = 0;
    const def: QueueDefinition = {
      name: 'hk',
      concurrency: 4,
      attempts: 1,
      backoffMs: 1,
      schedules: [{ name: 'tick', everyMs: 30 }],
      process: async () => {
        runs += 1;
        await new Promise((r) => setTimeout(r, 100)); // longer than the period
      },
    };
    const runner = new LocalJobRunner([def]);
    await runner.start();
    await until(() => runs >= 1);
    await new Promise((r) => setTimeout(r, 100));
    const q = (await runner.overview()).queues[0]!;
    assert.ok(q.counts.waiting + q.counts.active <= 1, JSON.stringify(q.counts)); // a tick while one runs is dropped
    assert.deepEqual(q.schedules, [{ name: 'tick', everyMs: 30 }]);
    await runner.close();
    assert.ok(runs >= 1);
  });

  it('refuses a queue it does not have', async () => {
    const runner = new LocalJobRunner([]);
    await assert.rejects(runner.enqueue('nope', [{ name: 'x', payload: {} }]), /no job queue nope/);
  });
});
