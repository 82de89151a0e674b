import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { p256Csr } from '../helpers/csr.js';
import { ManualClock } from '../../src/shared/clock.js';
import { serialToBytes, type Serial } from '../../src/shared/ids.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

type Agent = Awaited<ReturnType<typeof makeApiService>>['api'];
const spki = (curve: 'P-256' | 'P-384') => generateKeyPairSync('ec', { namedCurve: curve }).publicKey.export({ format: 'der', type: 'spki' });
const DAY = 86_400_000;

for (const target of dbTargets) {
  describe(`GET /v1/posture on a seeded fleet, on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    const clock = new ManualClock(new Date());
    const as = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });

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
      const issue = (deviceId: string, curve: 'P-256' | 'P-384') => svc.issuance.issue({ profile: 'device', deviceId, subjectPublicKeyInfo: spki(curve) }, { actor: 'test' });
      await issue('pos-c1', 'P-256');
      const c2 = await issue('pos-c2', 'P-256');
      await issue('pos-c3', 'P-384');
      const c4 = await issue('pos-c4', 'P-256');
      const c5 = await issue('pos-c5', 'P-256');
      await svc.issuance.issue({ profile: 'broker', deviceId: 'pos-b1', commonName: 'pos-b1', dnsNames: ['mqtt.pos.example'], subjectPublicKeyInfo: spki('P-256') }, { actor: 'test' });
      // c2 revoked (a revoke-to-visible sample); c4 issued long ago (past its renewal point); c5 expired.
      await api.post(`/v1/certificates/${c2.serial}/revoke`).set(as('operator')).send({ reason: 'keyCompromise' }).expect(200);
      const now = clock.now().getTime();
      await svc.db('certificates').where({ serial: serialToBytes(c4.serial as Serial) }).update({ not_before: new Date(now - 2000 * DAY) });
      await svc.db('certificates').where({ serial: serialToBytes(c5.serial as Serial) }).update({ not_before: new Date(now - 400 * DAY), not_after: new Date(now - DAY) });
      await svc.backups.create({ actor: 'test' });
      await api.post('/v1/incidents').set(as('operator')).send({ kind: 'lost-device', title: 'meter lost in transit', targets: { devices: ['pos-c3'] } }).expect(201);
      await api.post('/v1/enroll').set({ Authorization: 'Bearer mqet_et_00000000000000000000_' + 'A'.repeat(43) }).send({ csr: p256Csr('pos-c1').pem }).expect(401);
    });
    after(async () => {
      await svc?.dispose();
    });

    it('reports the figures of the fleet as seeded', async () => {
      const r = (await api.get('/v1/posture').set(as('auditor')).expect(200)).body;
      const f = r.figures;
      assert.deepEqual(f.devices, { byStatus: { active: 5, revoked: 1 }, active: 5, activeWithValidCertificate: 4, validCertificateShare: 0.8, brokers: 1, brokersWithValidCertificate: 1 });
      assert.deepEqual(f.inventory, { modelShare: 1, firmwareShare: 0.6, siteShare: 0.8 });
      assert.deepEqual(f.renewal, { currentCertificates: 4, pastRenewalPoint: 1 });
      assert.deepEqual(f.crypto.certificatesByKey, { 'EC P-256': 3, 'EC P-384': 1 });
      const cas = (await svc.hierarchy.list()).filter((c) => c.status === 'active');
      assert.equal(Object.values(f.crypto.casByKey as Record<string, number>).reduce((a, b) => a + b, 0), cas.length);
      assert.equal(f.revocationVisible.count, 1);
      assert.ok(f.revocationVisible.p99Seconds >= f.revocationVisible.p50Seconds);
      assert.equal(f.lastBackupAgeHours, 0);
      assert.equal(f.openIncidents.total, 1);
      assert.deepEqual(f.openIncidents.byKind, { 'lost-device': 1 });
      assert.deepEqual(f.securityEvents24h, [{ kind: 'enrollment.token-invalid', severity: 'warning', count: 1 }]);
      assert.deepEqual(f.staleCrls, []);
    });

    it('rates each observed subcategory, a tier per function, and lists the gaps to the target widest first', async () => {
      const r = (await api.get('/v1/posture').set(as('operator')).expect(200)).body;
      const status = (sub: string) => r.outcomes.find((o: { subcategory: string }) => o.subcategory === sub)?.status;
      assert.equal(status('List of hardware devices'), 'met'); // model for 5 of 5
      assert.equal(status('Software inventory'), 'partial'); // firmware for 3 of 5
      assert.equal(status('Lifecycle tracking'), 'unmet'); // 80 % with a valid certificate
      assert.equal(status('Location of (client-side) end-devices'), 'partial'); // 4 of 5
      assert.equal(status('Authentication of the Server by the Clients'), 'met');
      assert.equal(status('Frequent session renegotiation (certificate renewal)'), 'unmet'); // 1 of 4 past
      assert.equal(status('Backup systems'), 'met');
      assert.equal(status('Disconnect suspicious or compromised end-devices'), 'unmet'); // no broker connector here
      assert.equal(status('Rate limiting and/or blocking'), 'met');
      // Identify: 2 met (devices, crypto suites) + 2 partial + 1 unmet = 3 of 5 → Repeatable.
      assert.deepEqual(r.current.identify, { tier: 3, name: 'Repeatable', met: 2, partial: 2, unmet: 1 });
      assert.deepEqual(r.target, { identify: 3, protect: 3, detect: 3, respond: 3, recover: 3 });
      for (const g of r.gaps) assert.ok(r.current[g.function].tier < r.target[g.function] && g.status !== 'met');

      await api.put('/v1/posture/target').set(as('admin')).send({ identify: 4, recover: 4 }).expect(200);
      const after = (await api.get('/v1/posture').set(as('auditor')).expect(200)).body;
      assert.deepEqual(after.target, { identify: 4, protect: 3, detect: 3, respond: 3, recover: 4 });
      const gapSizes = after.gaps.map((g: { targetTier: number; currentTier: number }) => g.targetTier - g.currentTier);
      assert.deepEqual(gapSizes, [...gapSizes].sort((a: number, b: number) => b - a), 'widest gap first');
      const identifyGaps = after.gaps.filter((g: { function: string }) => g.function === 'identify').map((g: { subcategory: string; status: string }) => `${g.status}:${g.subcategory}`);
      assert.deepEqual(identifyGaps, ['unmet:Lifecycle tracking', 'partial:Software inventory', 'partial:Location of (client-side) end-devices']);
      const audit = await svc.audit.list({ limit: 5, action: 'posture.target-set' });
      assert.equal(audit.items.length, 1);
    });

    it('refuses a bad target or the wrong role, and serves a readable HTML page', async () => {
      for (const bad of [{ identify: 5 }, { respond: 0 }, { everything: 3 }, {}]) await api.put('/v1/posture/target').set(as('admin')).send(bad).expect(400);
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
