import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { p256Csr } from '../helpers/csr.js';
import { KEY_ARGS, opensslCsr, run, tempDir, writeTemp } from '../helpers/openssl.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { keyTypeLabel, spkiOfCertificate } from '../../src/ca/x509/spki.js';
import { PostureStore, type UnlabelledCursor } from '../../src/store/posture-store.js';
import { deviceOf } from '../../src/detect/storage-layout.js';
import { ManualClock } from '../../src/shared/clock.js';
import { serialToBytes, type Serial } from '../../src/shared/ids.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

type Agent = Awaited<ReturnType<typeof makeApiService>>['api'];
const spki = (curve: 'P-256' | 'P-384') =>
  generateKeyPairSync('ec', { namedCurve: curve }).publicKey.export({ format: 'der', type: 'spki' });
const DAY = 86_400_000;
type Outcome = { function: string; subcategory: string; status: string; evidence: string; remedy: string };
const outcomeOf = (r: { outcomes: Outcome[] }, sub: string) => {
  const o = r.outcomes.find((x) => x.subcategory === sub);
  assert.ok(o, `the report lists ${sub}`);
  return o;
};
/** The framework's Detect rows that happen on the bus or on site, which the service cannot see. */
const UNSEEN_DETECT = [
  'Abnormal termination of connections',
  'Client availability verification',
  'End-devices and their vicinity physical inspection',
  'Topic scanning (attempts to send or subscribe to many topics)',
  'Sending undeliverable messages (no subscribers to the topics)',
  'Clients that connect but do not send data',
];

