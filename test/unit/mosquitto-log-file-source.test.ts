// MosquittoLogFileSource's reads: bounded per look, and a backlog read look after look at once
// rather than one budget per pollMs (a connect storm written faster than one budget a poll).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BusEvent } from '../../src/broker/bus-events.js';
import { MosquittoLogFileSource } from '../../src/broker/mosquitto-log-file-source.js';

const cycle = (i: number, t: number) =>
  [
    `${t}: New connection from 10.0.${i >> 8}.${i & 255}:4${String(i).padStart(4, '0')} on port 8883.`,
    `${t}: New client connected from 10.0.${i >> 8}.${i & 255}:4${String(i).padStart(4, '0')} as dev-${i} (p5, c1, k60, u'dev-${i}').`,
    `${t}: No will message specified.`,
    `${t}: Sending CONNACK to dev-${i} (0, 0)`,
    `${t}: Received DISCONNECT from dev-${i}`,
    `${t}: Client dev-${i} disconnected.`,
  ].join('\n') + '\n';

describe('MosquittoLogFileSource reads', () => {
  it('a backlog of many read budgets: each look reads one budget at most, and the next follows at once, not after pollMs', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'mqttca-logfile-')), 'mosquitto.log');
    writeFileSync(path, '');
    const budget = 4096;
    // pollMs of an hour: only a look brought forward by the backlog can read past the first budget within the test.
    const source = new MosquittoLogFileSource({ broker: 'lab', path, pollMs: 3_600_000, maxReadBytes: budget });
    const events: BusEvent[] = [];
    await source.start((e) => events.push(e));
    try {
      const clients = 300;
      const text = Array.from({ length: clients }, (_, i) => cycle(i, 1_796_668_587 + Math.floor(i / 100))).join('');
      assert.ok(text.length > 20 * budget, 'the backlog spans many budgets');
      appendFileSync(path, text);

      await source.poll();
      const firstLook = events.length;
      assert.ok(firstLook > 0, 'the first look read lines');
      assert.ok(
        firstLook < 2 * Math.ceil(budget / (text.length / clients)) + 2,
        `one budget's lines at most in one look: ${firstLook} events`,
      );

      const deadline = Date.now() + 20_000;
      while (events.length < 2 * clients && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(events.filter((e) => e.kind === 'connect').length, clients, 'every connect of the backlog read');
      assert.equal(events.filter((e) => e.kind === 'disconnect').length, clients, 'every disconnect of the backlog read');
      assert.deepEqual(
        events.filter((e) => e.kind === 'connect').map((e) => (e.kind === 'connect' ? e.username : '')),
        Array.from({ length: clients }, (_, i) => `dev-${i}`),
        "in the file's order",
      );

      // Once caught up, the source waits for pollMs again: lines appended now are not read before a look.
      appendFileSync(path, cycle(clients, 1_796_668_600));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(events.length, 2 * clients, 'no look without a backlog before pollMs');
      await source.poll();
      assert.equal(events.length, 2 * clients + 2);
    } finally {
      await source.stop();
    }
  });
});
