import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AuditAnchorWriter, AuditCheckpoints, compareWithCheckpoints, type AuditCheckpoint } from '../../src/audit/audit-anchor.js';

const hashOf = (seq: number) => Buffer.alloc(32, seq);
const T0 = new Date('2026-12-01T00:00:00.000Z');
const at = (minutes: number) => new Date(T0.getTime() + minutes * 60_000);

describe('audit checkpoints', () => {
  const checkpoints = new AuditCheckpoints(randomBytes(32));
  const dir = mkdtempSync(join(tmpdir(), 'mqttca-anchor-unit-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('authenticate only under their own key, and every field is covered', () => {
    const c = checkpoints.sign({ seq: 7, hash: hashOf(7) }, T0);
    assert.deepEqual(checkpoints.authentic(JSON.parse(JSON.stringify(c))), c);
    for (const changed of [{ seq: 8 }, { head: hashOf(8).toString('hex') }, { at: at(1).toISOString() }, { mac: '0'.repeat(64) }]) {
      assert.equal(checkpoints.authentic({ ...c, ...changed }), undefined, JSON.stringify(changed));
    }
    assert.equal(new AuditCheckpoints(randomBytes(32)).authentic(c), undefined, 'another KEK');
    for (const junk of [null, 'x', { malformed: true }, { ...c, seq: -1 }, { ...c, head: 'zz' }])
      assert.equal(checkpoints.authentic(junk), undefined);
  });

  it('the writer gathers appends into one write, never moves the file back, and logs each checkpoint it writes', async () => {
    const path = join(dir, 'audit-anchor');
    const written: AuditCheckpoint[] = [];
    const errors: unknown[] = [];
    const w = new AuditAnchorWriter(checkpoints, {
      path,
      batchMs: 60_000,
      now: () => T0,
      onCheckpoint: (c) => written.push(c),
      onError: (e) => errors.push(e),
    });
    w.startAt({ seq: 2, hash: hashOf(2) });
    w.committed({ seq: 3, hash: hashOf(3) });
    w.committed({ seq: 5, hash: hashOf(5) });
    w.committed({ seq: 4, hash: hashOf(4) }); // another transaction's commit heard late
    await w.flush();
    assert.deepEqual(
      written.map((c) => c.seq),
      [5],
    );
    assert.equal((JSON.parse(readFileSync(path, 'utf8')) as AuditCheckpoint).seq, 5);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    await w.flush();
    w.committed({ seq: 1, hash: hashOf(1) });
    await w.flush();
    assert.deepEqual(
      written.map((c) => c.seq),
      [5],
      'nothing older, nothing twice',
    );
    assert.deepEqual(errors, []);
  });

  describe('compared with a chain', () => {
    const chain = new Map(Array.from({ length: 10 }, (_, i) => [i + 1, hashOf(i + 1).toString('hex')]));
    const hashAt = async (seq: number) => chain.get(seq);
    const head = { seq: 10, hash: chain.get(10)! };
    const file = (value: unknown) => ({ source: 'anchor file', value });
    const problems = async (fileValue: unknown, others: unknown[] = [], chainHead = head) =>
      (
        await compareWithCheckpoints(
          checkpoints,
          chainHead,
          hashAt,
          file(fileValue),
          others.map((value, i) => ({ source: `other ${i}`, value })),
        )
      ).findings.map((f) => `${f.source}: ${f.problem}`);

    it('an anchor at the head: nothing to report', async () => {
      assert.deepEqual(await problems(checkpoints.sign({ seq: 10, hash: hashOf(10) }, at(5))), []);
    });
    it('an anchor behind the head is not a finding: the newest entries are counted as unanchored', async () => {
      const r = await compareWithCheckpoints(checkpoints, head, hashAt, file(checkpoints.sign({ seq: 8, hash: hashOf(8) }, at(5))), []);
      assert.deepEqual(r.findings, []);
      assert.equal(r.unanchored, 2);
    });
    it('an anchor past the head: the tail is missing', async () => {
      assert.deepEqual(await problems(checkpoints.sign({ seq: 12, hash: hashOf(12) }, at(5))), ['anchor file: tail-missing']);
    });
    it('an anchor whose entry has another hash: the chain was rewritten', async () => {
      assert.deepEqual(await problems(checkpoints.sign({ seq: 9, hash: hashOf(99) }, at(5))), ['anchor file: forked']);
    });
    it('no anchor file, or a forged one', async () => {
      assert.deepEqual(await problems(undefined), ['anchor file: missing']);
      assert.deepEqual(await problems({ seq: 10, head: chain.get(10), at: at(5).toISOString(), mac: '1'.repeat(64) }), [
        'anchor file: forged',
      ]);
    });
    it('an anchor file older than another checkpoint that is further on: rolled back (and that one shows the missing tail)', async () => {
      const fileValue = checkpoints.sign({ seq: 10, hash: hashOf(10) }, at(5));
      const later = checkpoints.sign({ seq: 14, hash: hashOf(14) }, at(9));
      assert.deepEqual((await problems(fileValue, [later])).sort(), ['anchor file: rolled-back', 'other 0: tail-missing']);
      const earlier = checkpoints.sign({ seq: 6, hash: hashOf(6) }, at(1));
      assert.deepEqual(await problems(fileValue, [earlier]), [], 'an older backup is consistent');
    });
  });
});
