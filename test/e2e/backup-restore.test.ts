import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import request from 'supertest';
import { databaseUrlOf, disposeDb, postgresTarget } from '../helpers/db.js';
import { makeApiService, TEST_PUBLIC_URL } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import { opensslVerify, run, tempDir, writeTemp } from '../helpers/openssl.js';
import { envSkip, toolSkip } from '../helpers/tools.js';
import type { Role } from '../../src/access/api-keys.js';
import { AuditLog } from '../../src/audit/audit-log.js';
import { deriveKey, parseKek, type Kek } from '../../src/ca/kek.js';
import { loadConfig } from '../../src/config/config.js';
import { buildService, createHttpHandler, type Service } from '../../src/main.js';
import { restoreBackup } from '../../src/respond/backups.js';
import { MAGIC } from '../../src/respond/backup-file.js';
import { systemClock } from '../../src/shared/clock.js';
import { AuditStore } from '../../src/store/audit-store.js';
import { BackupStore } from '../../src/store/backup-store.js';
import { createDb, type Db } from '../../src/store/db.js';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const store = new BackupStore();

function cli(args: string[], env: Record<string, string>) {
  const base = { ...process.env };
  for (const k of ['DATABASE_URL', 'REDIS_URL', 'MQTT_CA_KEK', 'MQTT_CA_KEK_FILE', 'DATA_DIR']) delete base[k];
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    env: { ...base, LOG_LEVEL: 'warn', ...env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const binary: Parameters<request.Test['parse']>[0] = (res, cb) => {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => cb(null, Buffer.concat(chunks)));
};

/** Every table's rows as text, in primary-key order: what "the same state" means. */
async function dump(db: Db): Promise<Record<string, Array<Array<string | null>>>> {
  const out: Record<string, Array<Array<string | null>>> = {};
  const trx = await store.openSnapshot(db);
  try {
    for (const t of await store.tables(trx)) out[t.name] = await store.page(trx, t, null, 1_000_000);
  } finally {
    await trx.commit();
  }
  return out;
}

/** Table by table, so a difference names its table. */
function assertSameState(actual: Record<string, unknown[]>, expected: Record<string, unknown[]>): void {
  assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort());
  for (const t of Object.keys(expected)) assert.deepEqual(actual[t], expected[t], `table ${t}`);
}

/** A dump without what a backup adds after its snapshot (its record, its audit entry) or a restore adds (the same, for the restore). */
function withoutBackupBookkeeping(d: Record<string, Array<Array<string | null>>>, auditEntries: number) {
  const { backups: _b, audit_log, ...rest } = d;
  return { ...rest, audit_log: audit_log!.slice(0, auditEntries) };
}

const restoreDeps = (db: Db, kek: Kek) => ({
  db,
  store,
  kek,
  audit: new AuditLog(new AuditStore(db), deriveKey(kek, 'audit chain'), systemClock),
  clock: systemClock,
});

