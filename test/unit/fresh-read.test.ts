import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FreshRead } from '../../src/shared/single-flight.js';

describe('FreshRead', () => {
  it('gives each caller a read that began after its call, shared with everyone who asked meanwhile', async () => {
    let value = 0;
    const started: number[] = [];
    const gates: (() => void)[] = [];
    const read = new FreshRead(() => {
      started.push(value);
      const seen = value;
      return new Promise<number>((r) => gates.push(() => r(seen)));
    });
    const first = read.get();
    value = 1; // changes after the first read began: later callers must not get that read
    const second = read.get();
    const third = read.get();
    assert.equal(started.length, 1, 'one read in the air; the later callers wait for the next');
    gates.shift()!();
    assert.equal(await first, 0);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(started, [0, 1], 'the next read began once the first ended, and only one for both waiting callers');
    gates.shift()!();
    assert.equal(await second, 1);
    assert.equal(await third, 1);
  });

  it('starts over after a failed read', async () => {
    let n = 0;
    const read = new FreshRead(async () => {
      n++;
      if (n === 1) throw new Error('down');
      return n;
    });
    await assert.rejects(read.get(), /down/);
    assert.equal(await read.get(), 2);
  });
});