for (const target of dbTargets) {
  describe(`GET /v1/posture on a seeded fleet, on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    const clock = new ManualClock(new Date());
    const as = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    let c1Der: Buffer;

    before(async () => {
      ({ svc, api, keys } = await makeApiService(target, { clock }));
      // Six devices: five will be active (one of them with an expired certificate), one revoked.
      const devices = [
        { id: 'pos-c1', kind: 'client', model: 'M1', firmwareVersion: '1.0', site: 'north' },
        { id: 'pos-c2', kind: 'client', model: 'M1', firmwareVersion: '1.0', site: 'north' },
        { id: 'pos-c3', kind: 'client', model: 'M2', firmwareVersion: '2.1', site: 'south' },
        { id: 'pos-c4', kind: 'client', model: 'M2' },
        { id: 'pos-c5', kind: 'client', model: 'M3', firmwareVersion: '0.9', site: 'east' },
        { id: 'pos-b1', kind: 'broker', model: 'B1', site: 'north' },
      ];
      for (const d of devices) await api.post('/v1/devices').set(as('admin')).send(d).expect(201);
      const issue = (deviceId: string, curve: 'P-256' | 'P-384') =>
        svc.issuance.issue({ profile: 'device', deviceId, subjectPublicKeyInfo: spki(curve) }, { actor: 'test' });
      c1Der = (await issue('pos-c1', 'P-256')).der;
      const c2 = await issue('pos-c2', 'P-256');
      await issue('pos-c3', 'P-384');
      const c4 = await issue('pos-c4', 'P-256');
      const c5 = await issue('pos-c5', 'P-256');
      await svc.issuance.issue(
        {
          profile: 'broker',
          deviceId: 'pos-b1',
          commonName: 'pos-b1',
          dnsNames: ['mqtt.pos.example'],
          subjectPublicKeyInfo: spki('P-256'),
        },
        { actor: 'test' },
      );
      // A second broker, certified through POST /v1/certificates with no device record (a P-384 key).
      const b2 = opensslCsr([...KEY_ARGS.p384], '/CN=pos-b2');
      await api
        .post('/v1/certificates')
        .set(as('operator'))
        .send({ profile: 'broker', csr: b2.csrPem, commonName: 'pos-b2', dnsNames: ['mqtt2.pos.example'] })
        .expect(201);
      // c2 revoked (a revoke-to-visible sample); c4 issued long ago (past its renewal point); c5 expired.
      await api.post(`/v1/certificates/${c2.serial}/revoke`).set(as('operator')).send({ reason: 'keyCompromise' }).expect(200);
      const now = clock.now().getTime();
      await svc
        .db('certificates')
        .where({ serial: serialToBytes(c4.serial as Serial) })
        .update({ not_before: new Date(now - 2000 * DAY) });
      await svc
        .db('certificates')
        .where({ serial: serialToBytes(c5.serial as Serial) })
        .update({ not_before: new Date(now - 400 * DAY), not_after: new Date(now - DAY) });
      await svc.backups.create({ actor: 'test' });
      await api
        .post('/v1/incidents')
        .set(as('operator'))
        .send({ kind: 'lost-device', title: 'meter lost in transit', targets: { devices: ['pos-c3'] } })
        .expect(201);
      await api
        .post('/v1/enroll')
        .set({ Authorization: 'Bearer mqet_et_00000000000000000000_' + 'A'.repeat(43) })
        .send({ csr: p256Csr('pos-c1').pem })
        .expect(401);
    });
    after(async () => {
      await svc?.dispose();
    });

    it('reports the figures of the fleet as seeded', async () => {
      const r = (await api.get('/v1/posture').set(as('auditor')).expect(200)).body;
      const f = r.figures;
      // Two brokers: pos-b1 in the inventory, pos-b2 only by its broker certificate.
      assert.deepEqual(f.devices, {
        byStatus: { active: 5, revoked: 1 },
        active: 5,
        activeWithValidCertificate: 4,
        validCertificateShare: 0.8,
        brokers: 2,
        brokersWithValidCertificate: 2,
      });
      assert.deepEqual(f.inventory, { modelShare: 1, firmwareShare: 0.6, siteShare: 0.8 });
      assert.deepEqual(f.renewal, { currentCertificates: 4, pastRenewalPoint: 1 });
      const cas = (await svc.hierarchy.list()).filter((c) => c.status === 'active');
      assert.equal(
        Object.values(f.crypto.casByKey as Record<string, number>).reduce((a, b) => a + b, 0),
        cas.length,
      );
      assert.equal(f.revocationVisible.count, 1);
      assert.ok(f.revocationVisible.p99Seconds >= f.revocationVisible.p50Seconds);
      assert.equal(f.lastBackupAgeHours, 0);
      assert.equal(f.openIncidents.total, 1);
      assert.deepEqual(f.openIncidents.byKind, { 'lost-device': 1 });
      assert.deepEqual(f.securityEvents24h, [{ kind: 'enrollment.token-invalid', severity: 'warning', count: 1 }]);
      assert.deepEqual(f.staleCrls, []);
    });

    it('counts brokers by their certificates, whichever route issued them', async () => {
      const f = (await api.get('/v1/posture').set(as('auditor')).expect(200)).body.figures;
      // pos-b1 is a broker in the inventory; pos-b2 has only its broker certificate from POST /v1/certificates.
      assert.equal(f.devices.brokers, 2);
      assert.equal(f.devices.brokersWithValidCertificate, 2);
    });

    it('counts every issued certificate in the crypto inventory, with or without a device record', async () => {
      const f = (await api.get('/v1/posture').set(as('auditor')).expect(200)).body.figures;
      // Every issued, unexpired end-entity certificate, whoever holds it: the devices' (c5 expired, c2 revoked),
      // pos-b1's, pos-b2's (P-384, no device record), the service's own OCSP responders'. CA certificates count with the CAs.
      const counted = Object.values(f.crypto.certificatesByKey as Record<string, number>).reduce((x, y) => x + y, 0);
      const responders = await svc.db('certificates').where({ status: 'issued', profile: 'ocsp-responder' }).count({ n: '*' });
      assert.equal(counted, 5 + Number(responders[0]!.n)); // c1, c3, c4, pos-b1, pos-b2, the responders
      const valid = await svc
        .db('certificates')
        .where('status', 'issued')
        .andWhereNot('profile', 'ca')
        .andWhere('not_after', '>', clock.now())
        .count({ n: '*' });
      assert.equal(counted, Number(valid[0]!.n));
    });

    it('rates each observed subcategory, a tier per function, and lists the gaps to the target widest first', async () => {
      const r = (await api.get('/v1/posture').set(as('operator')).expect(200)).body;
      const status = (sub: string) => outcomeOf(r, sub).status;
      assert.equal(status('List of hardware devices'), 'met'); // model for 5 of 5
      assert.equal(status('Software inventory'), 'partial'); // firmware for 3 of 5
      assert.equal(status('Lifecycle tracking'), 'unmet'); // 80 % with a valid certificate
      assert.equal(status('Location of (client-side) end-devices'), 'partial'); // 4 of 5
      assert.equal(status('Authentication of the Server by the Clients'), 'met');
      assert.equal(status('Frequent session renegotiation (certificate renewal)'), 'unmet'); // 1 of 4 past
      assert.equal(status('Backup systems'), 'partial'); // fresh, but on the store's filesystem (below)
      assert.equal(status('Disconnect suspicious or compromised end-devices'), 'unmet'); // no broker connector here
      assert.equal(status('Rate limiting and/or blocking'), 'met');
      // Identify: 2 met (devices, crypto suites) + 2 partial + 1 unmet = 3 of 5 → Repeatable.
      assert.deepEqual(r.current.identify, { tier: 3, name: 'Repeatable', met: 2, partial: 2, unmet: 1 });
      assert.deepEqual(r.target, { identify: 3, protect: 3, detect: 3, respond: 3, recover: 3 });
      assert.deepEqual(
        r.gaps.map((g: Outcome) => g.subcategory).sort(),
        (r.outcomes as Outcome[])
          .filter((o) => o.status !== 'met')
          .map((o) => o.subcategory)
          .sort(),
      );

      await api.put('/v1/posture/target').set(as('admin')).send({ identify: 4, recover: 4 }).expect(200);
      const after = (await api.get('/v1/posture').set(as('auditor')).expect(200)).body;
      assert.deepEqual(after.target, { identify: 4, protect: 3, detect: 3, respond: 3, recover: 4 });
      const gapSizes = after.gaps.map((g: { targetTier: number; currentTier: number }) => g.targetTier - g.currentTier);
      assert.deepEqual(
        gapSizes,
        [...gapSizes].sort((a: number, b: number) => b - a),
        'widest gap first',
      );
      const identifyGaps = after.gaps
        .filter((g: { function: string }) => g.function === 'identify')
        .map((g: { subcategory: string; status: string }) => `${g.status}:${g.subcategory}`);
      assert.deepEqual(identifyGaps, [
        'unmet:Lifecycle tracking',
        'partial:Software inventory',
        'partial:Location of (client-side) end-devices',
      ]);
      assert.ok(
        after.gaps.some((g: { function: string; currentTier: number; targetTier: number }) => g.currentTier >= g.targetTier),
        'functions on target still list what they miss',
      );
      const audit = await svc.audit.list({ limit: 5, action: 'posture.target-set' });
      assert.equal(audit.items.length, 1);
    });

    it("does not count a backup on the store's filesystem, or a KEK it cannot locate, as met", async () => {
      const r = (await api.get('/v1/posture').set(as('auditor')).expect(200)).body;
      // A fresh backup, but in DATA_DIR/backups, on the store's own filesystem.
      assert.equal(outcomeOf(r, 'Backup systems').status, 'partial');
      assert.match(outcomeOf(r, 'Backup systems').evidence, /last backup 0\.0 h ago.*same filesystem as the store/);
      // MQTT_CA_KEK: the keys are wrapped, but where the KEK is kept cannot be seen.
      assert.equal(outcomeOf(r, 'Data-at-rest encryption').status, 'partial');
      assert.match(outcomeOf(r, 'Data-at-rest encryption').evidence, /MQTT_CA_KEK: where it is kept is not observed/);
    });

    it("lists the framework's Detect subcategories it cannot see as unmet, not observed, and never calls the unobserved met", async () => {
      const r = (await api.get('/v1/posture').set(as('auditor')).expect(200)).body;
      for (const sub of UNSEEN_DETECT) {
        assert.equal(outcomeOf(r, sub).status, 'unmet', sub);
        assert.match(outcomeOf(r, sub).evidence, /^not observed/, sub);
      }
      for (const o of r.outcomes as Outcome[])
        if (/not observed/.test(o.evidence)) assert.notEqual(o.status, 'met', `${o.subcategory}: what is not observed is never met`);
    });

    it('lists every outcome short of met with its remedy, in JSON and HTML, even with every function on target', async () => {
      await api.put('/v1/posture/target').set(as('admin')).send({ identify: 1, protect: 1, detect: 1, respond: 1, recover: 1 }).expect(200);
      const r = (await api.get('/v1/posture').set(as('auditor')).expect(200)).body;
      const short = (r.outcomes as Outcome[]).filter((o) => o.status !== 'met');
      assert.ok(short.length > 0);
      for (const fn of ['identify', 'protect', 'detect', 'respond', 'recover'])
        assert.ok(r.current[fn].tier >= r.target[fn], `${fn} is on target`);
      assert.deepEqual(
        (r.gaps as Outcome[]).map((g) => `${g.function}:${g.subcategory}:${g.status}:${g.remedy}`).sort(),
        short.map((o) => `${o.function}:${o.subcategory}:${o.status}:${o.remedy}`).sort(),
      );
      for (const g of r.gaps as Outcome[]) assert.ok(g.remedy.length > 0 && g.remedy !== 'None.', g.subcategory);
      const page = (await api.get('/v1/posture').set(as('auditor')).set('Accept', 'text/html').expect(200)).text;
      const gapsTable = page.slice(page.indexOf('<h2>Gaps'), page.indexOf('<h2>Figures'));
      const esc = (t: string) =>
        t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
      for (const o of short)
        assert.ok(
          gapsTable.includes(`<td>${esc(o.subcategory)}</td><td>${o.status}</td>`) && gapsTable.includes(esc(o.remedy)),
          `the page's gaps list ${o.subcategory}`,
        );
      await api.put('/v1/posture/target').set(as('admin')).send({ identify: 3, protect: 3, detect: 3, respond: 3, recover: 3 }).expect(200);
    });

    it('sees connection attempts only through OCSP: not observed until a broker asks, then partial, never met', async () => {
      const before = outcomeOf((await api.get('/v1/posture').set(as('auditor')).expect(200)).body, 'Repeated connection attempts');
      assert.equal(before.status, 'unmet');
      assert.match(before.evidence, /^not observed/);
      const dir = tempDir();
      const issuer = (await api.get('/v1/cas').set(as('auditor')).expect(200)).body.items.find(
        (c: { isDefaultIssuer?: boolean }) => c.isDefaultIssuer,
      ).certificate;
      const req = join(dir, 'req.der');
      const made = run('openssl', [
        'ocsp',
        '-issuer',
        writeTemp(dir, 'issuer.pem', issuer),
        '-cert',
        writeTemp(dir, 'leaf.pem', toPem(c1Der, 'CERTIFICATE')),
        '-no_nonce',
        '-reqout',
        req,
      ]);
      assert.equal(made.status, 0, made.stderr);
      await svc.ocsp.respond(readFileSync(req));
      const after = outcomeOf((await api.get('/v1/posture').set(as('auditor')).expect(200)).body, 'Repeated connection attempts');
      assert.equal(after.status, 'partial');
      assert.match(after.evidence, /[1-9][0-9]* status answers/);
    });

    it('refuses a bad target or the wrong role, and serves a readable HTML page', async () => {
      for (const bad of [{ identify: 5 }, { respond: 0 }, { everything: 3 }, {}])
        await api.put('/v1/posture/target').set(as('admin')).send(bad).expect(400);
      await api.put('/v1/posture/target').set(as('operator')).send({ detect: 2 }).expect(403);
      await api.get('/v1/posture').set(as('provisioner')).expect(403);
      const page = await api.get('/v1/posture').set(as('auditor')).set('Accept', 'text/html').expect(200);
      assert.match(String(page.headers['content-type']), /^text\/html/);
      assert.match(page.text, /^<!doctype html>/);
      assert.match(page.text, /Lifecycle tracking/);
      assert.match(page.text, /4 \(80\.0 %\)/);
      assert.match(page.text, /EC P-384<\/td><td>1</);
      assert.equal((page.text.match(/<table>/g) ?? []).length, (page.text.match(/<\/table>/g) ?? []).length);
      assert.doesNotMatch(page.text, /<script/i);
    });
  });
}

