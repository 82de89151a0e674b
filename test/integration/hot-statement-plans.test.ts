import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import type { Service } from '../../src/main.js';
import { AUDIT_APPEND_LOCK, AuditStore } from '../../src/store/audit-store.js';
import { CertificateStore, type IntentRow } from '../../src/store/certificate-store.js';
import { DeviceEnrollmentStore } from '../../src/store/device-enrollment-store.js';
import { DeviceStore } from '../../src/store/device-store.js';
import { OcspStore } from '../../src/store/ocsp-store.js';
import { TokenStore } from '../../src/store/token-store.js';

/** The tables an enrollment's statements join a batch against, which grow without bound. */
const GROWING = ['certificates', 'devices', 'enrollment_token_uses', 'enrollment_tokens', 'audit_log', 'ocsp_responses'];
const FILLER = 15_000;

const certificates = new CertificateStore();
const devices = new DeviceStore();
const deviceEnrollment = new DeviceEnrollmentStore();
const tokens = new TokenStore();
const ocsp = new OcspStore();

/** Blocks read (from shared buffers or beyond) per growing table, its indexes included, in this transaction so far. */
async function blocksRead(tx: Knex.Transaction): Promise<Record<string, number>> {
  const r = await tx.raw(
    `select t.relname, sum(pg_stat_get_xact_blocks_fetched(c.oid)) as n
       from pg_class t join pg_class c on c.oid = t.oid or c.oid in (select indexrelid from pg_index where indrelid = t.oid)
      where t.relname = any(?) and t.relkind = 'r' group by t.relname`,
    [GROWING],
  );
  const by = Object.fromEntries((r.rows as { relname: string; n: string | number }[]).map((x) => [x.relname, Number(x.n)]));
  return Object.fromEntries(GROWING.map((t) => [t, by[t] ?? 0]));
}

/** The newest audit row's seq and hash, through the store's own newest-first page. */
async function auditHead(audit: AuditStore, tx: Knex.Transaction): Promise<{ seq: number; hash: Buffer } | undefined> {
  const [newest] = await audit.page({ limit: 1 }, tx);
  return newest && { seq: newest.seq, hash: newest.hash };
}

function intent(caId: string, deviceId: string): IntentRow {
  const now = new Date();
  return {
    serial: randomBytes(16),
    caId,
    profile: 'device',
    subjectCn: deviceId,
    deviceId,
    tbsDer: randomBytes(400),
    spkiSha256: randomBytes(32),
    keyType: 'EC P-256',
    notBefore: now,
    notAfter: new Date(now.getTime() + 86_400_000),
    createdAt: now,
  };
}

