// Migration 0027: a bulk revocation run's frozen selection is walked by position (table order),
// and a run frozen before it (by serial) keeps its order and resumes where it was.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { dbTargets, disposeDb } from '../helpers/db.js';
import type { Db } from '../../src/store/db.js';
import { migrationSource } from '../../migrations/index.js';

for (const target of dbTargets) {
  describe(`bulk selection order (migration 0027) on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    before(async () => {
      db = await target.create();
    });
    after(async () => {
      if (db) await disposeDb(db);
    });

    it('numbers a running run’s remaining serials in serial order, and goes back down', async () => {
      const [, undone] = (await db.migrate.down({ migrationSource, name: '20261207_0027_bulk_selection_order' })) as [number, string[]];
      assert.deepEqual(undone, ['20261207_0027_bulk_selection_order']);
      const now = new Date();
      await db('bulk_revocations').insert({
        id: 'rvk_old',
        selector: JSON.stringify({ lot: 'L' }),
        reason: 'superseded',
        actor: 'test',
        status: 'running',
        matched: 5,
        already_revoked: 0,
        started_at: now,
        updated_at: now,
      });
      const serials = Array.from({ length: 5 }, () => randomBytes(16));
      await db('bulk_revocation_serials').insert(serials.map((serial) => ({ run_id: 'rvk_old', serial })));

      const [, applied] = (await db.migrate.up({ migrationSource, name: '20261207_0027_bulk_selection_order' })) as [number, string[]];
      assert.deepEqual(applied, ['20261207_0027_bulk_selection_order']);
      const rows = (await db('bulk_revocation_serials').where({ run_id: 'rvk_old' }).orderBy('pos').select('pos', 'serial')) as {
        pos: string | number;
        serial: Uint8Array;
      }[];
      assert.deepEqual(
        rows.map((r) => Number(r.pos)),
        [1, 2, 3, 4, 5],
      );
      assert.deepEqual(
        rows.map((r) => Buffer.from(r.serial).toString('hex')),
        serials.map((s) => s.toString('hex')).sort(),
      );
      // The position is the key now: one run cannot hold a position twice.
      await assert.rejects(db('bulk_revocation_serials').insert({ run_id: 'rvk_old', pos: 3, serial: randomBytes(16) }));

      await db.migrate.down({ migrationSource, name: '20261207_0027_bulk_selection_order' });
      assert.equal(await db.schema.hasColumn('bulk_revocation_serials', 'pos'), false);
      await db.migrate.up({ migrationSource, name: '20261207_0027_bulk_selection_order' });
      assert.equal(await db.schema.hasColumn('bulk_revocation_serials', 'pos'), true);
    });
  });
}
