import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AuditLog } from '../../src/audit/audit-log.js';
import { deriveKey, parseKek } from '../../src/ca/kek.js';
import { Backups, restoreBackup } from '../../src/respond/backups.js';
import { ManualClock } from '../../src/shared/clock.js';
import { AuditStore } from '../../src/store/audit-store.js';
import { BackupStore } from '../../src/store/backup-store.js';
import type { Db } from '../../src/store/db.js';
import { dbTargets, disposeDb } from '../helpers/db.js';

const store = new BackupStore();
const kek = parseKek(randomBytes(32).toString('base64'), 'test');
const auditOf = (db: Db, clock: ManualClock) => new AuditLog(new AuditStore(db), deriveKey(kek, 'audit chain'), clock);

async function dump(db: Db) {
  const out: Record<string, unknown[]> = {};
  for (const t of await store.tables(db)) out[t.name] = await store.page(db, t, null, 1_000_000);
  return out;
}

for (const target of dbTargets) {
  describe(`backup store on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    let dir: string;
    const clock = new ManualClock(new Date('2026-12-01T10:00:00.000Z'));
    before(async () => {
      db = await target.create();
      dir = mkdtempSync(join(tmpdir(), 'mqttca-bstore-'));
      // More rows than a page, keyed by a bigint sequence (text order is not numeric order);
      // a CA whose parent's id sorts after its own; values that only text round-trips exactly.
      await db.raw(
        `insert into security_events (at, kind, severity, details)
         select timestamptz '2026-01-02 03:04:05.123456+00' + make_interval(secs => g), 'probe', 'info', jsonb_build_object('g', g, 's', '☃ "q"')
           from generate_series(1, 4321) g`,
      );
      const ca = (id: string, parent: string | null) => ({
        id,
        name: id,
        parent_id: parent,
        kind: parent ? 'intermediate' : 'root',
        status: 'active',
        key_algorithm: 'ec-p256',
        signer_ref: `software:${id}`,
        subject_der: Buffer.from([0x30, 0x00]),
        key_id: randomBytes(20),
        created_at: clock.now(),
      });
      await db('cas').insert([ca('ca_zz_root', null), ca('ca_aa_child', 'ca_zz_root')]);
      await db('settings').insert({
        key: 'odd',
        value: JSON.stringify({ big: 9007199254740991, nested: [1, null, 'é\n'] }),
        updated_at: '2026-01-01 00:00:00.000001+00',
      });
      await db.raw(
        `insert into rotation_policies (scope, name, renew_at_fraction, notify, created_at, updated_at, updated_by)
         values ('lot', 'l1', 2.0 / 3, array['mqtt', 'web "hook"'], now(), now(), 'test'), ('profile', 'p', 0.1 + 0.2, null, now(), now(), 'test')`,
      );
    });
    after(async () => {
      if (db) await disposeDb(db);
      rmSync(dir, { recursive: true, force: true });
    });

    it('pages a table in primary-key order across pages, every row once', async () => {
      const t = (await store.tables(db)).find((x) => x.name === 'security_events')!;
      const idIdx = t.columns.findIndex((c) => c.name === 'id');
      const ids: number[] = [];
      let after: (string | null)[] | null = null;
      for (;;) {
        const rows = await store.page(db, t, after, 1000);
        if (rows.length === 0) break;
        ids.push(...rows.map((r) => Number(r[idIdx])));
        after = [rows[rows.length - 1]![idIdx]!];
      }
      assert.equal(ids.length, 4321);
      assert.ok(
        ids.every((id, i) => i === 0 || id > ids[i - 1]!),
        'ascending by number',
      );
    });

    it('orders tables after the tables they reference', async () => {
      const names = (await store.tables(db)).map((t) => t.name);
      for (const [child, parent] of [
        ['certificates', 'cas'],
        ['ocsp_responses', 'certificates'],
        ['channel_members', 'channels'],
        ['ca_rollover_members', 'ca_rollovers'],
      ]) {
        assert.ok(names.indexOf(child!) > names.indexOf(parent!), `${child} after ${parent}`);
      }
      assert.ok(!names.includes('knex_migrations'));
    });

    it('round-trips every row exactly, moves sequences on, records and prunes backups', async () => {
      const backups = new Backups(db, store, kek, auditOf(db, clock), clock, { dir, keep: 1 });
      const first = await backups.create({ actor: 'test' });
      const state = await dump(db);
      clock.advance(60_000);
      const second = await backups.create({ actor: 'test' });

      const fresh = await target.create();
      try {
        await restoreBackup({ db: fresh, store, kek, audit: auditOf(fresh, clock), clock }, join(dir, second.fileName), { actor: 'test' });
        const restored = await dump(fresh);
        for (const [name, rows] of Object.entries(state)) {
          if (name === 'backups' || name === 'audit_log') continue;
          assert.deepEqual(restored[name], rows, name);
        }
        // The self-referencing CA came back with its parent.
        assert.deepEqual(await fresh('cas').select('id', 'parent_id').orderBy('id'), [
          { id: 'ca_aa_child', parent_id: 'ca_zz_root' },
          { id: 'ca_zz_root', parent_id: null },
        ]);
        // The next security event takes the next id, not one already restored.
        const [{ id }] = (
          await fresh.raw(`insert into security_events (at, kind, severity, details) values (now(), 'probe', 'info', '{}') returning id`)
        ).rows;
        assert.equal(Number(id), 4322);
        assert.deepEqual(
          (await fresh('backups').select('id', 'origin').orderBy('created_at')).map((r) => [r.id, r.origin]),
          [
            [first.id, 'created'],
            [second.id, 'restored'],
          ],
        );
        const v = await auditOf(fresh, clock).verify(fresh);
        assert.ok(v.ok);
      } finally {
        await disposeDb(fresh);
      }

      // BACKUP_KEEP 1: the older file goes, its record stays (marked), the newer one is served.
      const pruned = await backups.prune({ actor: 'test' });
      assert.deepEqual(pruned.pruned, [first.id]);
      assert.equal(existsSync(join(dir, first.fileName)), false);
      assert.ok((await backups.get(first.id)).fileDeletedAt);
      await assert.rejects(backups.file(first.id), /not kept/);
      assert.equal((await backups.file(second.id)).sizeBytes, second.sizeBytes);
      assert.deepEqual((await backups.prune({ actor: 'test' })).pruned, []);
      assert.equal((await backups.latest())?.id, second.id);
      const actions = (await db('audit_log').select('action').orderBy('seq')).map((r) => r.action);
      assert.deepEqual(actions, ['backup.created', 'backup.created', 'backup.pruned']);
    });
  });
}
