// Migration 0029: certificates.key_type, the subject key's type issuance records for the crypto
// inventory. Rows from before it keep a null key type (the posture report reads their DER), and
// a partial index finds those still issued; it goes back down.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { dbTargets, disposeDb } from '../helpers/db.js';
import type { Db } from '../../src/store/db.js';
import { migrationSource } from '../../migrations/index.js';

const NAME = '20261207_0029_certificate_key_type';

for (const target of dbTargets) {
  describe(`certificate key type (migration 0029) on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    before(async () => {
      db = await target.create();
    });
    after(async () => {
      if (db) await disposeDb(db);
    });

    it('adds the column with rows from before left null, indexed while still issued, and goes back down', async () => {
      const [, undone] = (await db.migrate.down({ migrationSource, name: NAME })) as [number, string[]];
      assert.deepEqual(undone, [NAME]);
      assert.equal(await db.schema.hasColumn('certificates', 'key_type'), false);
      const now = new Date();
      await db('cas').insert({
        id: 'ca_kt',
        name: 'kt',
        kind: 'root',
        key_algorithm: 'EC-P256',
        status: 'active',
        signer_ref: 'none',
        certificate_der: Buffer.from([0]),
        subject_der: Buffer.from([0]),
        key_id: randomBytes(20),
        not_before: now,
        not_after: new Date(now.getTime() + 86_400_000),
        created_at: now,
      });
      const row = (status: string) => ({
        serial: randomBytes(16),
        ca_id: 'ca_kt',
        profile: 'device',
        status,
        subject_cn: `old-${status}`,
        der: Buffer.from([0]),
        spki_sha256: randomBytes(32),
        not_before: now,
        not_after: new Date(now.getTime() + 86_400_000),
        created_at: now,
        issued_at: now,
        ...(status === 'revoked' ? { revoked_at: now, revocation_reason: 'superseded' } : {}),
      });
      await db('certificates').insert([row('issued'), row('revoked')]);

      const [, applied] = (await db.migrate.up({ migrationSource, name: NAME })) as [number, string[]];
      assert.deepEqual(applied, [NAME]);
      const keyTypes = (await db('certificates').where({ ca_id: 'ca_kt' }).select('key_type')) as { key_type: string | null }[];
      assert.deepEqual(
        keyTypes.map((r) => r.key_type),
        [null, null],
      );
      const index = (
        await db.raw(
          `select indexdef from pg_indexes where tablename = 'certificates' and indexname = 'certificates_key_type_unrecorded_idx'`,
        )
      ).rows as { indexdef: string }[];
      assert.equal(index.length, 1);
      assert.match(index[0]!.indexdef, /\(not_after, serial\) WHERE \(\(key_type IS NULL\) AND \(status = 'issued'::text\)\)/);

      await db.migrate.down({ migrationSource, name: NAME });
      assert.equal(await db.schema.hasColumn('certificates', 'key_type'), false);
      assert.equal((await db.raw(`select 1 from pg_indexes where indexname = 'certificates_key_type_unrecorded_idx'`)).rows.length, 0);
      await db.migrate.up({ migrationSource, name: NAME });
      assert.equal(await db.schema.hasColumn('certificates', 'key_type'), true);
    });
  });
}