for (const target of dbTargets) {
  describe(`GET /v1/posture judges where the KEK and the backups are kept, on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    const dataDir = mkdtempSync(join(tmpdir(), 'mqttca-posture-'));
    // /dev/shm is a filesystem of its own (tmpfs) on Linux: the backups go to another filesystem than the store.
    const backupDir = mkdtempSync('/dev/shm/mqttca-posture-backups-');

    before(async () => {
      assert.notEqual(
        deviceOf(backupDir),
        deviceOf(dataDir),
        'this test needs /dev/shm on another filesystem than the temporary directory',
      );
      // The KEK file beside the store, as `mqtt-ca init` leaves it (DATA_DIR/kek).
      writeFileSync(join(dataDir, 'kek'), randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
      ({ svc, api, keys } = await makeApiService(target, {
        env: { DATA_DIR: dataDir, MQTT_CA_KEK: '', MQTT_CA_KEK_FILE: join(dataDir, 'kek'), BACKUP_DIR: backupDir },
      }));
    });
    after(async () => {
      await svc?.dispose();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(backupDir, { recursive: true, force: true });
    });

    it("a KEK file on the store's filesystem is not data-at-rest encryption, unchecked CRLs are not current, and a fresh backup on another filesystem is a backup system", async () => {
      const auth = { Authorization: `Bearer ${keys.auditor}` };
      const first = (await api.get('/v1/posture').set(auth).expect(200)).body;
      const atRest = outcomeOf(first, 'Data-at-rest encryption');
      assert.equal(atRest.status, 'unmet');
      assert.match(atRest.evidence, /KEK file .*\/kek .* same filesystem as the store/);
      assert.equal(outcomeOf(first, 'Backup systems').status, 'unmet', 'no backup yet');
      // No revocation since the start: revoke-to-visible is not observed, so not partial.
      const revoke = outcomeOf(first, 'Revoke lost and/or compromised certificates');
      assert.equal(revoke.status, 'unmet');
      assert.match(revoke.evidence, /^not observed/);

      // The CRL watch has not run yet: nothing says the CRLs are current.
      const crls = outcomeOf(first, 'Revocation information current');
      assert.equal(crls.status, 'unmet');
      assert.match(crls.evidence, /^not observed/);

      await svc.crlWatch.check();
      assert.equal(outcomeOf((await api.get('/v1/posture').set(auth).expect(200)).body, 'Revocation information current').status, 'met');
      await svc.backups.create({ actor: 'test' });
      const backup = outcomeOf((await api.get('/v1/posture').set(auth).expect(200)).body, 'Backup systems');
      assert.equal(backup.status, 'met');
      assert.match(backup.evidence, /another filesystem than the store/);
    });
  });
}

for (const target of dbTargets) {
  describe(`GET /v1/posture's crypto inventory, by the key type issuance records, on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    const clock = new ManualClock(new Date());
    const as = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const certs: Record<string, Serial> = {};
    const keyTypeOf = async (serial: Serial) =>
      (
        (await svc
          .db('certificates')
          .select('key_type')
          .where({ serial: serialToBytes(serial) })
          .first()) as { key_type: string | null }
      ).key_type;
    const inventory = async (): Promise<Record<string, number>> =>
      (await api.get('/v1/posture?fresh=true').set(as('auditor')).expect(200)).body.figures.crypto.certificatesByKey;
    /** The inventory as it was taken before migration 0029: every issued, unexpired end-entity certificate's DER read. */
    const fromEveryDer = async () => {
      const rows = (await svc
        .db('certificates')
        .select('der')
        .where('status', 'issued')
        .andWhereNot('profile', 'ca')
        .andWhere('not_after', '>', clock.now())) as { der: Uint8Array }[];
      const out: Record<string, number> = {};
      for (const r of rows) {
        const k = keyTypeLabel(spkiOfCertificate(r.der));
        out[k] = (out[k] ?? 0) + 1;
      }
      return out;
    };
    let before0: Record<string, number>;

    before(async () => {
      ({ svc, api, keys } = await makeApiService(target, { clock }));
      // Before any certificate of this test: the service's own (its OCSP responders').
      before0 = await inventory();
      const issue = async (name: string, keyArgs: readonly string[]) => {
        await api.post('/v1/devices').set(as('admin')).send({ id: name, kind: 'client' }).expect(201);
        const { csrPem } = opensslCsr([...keyArgs], `/CN=${name}`);
        const r = await api.post('/v1/certificates').set(as('admin')).send({ profile: 'device', deviceId: name, csr: csrPem }).expect(201);
        certs[name] = r.body.serial as Serial;
      };
      await issue('inv-p256', KEY_ARGS.p256);
      await issue('inv-ed25519', KEY_ARGS.ed25519);
      await issue('inv-rsa', KEY_ARGS.rsa2048);
      await issue('inv-p256-revoked', KEY_ARGS.p256);
      await issue('inv-p384-expired', KEY_ARGS.p384);
      await issue('inv-ed25519-old-expired', KEY_ARGS.ed25519);
      await api
        .post(`/v1/certificates/${certs['inv-p256-revoked']}/revoke`)
        .set(as('operator'))
        .send({ reason: 'keyCompromise' })
        .expect(200);
      const now = clock.now().getTime();
      for (const name of ['inv-p384-expired', 'inv-ed25519-old-expired'])
        await svc
          .db('certificates')
          .where({ serial: serialToBytes(certs[name]!) })
          .update({ not_before: new Date(now - 400 * DAY), not_after: new Date(now - DAY) });
    });
    after(async () => {
      await svc?.dispose();
    });

    it("records each certificate's key type as issued, as the inventory names it, CA certificates included", async () => {
      assert.equal(await keyTypeOf(certs['inv-p256']!), 'EC P-256');
      assert.equal(await keyTypeOf(certs['inv-ed25519']!), 'Ed25519');
      assert.equal(await keyTypeOf(certs['inv-rsa']!), 'RSA 2048');
      assert.equal(await keyTypeOf(certs['inv-p384-expired']!), 'EC P-384');
      const rows = (await svc.db('certificates').select('der', 'key_type', 'profile').where('status', 'issued')) as {
        der: Uint8Array;
        key_type: string | null;
        profile: string;
      }[];
      assert.ok(
        rows.some((r) => r.profile === 'ca'),
        "the issuing CA's certificate is a row of the table",
      );
      for (const r of rows) assert.equal(r.key_type, keyTypeLabel(spkiOfCertificate(r.der)), `${r.profile}: the label of its DER`);
    });

    it('counts issued, unexpired certificates by key type, not the revoked or expired', async () => {
      const got = await inventory();
      const want = { ...before0 };
      for (const k of ['EC P-256', 'Ed25519', 'RSA 2048']) want[k] = (want[k] ?? 0) + 1;
      assert.deepEqual(got, want);
      assert.deepEqual(got, await fromEveryDer());
    });

    it('reads the DER of rows with no key type recorded (issued before migration 0029), and still leaves out the revoked and expired', async () => {
      const old = ['inv-rsa', 'inv-p256-revoked', 'inv-ed25519-old-expired'].map((n) => serialToBytes(certs[n]!));
      await svc.db('certificates').whereIn('serial', old).update({ key_type: null });
      const got = await inventory();
      const want = { ...before0 };
      for (const k of ['EC P-256', 'Ed25519', 'RSA 2048']) want[k] = (want[k] ?? 0) + 1;
      assert.deepEqual(got, want);
      assert.deepEqual(got, await fromEveryDer());
      // Every row old: the whole inventory comes from the DER, the same.
      await svc.db('certificates').update({ key_type: null });
      assert.deepEqual(await inventory(), want);
    });

    it("pages through rows with no key type once each, whatever their notAfter's microseconds", async () => {
      // Five old rows whose notAfter falls in the same millisecond (a Date cannot tell them apart).
      const names = ['inv-p256', 'inv-ed25519', 'inv-rsa', 'inv-p256-b', 'inv-rsa-b'];
      for (const name of ['inv-p256-b', 'inv-rsa-b']) {
        await api.post('/v1/devices').set(as('admin')).send({ id: name, kind: 'client' }).expect(201);
        const { csrPem } = opensslCsr([...(name === 'inv-rsa-b' ? KEY_ARGS.rsa2048 : KEY_ARGS.p256)], `/CN=${name}`);
        const r = await api.post('/v1/certificates').set(as('admin')).send({ profile: 'device', deviceId: name, csr: csrPem }).expect(201);
        certs[name] = r.body.serial as Serial;
      }
      const at = new Date(clock.now().getTime() + 100 * DAY).toISOString();
      for (const [i, name] of [...names].reverse().entries())
        await svc.db.raw(
          `update certificates set key_type = null, not_after = ?::timestamptz + ? * interval '1 microsecond' where serial = ?`,
          [at, i * 100, serialToBytes(certs[name]!)],
        );
      const store = new PostureStore();
      const seen: string[] = [];
      let after: UnlabelledCursor | null = null;
      let pages = 0;
      do {
        const page = await store.unlabelledCertificates(svc.db, clock.now(), after, 2);
        for (const r of page.rows) seen.push(keyTypeLabel(spkiOfCertificate(r.der)));
        after = page.next;
        pages++;
      } while (after && pages < 100);
      const valid = await fromEveryDer();
      assert.equal(
        seen.length,
        Object.values(valid).reduce((a, b) => a + b, 0),
        'each unexpired, issued row once',
      );
      assert.deepEqual(await inventory(), valid);
    });

    it('reuses the fleet-wide counts for POSTURE_FLEET_COUNTS_MAX_AGE_SECONDS (30), says when it counted them, and counts anew when asked or once they are older', async () => {
      const get = async (q = '') => (await api.get(`/v1/posture${q}`).set(as('auditor')).expect(200)).body;
      const counted = await get('?fresh=true');
      assert.equal(counted.fleetCountedAt, counted.generatedAt, 'counted for this report');
      const issue = async (name: string) => {
        await api.post('/v1/devices').set(as('admin')).send({ id: name, kind: 'client' }).expect(201);
        const { csrPem } = opensslCsr([...KEY_ARGS.p384], `/CN=${name}`);
        await api.post('/v1/certificates').set(as('admin')).send({ profile: 'device', deviceId: name, csr: csrPem }).expect(201);
      };
      await issue('inv-p384-later');
      await svc.incidents.open(
        { kind: 'lost-device', title: 'meter inv-p384-later lost', targets: { devices: ['inv-p384-later'] } },
        { actor: 'test' },
      );
      clock.advance(29_000);
      const reused = await get();
      assert.equal(reused.fleetCountedAt, counted.fleetCountedAt, 'the same count, 29 s later');
      assert.notEqual(reused.generatedAt, counted.generatedAt);
      assert.deepEqual(reused.figures.crypto.certificatesByKey, counted.figures.crypto.certificatesByKey);
      assert.deepEqual(reused.figures.devices, counted.figures.devices);
      assert.equal(reused.figures.openIncidents.total, counted.figures.openIncidents.total + 1, 'incidents are read for every report');
      clock.advance(1_000);
      const recounted = await get();
      assert.equal(recounted.fleetCountedAt, recounted.generatedAt, 'counted anew at 30 s');
      const p384 = (r: { figures: { crypto: { certificatesByKey: Record<string, number> } } }) =>
        r.figures.crypto.certificatesByKey['EC P-384'] ?? 0;
      assert.equal(p384(recounted), p384(counted) + 1);
      await issue('inv-p384-fresh');
      assert.equal(p384(await get()), p384(recounted), 'reused');
      const fresh = await get('?fresh=true');
      assert.equal(p384(fresh), p384(recounted) + 1, '?fresh=true counts anew');
      assert.equal(fresh.fleetCountedAt, fresh.generatedAt);
      // Reports asked at once share one count.
      clock.advance(60_000);
      const store = svc.posture['store'];
      const fleet = store.fleet.bind(store);
      let counts = 0;
      let inFlight = 0;
      let most = 0;
      store.fleet = async (...a) => {
        counts++;
        most = Math.max(most, ++inFlight);
        try {
          return await fleet(...a);
        } finally {
          inFlight--;
        }
      };
      try {
        await Promise.all([get(), get(), get()]);
        assert.equal(counts, 1);
        // Fresh counts asked at once: one runs at a time (those who ask meanwhile share the next), however many ask.
        counts = 0;
        await Promise.all(Array.from({ length: 6 }, () => get('?fresh=true')));
        assert.ok(counts >= 1, 'counted');
        assert.equal(most, 1, 'one count at a time');
      } finally {
        store.fleet = fleet;
      }
      // What may ask for a count anew: the roles that read the posture, with a boolean.
      await api.get('/v1/posture?fresh=true').set(as('provisioner')).expect(403);
      const bad = await api.get('/v1/posture?fresh=yes%00').set(as('auditor')).expect(400);
      assert.match(bad.headers['content-type'] ?? '', /application\/problem\+json/);
    });
  });
}