for (const target of dbTargets) {
  describe(`hot statements as their tables grow, on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let caId: string;
    before(async () => {
      svc = await makeService(target);
      caId = (await svc.hierarchy.createRoot({ name: 'plans root', keyAlgorithm: 'EC-P256' }, { actor: 'test' })).id;
    });
    after(async () => svc?.dispose());

    // A connection keeps a statement's plan once it has run a few times (named prepared
    // statements, and the statements inside plpgsql functions). Planned while the tables were
    // small and never analyzed (autovacuum off, or before its first run), a join of a batch to a
    // table by key scanned the table (or its whole status index) and kept doing so as the table
    // grew: on PostgreSQL the enrollment benchmark's certificate update then read about 40 blocks
    // per certificate, and its commits took twice as long after ~50,000 certificates (migration 0018).
    it('a batch planned on nearly empty tables reads no more blocks when its tables are twice as large', async () => {
      const audit = new AuditStore(svc.db);
      await svc.db
        .transaction(async (tx) => {
          const tokenId = `tok-${randomBytes(4).toString('hex')}`;
          const now = new Date();
          await tokens.insert(tx, {
            id: tokenId,
            secretHash: randomBytes(32),
            name: null,
            deviceId: null,
            lot: 'PLANS',
            profile: 'device',
            allowedNames: null,
            maxUses: 1_000_000,
            uses: 0,
            expiresAt: new Date(now.getTime() + 86_400_000),
            createdAt: now,
            createdBy: 'test',
            revokedAt: null,
            lastUsedAt: null,
          });
          let n = 0;
          /** What one enrollment batch does to the database, on both commit paths. */
          const batch = async () => {
            const ids = [0, 1, 2, 3].map(() => `plans-${n++}`);
            await devices.insertMany(
              tx,
              ids.map((id) => ({
                id,
                kind: 'client',
                model: null,
                hardwareRevision: null,
                firmwareVersion: null,
                site: null,
                lot: 'PLANS',
                labels: {},
                createdAt: new Date(),
              })),
            );
            const statuses = await tokens.consumeMany(
              tx,
              ids.map((deviceId) => ({ tokenId, deviceId })),
              new Date(),
            );
            assert.deepEqual(statuses, ['registered', 'registered', 'registered', 'registered']);
            const rows = ids.map((id) => intent(caId, id));
            await certificates.insertIntents(tx, rows);
            // The one-statement commit (migration 0017) for the first two, the transaction path for the others.
            const head = await auditHead(audit, tx);
            await tx.raw(
              'select issuance_complete(?::bigint, ?::bigint, ?::bytea, ?::jsonb, ?::bytea[], ?::bytea[], ?::timestamptz, ?::text[], ?::bytea[], ?::timestamptz[], ?::text[])',
              [
                AUDIT_APPEND_LOCK,
                head?.seq ?? 0,
                head?.hash ?? null,
                '[]',
                rows.slice(0, 2).map((r) => r.serial),
                rows.slice(0, 2).map(() => randomBytes(500)),
                new Date(),
                ids.slice(0, 2),
                rows.slice(0, 2).map((r) => r.serial),
                rows.slice(0, 2).map((r) => r.notAfter),
                ['registered', 'registered'],
              ],
            );
            assert.equal(
              await certificates.completeIssued(
                tx,
                rows.slice(2).map((r) => ({ serial: r.serial, der: randomBytes(500) })),
                new Date(),
              ),
              2,
            );
            const activated = await deviceEnrollment.recordIssued(
              tx,
              rows.slice(2).map((r) => ({ deviceId: r.deviceId!, serial: r.serial, notAfter: r.notAfter })),
              new Date(),
            );
            assert.equal(activated.length, 2);
            const h = await auditHead(audit, tx);
            const appended = await audit.appendAt(tx, h, [
              {
                seq: (h?.seq ?? 0) + 1,
                at: new Date(),
                actor: 'test',
                action: 'test.plans',
                targetType: 'test',
                targetId: ids[0]!,
                requestId: null,
                details: {},
                prevHash: h?.hash ?? Buffer.alloc(32),
                hash: createHash('sha256').update(ids[0]!).digest(),
              },
            ]);
            assert.deepEqual(appended, { appended: true });
            assert.equal((await ocsp.lookup(tx, rows[0]!.serial, 'sha1'))?.status, 'issued');
          };

          for (let i = 0; i < 8; i++) await batch(); // past the plan cache's five custom plans

          // The tables grow as a fleet's would; nothing here tells the planner (no ANALYZE).
          let filled = 0;
          const grow = async () => {
            const fill = `select 'fill-' || g as id, sha256(('fill-' || g)::bytea) as h, convert_to(repeat(md5(g::text), 14), 'UTF8') as body
                          from generate_series(${filled + 1}, ${filled + FILLER}) g`;
            filled += FILLER;
            await tx.raw(
              `insert into devices (id, kind, lot, status, labels, created_at, updated_at) select id, 'client', 'FILL', 'active', '{}', now(), now() from (${fill}) f`,
            );
            await tx.raw(
              `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, tbs_der, der, spki_sha256, not_before, not_after, created_at, issued_at)
             select h, ?, 'device', 'issued', id, id, body, body, h, now(), now() + interval '1 day', now(), now() from (${fill}) f`,
              [caId],
            );
            await tx.raw(`insert into enrollment_tokens (id, secret_hash, lot, profile, max_uses, uses, expires_at, created_at, created_by)
                        select id, h, 'FILL', 'device', 1, 1, now() + interval '1 day', now(), 'test' from (${fill}) f`);
            await tx.raw(`insert into enrollment_token_uses (token_id, device_id, used_at) select ?, id, now() from (${fill}) f`, [
              tokenId,
            ]);
            await tx.raw(
              `insert into ocsp_responses (serial, hash_algorithm, der, this_update, next_update) select h, 'sha1', body, now(), now() + interval '1 hour' from (${fill}) f`,
            );
            const head = (await auditHead(audit, tx))!;
            await tx.raw(
              `insert into audit_log (seq, at, actor, action, target_type, target_id, details, prev_hash, hash)
             select ? + row_number() over (), now(), 'test', 'test.fill', 'test', id, '{}', h, h from (${fill}) f`,
              [head.seq],
            );
          };
          /** Blocks one batch reads, per table. */
          const measured = async () => {
            const before = await blocksRead(tx);
            await batch();
            const after = await blocksRead(tx);
            return Object.fromEntries(GROWING.map((t) => [t, after[t]! - before[t]!]));
          };

          await grow();
          const atFirst = await measured();
          await grow();
          const atTwice = await measured();
          // An index lookup costs the same at twice the size (give or take a new btree level); a
          // scan of a table or of an index costs twice as much.
          const grew = GROWING.filter((t) => atTwice[t]! > atFirst[t]! * 1.25 + 10);
          assert.deepEqual(
            grew,
            [],
            `a batch's reads grew with its tables: ${grew.map((t) => `${t} ${atFirst[t]} → ${atTwice[t]} blocks`).join(', ')}`,
          );
          throw new Rollback();
        })
        .catch((e: unknown) => {
          if (!(e instanceof Rollback)) throw e;
        });
    });
  });
}

/** Ends the test's transaction without keeping its rows. */
class Rollback extends Error {}