describe(
  'backup and restore',
  { skip: envSkip('DATABASE_URL', 'the backup and restore tests, which run on PostgreSQL, are') ?? toolSkip('openssl') },
  () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    let keys: Record<Role, string>;
    let issuing: string;
    let kekText: string;
    let kek: Kek;
    let backupDir: string;
    const serials: Record<string, string> = {};
    let chain: string[] = [];
    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const cleanup: Array<() => Promise<void>> = [];

    const enroll = async (a: ReturnType<typeof request>, deviceId: string) => {
      await a.post('/v1/devices').set(auth('provisioner')).send({ id: deviceId, kind: 'client', lot: 'lot-b' }).expect(201);
      const tok = (await a.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId }).expect(201)).body.token as string;
      return (
        await a
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ csr: p256Csr(deviceId).pem })
          .expect(201)
      ).body as { serial: string; certificate: string; chain: string[]; caId: string };
    };

    before(async () => {
      backupDir = mkdtempSync(join(tmpdir(), 'mqttca-backups-'));
      ({ svc, api, keys, issuingId: issuing } = await makeApiService(postgresTarget, { env: { BACKUP_DIR: backupDir } }));
      kekText = svc.config.kek!;
      kek = parseKek(kekText, 'test');
      // A small but complete state: devices and their certificates, a revocation and a hold, CRLs,
      // rotation policies, an unused token, a failed enrollment (a security event), an extra API key.
      for (const d of ['bk-1', 'bk-2', 'bk-3', 'bk-4']) {
        const e = await enroll(api, d);
        serials[d] = e.serial;
        chain = e.chain;
      }
      await api.post(`/v1/certificates/${serials['bk-2']}/revoke`).set(auth('operator')).send({ reason: 'keyCompromise' }).expect(200);
      await api.post(`/v1/certificates/${serials['bk-3']}/revoke`).set(auth('operator')).send({ reason: 'certificateHold' }).expect(200);
      await api.put('/v1/rotation-policies/profile/device').set(auth('operator')).send({ renewAtFraction: 0.5, graceDays: 10 }).expect(201);
      await api.put('/v1/rotation-policies/lot/lot-b').set(auth('operator')).send({ renewDaysBefore: 20 }).expect(201);
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'bk-spare', kind: 'client' }).expect(201);
      await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId: 'bk-spare' }).expect(201);
      assertProblem(
        await api
          .post('/v1/enroll')
          .set({ Authorization: 'Bearer et_nope_nope' })
          .send({ csr: p256Csr('bk-spare').pem }),
        401,
      );
      await api.post('/v1/api-keys').set(auth('admin')).send({ name: 'ci', role: 'auditor' }).expect(201);
      await svc.crls.publish(issuing);
      await svc.renewals.plan();
    });
    after(async () => {
      for (const c of cleanup.reverse()) await c();
      await svc?.dispose();
      rmSync(backupDir, { recursive: true, force: true });
    });

    let apiBackup: { id: string; fileName: string; sha256: string; sizeBytes: number };
    let apiBackupFile: string;
    let stateAtBackup: Record<string, Array<Array<string | null>>>;
    let auditAtBackup: number;

    it('POST /v1/backups writes a backup into BACKUP_DIR; it is listed, shown and downloaded as recorded; only an admin makes or downloads one', async () => {
      const res = await api.post('/v1/backups').set(auth('admin')).expect(201);
      // Nothing else writes between the snapshot and here: the state the backup must bring back.
      stateAtBackup = await dump(svc.db);
      apiBackup = res.body;
      assert.equal(res.headers.location, `/v1/backups/${apiBackup.id}`);
      assert.deepEqual(readdirSync(backupDir), [apiBackup.fileName]);
      apiBackupFile = join(backupDir, apiBackup.fileName);
      const bytes = readFileSync(apiBackupFile);
      assert.equal(bytes.length, apiBackup.sizeBytes);
      assert.equal(createHash('sha256').update(bytes).digest('hex'), apiBackup.sha256);
      assert.equal(res.body.rowCounts.certificates, Number((await svc.db('certificates').count({ n: '*' }))[0]!.n));
      assert.equal(res.body.kekId, kek.id);
      // The CA keys travel wrapped: no private key in the clear, and no key bytes readable in the file.
      assert.doesNotMatch(bytes.toString('latin1'), /PRIVATE KEY|ca_[0-9a-f]{20}/);
      const audit = (await api.get('/v1/audit').query({ targetType: 'backup', targetId: apiBackup.id }).set(auth('auditor')).expect(200))
        .body.items;
      assert.deepEqual(
        audit.map((e: { action: string }) => e.action),
        ['backup.created'],
      );
      auditAtBackup = audit[0].seq - 1;

      const list = (await api.get('/v1/backups').set(auth('auditor')).expect(200)).body;
      assert.deepEqual(
        list.items.map((b: { id: string }) => b.id),
        [apiBackup.id],
      );
      assert.equal(list.nextCursor, null);
      assert.deepEqual((await api.get(`/v1/backups/${apiBackup.id}`).set(auth('auditor')).expect(200)).body, apiBackup);
      const file = await api.get(`/v1/backups/${apiBackup.id}/file`).set(auth('admin')).buffer(true).parse(binary).expect(200);
      assert.equal(file.headers['content-type'], 'application/octet-stream');
      assert.ok((file.body as Buffer).equals(bytes));

      assertProblem(await api.post('/v1/backups').set(auth('operator')), 403);
      assertProblem(await api.get(`/v1/backups/${apiBackup.id}/file`).set(auth('auditor')), 403);
      assertProblem(await api.get('/v1/backups').set(auth('provisioner')), 403);
      assertProblem(await api.get('/v1/backups/bk_0000000000000000').set(auth('auditor')), 404);
      assertProblem(await api.get('/v1/backups/nope/file').set(auth('admin')), 404);
      assertProblem(await api.get('/v1/backups').query({ cursor: 'bm9wZQ' }).set(auth('auditor')), 400);
      assertProblem(await api.get('/v1/backups').query({ limit: 0 }).set(auth('auditor')), 400);
      // A second one pages after the first.
      const second = (await api.post('/v1/backups').set(auth('admin')).expect(201)).body;
      const p1 = (await api.get('/v1/backups').query({ limit: 1 }).set(auth('auditor')).expect(200)).body;
      assert.deepEqual(
        p1.items.map((b: { id: string }) => b.id),
        [second.id],
      );
      const p2 = (await api.get('/v1/backups').query({ limit: 1, cursor: p1.nextCursor }).set(auth('auditor')).expect(200)).body;
      assert.deepEqual([p2.items.map((b: { id: string }) => b.id), p2.nextCursor], [[apiBackup.id], null]);
    });

    it('restores into a fresh PostgreSQL database (CLI): the same rows, the audit chain verifies, the CA keys sign, CRL and OCSP show the revocations', async () => {
      const target = await postgresTarget.create();
      cleanup.push(() => disposeDb(target));
      const env = { DATABASE_URL: databaseUrlOf(target), MQTT_CA_KEK: kekText, DATA_DIR: mkdtempSync(join(tmpdir(), 'mqttca-restore-')) };
      const r = cli(['restore', apiBackupFile], env);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`restored backup ${apiBackup.id} of .*: \\d+ rows in \\d+ tables`));
      assert.match(r.stdout, /audit log intact: \d+ entries/);

      // The same rows, table by table, column by column (timestamps to the microsecond, bytes exactly).
      const restored = await dump(target);
      assertSameState(withoutBackupBookkeeping(restored, auditAtBackup), withoutBackupBookkeeping(stateAtBackup, auditAtBackup));
      assert.equal(restored.audit_log!.length, auditAtBackup + 1);
      const verify = cli(['audit', 'verify'], env);
      assert.equal(verify.status, 0, verify.stderr);
      assert.match(verify.stdout, new RegExp(`audit log intact: ${auditAtBackup + 1} entries`));

      // The restored service: keys open under the same KEK, the same CAs, and it issues.
      const config = loadConfig({
        MQTT_CA_KEK: kekText,
        DATA_DIR: env.DATA_DIR,
        PUBLIC_URL: TEST_PUBLIC_URL,
        LOG_LEVEL: 'silent',
        BODY_LIMIT: '64kb',
      });
      const back = await buildService(config, { db: target, logger: pino({ level: 'silent' }) });
      cleanup.push(() => back.stop());
      const bapi = request(createHttpHandler(back, { validateResponses: true }));
      assert.deepEqual(
        (await bapi.get('/v1/cas').set(auth('auditor')).expect(200)).body,
        (await api.get('/v1/cas').set(auth('auditor')).expect(200)).body,
      );
      for (const d of ['bk-1', 'bk-2', 'bk-3']) {
        assert.deepEqual(
          (await bapi.get(`/v1/certificates/${serials[d]}`).set(auth('auditor')).expect(200)).body,
          (await api.get(`/v1/certificates/${serials[d]}`).set(auth('auditor')).expect(200)).body,
        );
      }
      const fresh = await enroll(bapi, 'bk-after-restore');
      assert.equal(fresh.caId, issuing);
      assert.deepEqual(fresh.chain, chain);
      const v = opensslVerify(chain[chain.length - 1]!, chain.slice(0, -1), fresh.certificate);
      assert.equal(v.status, 0, v.stderr + v.stdout);

      // The CRL the source published, served by the restored service, and a new one it signs.
      const dir = tempDir();
      const caFile = writeTemp(dir, 'chain.pem', chain.join(''));
      const crlText = async () => {
        const der = (await bapi.get(`/pki/crl/${issuing}.crl`).buffer(true).parse(binary).expect(200)).body as Buffer;
        const c = run('openssl', [
          'crl',
          '-inform',
          'DER',
          '-in',
          writeTemp(dir, `c${randomBytes(3).toString('hex')}.crl`, der),
          '-CAfile',
          caFile,
          '-noout',
          '-text',
        ]);
        assert.equal(c.status, 0, c.stderr);
        assert.match(c.stderr + c.stdout, /verify OK/);
        return c.stdout;
      };
      for (const text of [await crlText(), (await back.crls.publish(issuing), await crlText())]) {
        for (const d of ['bk-2', 'bk-3']) assert.match(text, new RegExp(`Serial Number: ${serials[d]!.toUpperCase()}`));
        assert.doesNotMatch(text, new RegExp(`Serial Number: ${serials['bk-1']!.toUpperCase()}`));
        assert.match(text, /Certificate Hold/);
      }

      // OCSP from the restored responder: revoked, on hold, good.
      const issuerFile = writeTemp(dir, 'issuing.pem', chain[0]!);
      const rootFile = writeTemp(dir, 'root.pem', chain[chain.length - 1]!);
      for (const [d, expected] of [
        ['bk-2', /Cert Status: revoked[\s\S]*Revocation Reason: keyCompromise/],
        ['bk-3', /Cert Status: revoked[\s\S]*Revocation Reason: certificateHold/],
        ['bk-1', /Cert Status: good/],
      ] as const) {
        const reqFile = join(dir, `${d}.req`);
        const q = run('openssl', ['ocsp', '-issuer', issuerFile, '-serial', `0x${serials[d]}`, '-no_nonce', '-reqout', reqFile]);
        assert.equal(q.status, 0, q.stderr);
        const resp = (
          await bapi
            .post('/pki/ocsp')
            .set('Content-Type', 'application/ocsp-request')
            .send(readFileSync(reqFile))
            .buffer(true)
            .parse(binary)
            .expect(200)
        ).body as Buffer;
        const o = run('openssl', [
          'ocsp',
          '-respin',
          writeTemp(dir, `${d}.resp`, resp),
          '-issuer',
          issuerFile,
          '-CAfile',
          rootFile,
          '-verify_other',
          issuerFile,
          '-resp_text',
        ]);
        assert.equal(o.status, 0, o.stderr);
        assert.match(o.stderr + o.stdout, /Response verify OK/);
        assert.match(o.stdout, expected);
      }
    });

    it('a CLI backup of PostgreSQL restores into a fresh, unmigrated embedded store (PGlite) with the same rows', async () => {
      const out = join(backupDir, 'by-cli.backup');
      const t0 = Date.now();
      const b = cli(['backup', '--out', out], { DATABASE_URL: databaseUrlOf(svc.db), MQTT_CA_KEK: kekText, DATA_DIR: backupDir });
      assert.equal(b.status, 0, b.stderr);
      console.log(`CLI backup: ${Date.now() - t0} ms`);
      const id = /^backup (bk_[0-9a-f]{16})$/m.exec(b.stdout)?.[1];
      assert.ok(id, b.stdout);
      assert.match(b.stdout, new RegExp(`kek id: ${kek.id}`));
      const rec = (await api.get(`/v1/backups/${id}`).set(auth('auditor')).expect(200)).body;
      assert.equal(rec.fileName, out);
      assert.equal(rec.sha256, createHash('sha256').update(readFileSync(out)).digest('hex'));
      const state = await dump(svc.db);
      const audit = Number((await svc.db('audit_log').max({ m: 'seq' }))[0]!.m) - 1;

      const db = createDb({});
      cleanup.push(() => db.destroy());
      const t1 = Date.now();
      const r = await restoreBackup(restoreDeps(db, kek), out, { actor: 'test' });
      console.log(`restore into PGlite: ${Date.now() - t1} ms`);
      assert.equal(r.migratedBefore.length, (await store.knownMigrations()).length);
      assertSameState(withoutBackupBookkeeping(await dump(db), audit), withoutBackupBookkeeping(state, audit));
      // The backups made before this one, and the one it was restored from.
      const rows = await db('backups').select('id', 'origin').orderBy('created_at');
      assert.deepEqual(
        rows.map((x) => x.origin),
        ['created', 'created', 'restored'],
      );
      assert.equal(rows[2]!.id, id);
      const v = await restoreDeps(db, kek).audit.verify(db);
      assert.equal(v.ok && v.entries, audit + 1);
    });

    it('refuses a tampered, truncated, foreign-KEK, garbage or newer-schema file, and a non-empty target, each with a clear message and nothing written', async () => {
      const good = readFileSync(apiBackupFile);
      const dir = tempDir();
      const variants: Array<[string, Buffer, RegExp]> = [];
      const flip = Buffer.from(good);
      flip[Math.floor(good.length * 0.6)]! ^= 0x01;
      variants.push(['tampered body', flip, /chunk \d+ of the backup file fails authentication|altered/]);
      const headerEdit = Buffer.from(
        good.toString('latin1').replace(/"createdBy":"[^"]*"/, (m) => m.replace(/.(?="$)/, 'X')),
        'latin1',
      );
      variants.push(['tampered header', headerEdit, /backup header fails authentication/]);
      variants.push(['truncated', good.subarray(0, good.length - 40), /truncated/]);
      variants.push(['cut at a chunk', good.subarray(0, 200), /truncated|fails authentication/]);
      variants.push(['trailing bytes', Buffer.concat([good, Buffer.from([0, 0, 0, 0, 0, 1])]), /after its final chunk/]);
      variants.push(['garbage', randomBytes(4096), /not an mqtt-ca backup file/]);
      variants.push(['empty', Buffer.alloc(0), /not an mqtt-ca backup file/]);
      // A backup from a newer mqtt-ca (a migration this one does not know), its header signed as that one would.
      const n = good.readUInt32BE(MAGIC.length);
      const header = JSON.parse(good.subarray(MAGIC.length + 4, MAGIC.length + 4 + n).toString('utf8'));
      header.migrations.push('20991231_9999_future');
      const json = Buffer.from(JSON.stringify(header));
      const len = Buffer.alloc(4);
      len.writeUInt32BE(json.length);
      const mac = createHmac('sha256', deriveKey(kek, `backup header ${header.id}`))
        .update(MAGIC)
        .update(len)
        .update(json)
        .digest();
      variants.push([
        'newer schema',
        Buffer.concat([MAGIC, len, json, mac, good.subarray(MAGIC.length + 4 + n + 32)]),
        /newer schema \(20991231_9999_future unknown to this mqtt-ca\)/,
      ]);
      const target = await postgresTarget.create();
      cleanup.push(() => disposeDb(target));
      const nothingWritten = async () => {
        assert.deepEqual(await store.nonEmptyTables(target, await store.tables(target)), []);
        assert.equal(Number((await target('revocation_epoch').max({ s: 'seq' }))[0]!.s), 0);
      };
      for (const [what, bytes, message] of variants) {
        const file = writeTemp(dir, `${what.replace(/\W/g, '-')}.backup`, bytes);
        await assert.rejects(restoreBackup(restoreDeps(target, kek), file, { actor: 'test' }), (e: Error) => {
          assert.match(e.message, message, what);
          assert.equal((e as { kind?: string }).kind, 'BadRequest', what);
          return true;
        });
        await nothingWritten();
      }
      const otherKek = parseKek(randomBytes(32).toString('base64'), 'other');
      await assert.rejects(
        restoreBackup(restoreDeps(target, otherKek), apiBackupFile, { actor: 'test' }),
        new RegExp(`made under the key-encryption key with id ${kek.id}, not the loaded one \\(id ${otherKek.id}\\)`),
      );
      await nothingWritten();
      await assert.rejects(
        restoreBackup(restoreDeps(target, kek), join(dir, 'nope.backup'), { actor: 'test' }),
        /cannot open the backup file .*nope\.backup: ENOENT/,
      );
      // Not into a database in use: the source itself.
      await assert.rejects(
        restoreBackup(restoreDeps(svc.db, kek), apiBackupFile, { actor: 'test' }),
        /target database is not empty \(rows in .*audit_log/,
      );

      // The CLI: a non-zero exit and the message.
      const env = { DATABASE_URL: databaseUrlOf(target), MQTT_CA_KEK: kekText, DATA_DIR: dir };
      const bad = cli(['restore', join(dir, 'tampered-body.backup')], env);
      assert.notEqual(bad.status, 0);
      assert.match(bad.stderr, /mqtt-ca restore: chunk \d+ of the backup file fails authentication/);
      const busy = cli(['restore', apiBackupFile], { ...env, DATABASE_URL: databaseUrlOf(svc.db) });
      assert.notEqual(busy.status, 0);
      assert.match(busy.stderr, /mqtt-ca restore: the target database is not empty/);
      await nothingWritten();
    });
  },
);
