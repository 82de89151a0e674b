import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import { AuditLog, type AuditEntryInput } from '../../src/audit/audit-log.js';
import { ManualClock } from '../../src/shared/clock.js';
import { AuditStore } from '../../src/store/audit-store.js';
import type { Db } from '../../src/store/db.js';
import { dbTargets, disposeDb } from '../helpers/db.js';

const entry = (i: number, over: Partial<AuditEntryInput> = {}): AuditEntryInput => ({
  actor: `user-${i % 3}`,
  action: i % 2 === 0 ? 'thing.created' : 'thing.updated',
  targetType: 'thing',
  targetId: `t${i}`,
  requestId: `req-${i}`,
  details: { i, nested: { z: 1, a: [1, 'two', null, { y: true, b: 0.5 }] } },
  ...over,
});

for (const target of dbTargets) {
  describe(`audit log on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    let audit: AuditLog;
    let clock: ManualClock;
    const chainKey = randomBytes(32);

    before(async () => {
      db = await target.create();
      clock = new ManualClock(new Date('2026-03-01T10:00:00.123Z'));
      audit = new AuditLog(new AuditStore(db), chainKey, clock);
    });
    after(async () => {
      if (db) await disposeDb(db);
    });

    /** Tampering as someone with database access would do it: with the append-only trigger off. */
    async function tamper(sql: string, bindings: readonly unknown[] = []): Promise<void> {
      await db.transaction(async (trx) => {
        await trx.raw('alter table audit_log disable trigger audit_log_no_update');
        await trx.raw(sql, bindings as never);
        await trx.raw('alter table audit_log enable trigger audit_log_no_update');
      });
    }

    /** Runs a tamper test on a fresh log of n entries (the table is emptied first, triggers off). */
    async function freshLog(n: number): Promise<void> {
      await db.transaction(async (trx) => {
        await trx.raw('alter table audit_log disable trigger audit_log_no_update');
        await trx.raw('delete from audit_log');
        await trx.raw('alter table audit_log enable trigger audit_log_no_update');
      });
      await db.transaction((trx) =>
        audit.append(
          trx,
          Array.from({ length: n }, (_, i) => entry(i + 1)),
        ),
      );
      assert.deepEqual(await audit.verify(db), { ok: true, entries: n, head: await headOf() });
    }

    async function headOf(): Promise<{ seq: number; hash: string } | null> {
      const r = await db('audit_log').select('seq', 'hash').orderBy('seq', 'desc').first();
      return r ? { seq: Number(r.seq), hash: Buffer.from(r.hash as Uint8Array).toString('hex') } : null;
    }

    async function seqs(): Promise<number[]> {
      const rows = await db('audit_log').select('seq').orderBy('seq', 'asc');
      return rows.map((r: { seq: unknown }) => Number(r.seq));
    }

    describe('appending', () => {
      it('an empty log verifies', async () => {
        assert.deepEqual(await audit.verify(db), { ok: true, entries: 0, head: null });
        assert.deepEqual(await audit.list({ limit: 10 }), { items: [], nextCursor: null });
      });

      it('keeps one valid chain across several transactions', async () => {
        for (let t = 0; t < 4; t++) {
          clock.advance(1000);
          await db.transaction((trx) => audit.append(trx, [entry(t * 3 + 1), entry(t * 3 + 2), entry(t * 3 + 3)]));
        }
        const r = await audit.verify(db);
        assert.equal(r.ok, true);
        assert.equal(r.entries, 12);
        assert.deepEqual(
          await seqs(),
          Array.from({ length: 12 }, (_, i) => i + 1),
        );

        const { items } = await audit.list({ limit: 100 });
        assert.equal(items.length, 12);
        const oldest = items[items.length - 1]!;
        assert.equal(oldest.seq, 1);
        assert.equal(oldest.prevHash, '00'.repeat(32));
        for (let i = 0; i < items.length - 1; i++) assert.equal(items[i]!.prevHash, items[i + 1]!.hash);
        assert.equal(oldest.at, '2026-03-01T10:00:01.123Z');
        assert.equal(oldest.actor, 'user-1');
        assert.equal(oldest.requestId, 'req-1');
        assert.deepEqual(oldest.details, { i: 1, nested: { z: 1, a: [1, 'two', null, { y: true, b: 0.5 }] } });
        assert.match(oldest.hash, /^[0-9a-f]{64}$/);
      });

      it('given the root knex instead of a transaction, opens one itself', async () => {
        await audit.append(db, [entry(100, { requestId: undefined, details: undefined })]);
        const { items } = await audit.list({ limit: 1 });
        assert.equal(items[0]!.requestId, null);
        assert.deepEqual(items[0]!.details, {});
        assert.equal((await audit.verify(db)).ok, true);
      });

      it('stores details as JSON: undefined dropped, Dates as strings, key order irrelevant', async () => {
        await db.transaction((trx) =>
          audit.append(trx, [entry(101, { details: { b: 2, a: undefined, when: new Date('2026-01-02T03:04:05Z'), c: { y: 1, x: 2 } } })]),
        );
        const { items } = await audit.list({ limit: 1 });
        assert.deepEqual(items[0]!.details, { b: 2, when: '2026-01-02T03:04:05.000Z', c: { x: 2, y: 1 } });
        assert.equal((await audit.verify(db)).ok, true);
      });

      it('a rolled-back transaction leaves no entry, and the chain continues after it', async () => {
        const before = await seqs();
        await assert.rejects(
          db.transaction(async (trx) => {
            await audit.append(trx, [entry(200), entry(201)]);
            throw new Error('injected failure after the audit append');
          }),
          /injected failure/,
        );
        assert.deepEqual(await seqs(), before);
        await db.transaction((trx) => audit.append(trx, [entry(202)]));
        const after = await seqs();
        assert.equal(after.length, before.length + 1);
        assert.equal(after[after.length - 1], before.length + 1);
        assert.equal((await audit.verify(db)).ok, true);
      });

      it('concurrent appends from parallel transactions still make one consecutive, valid chain', async () => {
        const start = (await seqs()).length;
        const writers = 16;
        await Promise.all(
          Array.from({ length: writers }, (_, w) =>
            db.transaction(async (trx) => {
              // Some work in the transaction before and after the append, as a real service does.
              await trx.raw('select 1');
              await audit.append(trx, [entry(1000 + w * 10), entry(1001 + w * 10), entry(1002 + w * 10)]);
              await trx.raw('select 1');
            }),
          ),
        );
        const all = await seqs();
        assert.equal(all.length, start + writers * 3);
        assert.deepEqual(
          all,
          Array.from({ length: all.length }, (_, i) => i + 1),
        );
        // each transaction's entries are contiguous
        const { items } = await audit.list({ limit: writers * 3 });
        const byTarget = new Map(items.map((e) => [e.targetId, e.seq]));
        for (let w = 0; w < writers; w++) {
          const a = byTarget.get(`t${1000 + w * 10}`)!;
          assert.equal(byTarget.get(`t${1001 + w * 10}`), a + 1);
          assert.equal(byTarget.get(`t${1002 + w * 10}`), a + 2);
        }
        assert.equal((await audit.verify(db)).ok, true);
      });

      it('appends a batch of thousands in one call, and verify pages over it', async () => {
        const start = (await seqs()).length;
        const n = 6000;
        await db.transaction((trx) =>
          audit.append(
            trx,
            Array.from({ length: n }, (_, i) => entry(10_000 + i)),
          ),
        );
        const r = await audit.verify(db);
        assert.equal(r.ok, true);
        assert.equal(r.entries, start + n);
        // a small page size crosses many page boundaries and must agree
        assert.deepEqual(await audit.verify(db, { pageSize: 7 }), r);
      });
    });

    describe('the append-only trigger', () => {
      it('refuses a plain UPDATE, DELETE and TRUNCATE', async () => {
        await db.transaction((trx) => audit.append(trx, [entry(1)]));
        await assert.rejects(db.raw(`update audit_log set actor = 'mallory' where seq = 1`), /append-only/);
        await assert.rejects(db.raw('delete from audit_log where seq = 1'), /append-only/);
        await assert.rejects(db.raw('truncate audit_log'), /append-only/);
        assert.ok((await seqs()).includes(1));
      });
    });

    describe('verify detects tampering and names the first bad entry', () => {
      beforeEach(async () => {
        await freshLog(10);
      });

      it('an edited details column', async () => {
        await tamper(`update audit_log set details = '{"i": 999}'::jsonb where seq = 4`);
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.equal(r.entries, 3);
        assert.equal(r.firstBad.seq, 4);
        assert.equal(r.firstBad.problem, 'altered');
      });

      it('an edited actor (later entries edited too: the first is named)', async () => {
        await tamper(`update audit_log set actor = 'mallory' where seq in (6, 8)`);
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [6, 'altered']);
      });

      it('an edited entry whose hash was recomputed without the chain key', async () => {
        // An attacker who edits the row and recomputes a plain SHA-256 (or an HMAC under a guessed key)
        const fake = createHash('sha256').update('forged').digest();
        await tamper(`update audit_log set actor = 'mallory', hash = ? where seq = 2`, [fake]);
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [2, 'altered']);
      });

      it('an edited prev_hash', async () => {
        await tamper(`update audit_log set prev_hash = ? where seq = 5`, [randomBytes(32)]);
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [5, 'altered']);
      });

      it('an edited timestamp', async () => {
        await tamper(`update audit_log set at = at - interval '1 hour' where seq = 10`);
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [10, 'altered']);
      });

      it('a deleted row', async () => {
        await tamper('delete from audit_log where seq = 5');
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.equal(r.entries, 4);
        assert.equal(r.firstBad.seq, 5);
        assert.equal(r.firstBad.problem, 'removed');
      });

      it('a deleted first row', async () => {
        await tamper('delete from audit_log where seq = 1');
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [1, 'removed']);
      });

      it('deleted rows with the later rows renumbered to close the gap', async () => {
        await tamper('delete from audit_log where seq in (3, 4)');
        await tamper('update audit_log set seq = seq + 1000 where seq > 4');
        await tamper('update audit_log set seq = seq - 1002 where seq > 1000');
        assert.deepEqual(await seqs(), [1, 2, 3, 4, 5, 6, 7, 8]);
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [3, 'removed']);
      });

      it('two rows reordered by swapping their seq numbers', async () => {
        await tamper('update audit_log set seq = 1000 where seq = 4');
        await tamper('update audit_log set seq = 4 where seq = 7');
        await tamper('update audit_log set seq = 7 where seq = 1000');
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.equal(r.entries, 3);
        assert.equal(r.firstBad.seq, 4);
        assert.equal(r.firstBad.problem, 'reordered');
      });

      it('two adjacent rows reordered by swapping their whole contents', async () => {
        await swapContents(['at', 'actor', 'action', 'target_type', 'target_id', 'request_id', 'details', 'prev_hash', 'hash'], 6, 7);
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [6, 'reordered']);
      });

      it('two rows reordered by swapping their data but not their hash columns', async () => {
        await swapContents(['at', 'actor', 'action', 'target_type', 'target_id', 'request_id', 'details'], 2, 3);
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [2, 'reordered']);
      });

      it('a forged row inserted in the middle, later rows renumbered', async () => {
        await tamper('update audit_log set seq = seq + 1000 where seq >= 5');
        await tamper('update audit_log set seq = seq - 999 where seq > 1000');
        const prev = await db('audit_log').select('hash').where({ seq: 4 }).first();
        await tamper(
          `insert into audit_log (seq, at, actor, action, target_type, target_id, request_id, details, prev_hash, hash)
           values (5, now(), 'mallory', 'thing.deleted', 'thing', 'x', null, '{}'::jsonb, ?, ?)`,
          [Buffer.from(prev.hash as Uint8Array), randomBytes(32)],
        );
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [5, 'inserted']);
      });

      it('a forged row appended at the end', async () => {
        const prev = await db('audit_log').select('hash').where({ seq: 10 }).first();
        await db.raw(
          `insert into audit_log (seq, at, actor, action, target_type, target_id, request_id, details, prev_hash, hash)
           values (11, now(), 'mallory', 'thing.deleted', 'thing', 'x', null, '{}'::jsonb, ?, ?)`,
          [Buffer.from(prev.hash as Uint8Array), randomBytes(32)],
        );
        const r = await audit.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.equal(r.firstBad.seq, 11);
      });

      it('a log made under another chain key does not verify', async () => {
        const other = new AuditLog(new AuditStore(db), randomBytes(32), clock);
        const r = await other.verify(db);
        assert.equal(r.ok, false);
        if (r.ok) return;
        assert.deepEqual([r.firstBad.seq, r.firstBad.problem], [1, 'altered']);
      });

      async function swapContents(cols: string[], a: number, b: number): Promise<void> {
        const set = cols.map((c) => `${c} = o.${c}`).join(', ');
        await tamper(
          `update audit_log t set ${set}
             from audit_log o
            where (t.seq, o.seq) in ((?::bigint, ?::bigint), (?::bigint, ?::bigint))`,
          [a, b, b, a],
        );
      }
    });

    describe('listing', () => {
      before(async () => {
        await freshLog(0);
        const batch: AuditEntryInput[] = [];
        for (let i = 1; i <= 25; i++) {
          batch.push({
            actor: i % 5 === 0 ? 'api-key:ak_admin' : 'system',
            action: i % 2 === 0 ? 'certificate.issued' : 'certificate.revoked',
            targetType: i <= 20 ? 'certificate' : 'ca',
            targetId: i <= 20 ? `serial${i % 4}` : 'ca_1',
            details: { i },
          });
        }
        // five transactions at five times, five entries each
        for (let t = 0; t < 5; t++) {
          clock.set(new Date(Date.UTC(2026, 3, 1 + t)));
          await db.transaction((trx) => audit.append(trx, batch.slice(t * 5, t * 5 + 5)));
        }
      });

      async function all(q: Omit<Parameters<AuditLog['list']>[0], 'cursor'>): Promise<number[]> {
        const out: number[] = [];
        let cursor: string | undefined;
        for (let pages = 0; pages < 100; pages++) {
          const page = await audit.list({ ...q, cursor });
          assert.ok(page.items.length <= q.limit);
          out.push(...page.items.map((e) => e.seq));
          if (page.nextCursor === null) return out;
          cursor = page.nextCursor;
        }
        throw new Error('too many pages');
      }

      it('pages newest first with a cursor, with no overlap and no gap', async () => {
        const first = await audit.list({ limit: 10 });
        assert.deepEqual(
          first.items.map((e) => e.seq),
          [25, 24, 23, 22, 21, 20, 19, 18, 17, 16],
        );
        assert.equal(typeof first.nextCursor, 'string');
        assert.deepEqual(
          await all({ limit: 10 }),
          Array.from({ length: 25 }, (_, i) => 25 - i),
        );
        assert.deepEqual(
          await all({ limit: 1 }),
          Array.from({ length: 25 }, (_, i) => 25 - i),
        );
        assert.deepEqual(
          await all({ limit: 25 }),
          Array.from({ length: 25 }, (_, i) => 25 - i),
        );
        const exact = await audit.list({ limit: 25 });
        assert.equal(exact.nextCursor, null);
      });

      it('filters by action, actor, target and time, and pages within a filter', async () => {
        assert.deepEqual(await all({ limit: 3, action: 'certificate.issued' }), [24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2]);
        assert.deepEqual(await all({ limit: 2, actor: 'api-key:ak_admin' }), [25, 20, 15, 10, 5]);
        assert.deepEqual(await all({ limit: 2, targetType: 'certificate', targetId: 'serial1' }), [17, 13, 9, 5, 1]);
        assert.deepEqual(await all({ limit: 100, targetType: 'ca' }), [25, 24, 23, 22, 21]);
        assert.deepEqual(
          await all({ limit: 4, since: new Date('2026-04-02T00:00:00Z'), until: new Date('2026-04-04T00:00:00Z') }),
          [15, 14, 13, 12, 11, 10, 9, 8, 7, 6],
        );
        assert.deepEqual(await all({ limit: 4, action: 'certificate.revoked', targetType: 'ca', actor: 'system' }), [23, 21]);
        assert.deepEqual(await all({ limit: 4, action: 'nothing' }), []);
      });

      it('refuses a bad cursor or limit', async () => {
        await assert.rejects(audit.list({ limit: 10, cursor: 'not a cursor' }), { name: 'DomainError', kind: 'BadRequest' });
        await assert.rejects(audit.list({ limit: 10, cursor: Buffer.from('-1').toString('base64url') }), { kind: 'BadRequest' });
        await assert.rejects(audit.list({ limit: 0 }), { kind: 'BadRequest' });
        await assert.rejects(audit.list({ limit: 1001 }), { kind: 'BadRequest' });
        await assert.rejects(audit.list({ limit: 1.5 }), { kind: 'BadRequest' });
        await assert.rejects(audit.list({ limit: 10, since: new Date('nonsense') }), { kind: 'BadRequest' });
      });
    });
  });
}
