import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import { generateKeyPairSync } from 'node:crypto';
import { enrollWithDeviceToken } from '../helpers/enroll.js';

const p256Spki = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });

type Agent = ReturnType<typeof request>;

for (const target of dbTargets) {
  describe(`revocation API on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    let issuing: string;
    const issuingId = () => issuing;
    before(async () => {
      // Every response is checked against openapi.yaml by the validator (a mismatch is a 500).
      // The bulk revocations here are direct (1,500 at once): the two-person rule above a threshold is test/e2e/approvals-api.test.ts.
      ({ svc, api, keys, issuingId: issuing } = await makeApiService(target, { env: { BULK_REVOKE_APPROVAL_THRESHOLD: '0' } }));
    });
    after(async () => svc?.dispose());

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const enroll = async (deviceId: string): Promise<string> => {
      return enrollWithDeviceToken(api, keys.admin, deviceId);
    };
    const device = async (id: string) => (await api.get(`/v1/devices/${id}`).set(auth('auditor')).expect(200)).body;
    const trail = async (targetType: string, targetId: string) =>
      (await api.get('/v1/audit').query({ targetType, targetId }).set(auth('auditor')).expect(200)).body.items
        .map((e: { action: string }) => e.action)
        .reverse();

    it('puts a certificate on hold, which suspends its device, and releases it', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rv-hold', kind: 'client' }).expect(201);
      const serial = await enroll('rv-hold');
      const held = await api
        .post(`/v1/certificates/${serial}/revoke`)
        .set(auth('operator'))
        .send({ reason: 'certificateHold' })
        .expect(200);
      assert.equal(held.headers['revocation-changed'], 'true');
      assert.equal(held.body.status, 'revoked');
      assert.equal(held.body.revocation.reason, 'certificateHold');
      assert.equal((await device('rv-hold')).status, 'suspended');
      // Idempotent: a second hold changes nothing.
      const again = await api
        .post(`/v1/certificates/${serial}/revoke`)
        .set(auth('operator'))
        .send({ reason: 'certificateHold' })
        .expect(200);
      assert.equal(again.headers['revocation-changed'], 'false');
      assert.equal(again.body.revocation.revokedAt, held.body.revocation.revokedAt);

      const released = await api.post(`/v1/certificates/${serial}/release`).set(auth('operator')).expect(200);
      assert.equal(released.headers['revocation-changed'], 'true');
      assert.equal(released.body.status, 'issued');
      assert.equal(released.body.revocation, null);
      assert.equal((await device('rv-hold')).status, 'active');
      assert.equal(
        (await api.post(`/v1/certificates/${serial}/release`).set(auth('operator')).expect(200)).headers['revocation-changed'],
        'false',
      );
      assert.deepEqual(await trail('certificate', serial), ['certificate.issued', 'certificate.revoked', 'certificate.released']);
      assert.deepEqual((await trail('device', 'rv-hold')).slice(-3), ['device.activated', 'device.suspended', 'device.reactivated']);
    });

    it('revokes for key compromise: the device is revoked and cannot enroll again until re-admitted', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rv-kc', kind: 'client' }).expect(201);
      const serial = await enroll('rv-kc');
      const spareToken = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId: 'rv-kc' }).expect(201)).body as {
        id: string;
        token: string;
      };
      const spare = spareToken.token;
      const invalidityDate = new Date(Date.now() - 30_000).toISOString();
      const res = await api
        .post(`/v1/certificates/${serial}/revoke`)
        .set(auth('admin'))
        .send({ reason: 'keyCompromise', invalidityDate })
        .expect(200);
      assert.deepEqual([res.body.revocation.reason, res.body.revocation.invalidityDate], ['keyCompromise', invalidityDate]);
      assert.equal((await device('rv-kc')).status, 'revoked');
      // The first revocation stands: another reason changes nothing.
      const again = await api.post(`/v1/certificates/${serial}/revoke`).set(auth('operator')).send({ reason: 'superseded' }).expect(200);
      assert.deepEqual([again.headers['revocation-changed'], again.body.revocation.reason], ['false', 'keyCompromise']);
      assertProblem(await api.post(`/v1/certificates/${serial}/release`).set(auth('operator')), 409);

      // A token handed out before the revocation no longer works, and no new one is given.
      assertProblem(
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${spare}` })
          .send({ csr: p256Csr('rv-kc').pem }),
        403,
      );
      assertProblem(await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId: 'rv-kc' }), 400);
      assert.equal((await api.get('/v1/certificates').query({ deviceId: 'rv-kc' }).set(auth('auditor')).expect(200)).body.items.length, 1);

      // An operator re-admits it: registered again, it takes a new token and enrolls; the old certificate stays revoked.
      assertProblem(await api.post('/v1/devices/rv-kc/readmit').set(auth('provisioner')), 403);
      const readmitted = await api.post('/v1/devices/rv-kc/readmit').set(auth('operator')).expect(200);
      assert.equal(readmitted.body.status, 'registered');
      // The token from before the revocation was voided with the re-admission: it may have leaked with the device.
      assertProblem(
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${spare}` })
          .send({ csr: p256Csr('rv-kc').pem }),
        401,
        /revoked/,
      );
      const fresh = await enroll('rv-kc');
      assert.notEqual(fresh, serial);
      assert.equal((await device('rv-kc')).status, 'active');
      assert.equal((await api.get(`/v1/certificates/${serial}`).set(auth('auditor')).expect(200)).body.status, 'revoked');
      assertProblem(await api.post('/v1/devices/rv-kc/readmit').set(auth('operator')), 409);
      assertProblem(await api.post('/v1/devices/nobody/readmit').set(auth('operator')), 404);
      assert.deepEqual((await trail('device', 'rv-kc')).slice(-3), ['device.revoked', 'device.readmitted', 'device.activated']);
      assert.equal((await trail('enrollment-token', spareToken.id)).at(-1), 'enrollment-token.revoked');
    });

    it('makes a hold permanent, keeping the time trust ended', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rv-perm', kind: 'client' }).expect(201);
      const serial = await enroll('rv-perm');
      const held = (
        await api.post(`/v1/certificates/${serial}/revoke`).set(auth('operator')).send({ reason: 'certificateHold' }).expect(200)
      ).body;
      const perm = await api
        .post(`/v1/certificates/${serial}/revoke`)
        .set(auth('operator'))
        .send({ reason: 'privilegeWithdrawn' })
        .expect(200);
      assert.deepEqual([perm.headers['revocation-changed'], perm.body.revocation.reason], ['true', 'privilegeWithdrawn']);
      assert.equal(perm.body.revocation.revokedAt, held.revocation.revokedAt);
      assert.equal((await device('rv-perm')).status, 'revoked');
      assert.deepEqual(await trail('certificate', serial), [
        'certificate.issued',
        'certificate.revoked',
        'certificate.hold-made-permanent',
      ]);
    });

    it('revoking a replaced certificate leaves the device alone; superseded never changes it', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rv-old', kind: 'client' }).expect(201);
      const first = await enroll('rv-old');
      const second = await enroll('rv-old');
      const res = await api
        .post(`/v1/certificates/${first}/revoke`)
        .set(auth('operator'))
        .send({ reason: 'affiliationChanged' })
        .expect(200);
      assert.equal(res.headers['also-revoked'], '0');
      assert.equal((await device('rv-old')).status, 'active');
      await api.post(`/v1/certificates/${second}/revoke`).set(auth('operator')).send({ reason: 'superseded' }).expect(200);
      assert.equal((await device('rv-old')).status, 'active');
    });

    it('keyCompromise of a replaced certificate takes the device: its current certificate is revoked with it, and the device', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rv-kc-old', kind: 'client' }).expect(201);
      const first = await enroll('rv-kc-old');
      const second = await enroll('rv-kc-old');
      const res = await api.post(`/v1/certificates/${first}/revoke`).set(auth('operator')).send({ reason: 'keyCompromise' }).expect(200);
      assert.deepEqual([res.headers['revocation-changed'], res.headers['also-revoked']], ['true', '1']);
      const current = (await api.get(`/v1/certificates/${second}`).set(auth('auditor')).expect(200)).body;
      assert.deepEqual([current.status, current.revocation.reason], ['revoked', 'keyCompromise']);
      assert.equal((await device('rv-kc-old')).status, 'revoked');
      assert.deepEqual(await trail('certificate', second), ['certificate.issued', 'certificate.revoked']);
      // Said again, nothing more is left to take.
      assert.equal(
        (await api.post(`/v1/certificates/${first}/revoke`).set(auth('operator')).send({ reason: 'keyCompromise' }).expect(200)).headers[
          'also-revoked'
        ],
        '0',
      );
    });

    it('two key compromises of one device at the same time both succeed (the set is locked in one order: no deadlock)', async () => {
      for (let round = 0; round < 5; round++) {
        const deviceId = `rv-kc-race-${round}`;
        const certs = [];
        for (let i = 0; i < 3; i++)
          certs.push(await svc.issuance.issue({ profile: 'device', deviceId, subjectPublicKeyInfo: p256Spki() }, { actor: 'test' }));
        const outs = await Promise.all(certs.map((c) => svc.revocations.revoke(c.serial, { reason: 'keyCompromise' }, { actor: 'test' })));
        assert.equal(
          outs.reduce((n, o) => n + (o.changed ? 1 : 0) + o.alsoRevoked.length, 0),
          3,
          'each certificate revoked once',
        );
        for (const c of certs) assert.equal((await svc.certificates.get(c.serial)).revocation?.reason, 'keyCompromise');
      }
    });

    it('refuses bad input and the wrong callers with problem+json', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rv-bad', kind: 'client' }).expect(201);
      const serial = await enroll('rv-bad');
      assertProblem(await api.post(`/v1/certificates/${serial}/revoke`).set(auth('operator')).send({ reason: 'lostIt' }), 400);
      assertProblem(await api.post(`/v1/certificates/${serial}/revoke`).set(auth('operator')).send({}), 400);
      assertProblem(
        await api.post(`/v1/certificates/${serial}/revoke`).set(auth('operator')).send({ reason: 'keyCompromise', extra: 1 }),
        400,
      );
      assertProblem(
        await api
          .post(`/v1/certificates/${serial}/revoke`)
          .set(auth('operator'))
          .send({ reason: 'keyCompromise', invalidityDate: 'yesterday' }),
        400,
      );
      const future = new Date(Date.now() + 86_400_000).toISOString();
      assertProblem(
        await api.post(`/v1/certificates/${serial}/revoke`).set(auth('operator')).send({ reason: 'keyCompromise', invalidityDate: future }),
        400,
      );
      assertProblem(
        await api.post(`/v1/certificates/${serial}/revoke`).set(auth('operator')).type('application/json').send('{"reason":'),
        400,
      );
      assertProblem(
        await api
          .post(`/v1/certificates/${'ab'.repeat(16)}/revoke`)
          .set(auth('operator'))
          .send({ reason: 'keyCompromise' }),
        404,
      );
      assertProblem(await api.post('/v1/certificates/XYZ/revoke').set(auth('operator')).send({ reason: 'keyCompromise' }), 400);
      assertProblem(await api.post(`/v1/certificates/${serial}/revoke`).set(auth('auditor')).send({ reason: 'keyCompromise' }), 403);
      assertProblem(await api.post(`/v1/certificates/${serial}/revoke`).set(auth('provisioner')).send({ reason: 'keyCompromise' }), 403);
      assertProblem(await api.post(`/v1/certificates/${serial}/revoke`).send({ reason: 'keyCompromise' }), 401);
      // Releasing a certificate that is not on hold changes nothing.
      assert.equal(
        (await api.post(`/v1/certificates/${serial}/release`).set(auth('operator')).expect(200)).headers['revocation-changed'],
        'false',
      );
      // None of the refusals changed anything.
      const cert = (await api.get(`/v1/certificates/${serial}`).set(auth('auditor')).expect(200)).body;
      assert.deepEqual([cert.status, cert.revocation], ['issued', null]);
      assert.deepEqual(await trail('certificate', serial), ['certificate.issued']);
    });

    describe('bulk', () => {
      const ctx = { actor: 'test' };
      const issueLot = async (lot: string, n: number) => {
        const ids = Array.from({ length: n }, (_, i) => `${lot.toLowerCase()}-${String(i).padStart(4, '0')}`);
        await svc.devices.importManifest(
          ids.map((id) => ({ id, kind: 'client' as const })),
          ctx,
          { lot },
        );
        const issued = await svc.issuance.issueBatch(
          ids.map((deviceId) => ({ profile: 'device' as const, deviceId, subjectPublicKeyInfo: p256Spki() })),
          ctx,
        );
        return issued.map((c) => c.serial); // in device order
      };
      const statuses = async (serials: string[]) =>
        (
          await svc
            .db('certificates')
            .whereIn(
              'serial',
              serials.map((x) => Buffer.from(x, 'hex')),
            )
            .select('status')
        ).map((r: { status: string }) => r.status);
      const bulk = (body: Record<string, unknown>, role: Role = 'operator') => api.post('/v1/revocations').set(auth(role)).send(body);

      it('revokes a whole production lot in one request: a dry run first, then for real, then idempotently', async () => {
        const lotA = await issueLot('BULK-A', 1500);
        await issueLot('BULK-B', 5);
        const crlBefore = (await svc.crls.current(issuingId()))!.crlNumber;
        const dry = (await bulk({ selector: { lot: 'BULK-A' }, reason: 'keyCompromise', dryRun: true }).expect(200)).body;
        assert.deepEqual([dry.dryRun, dry.revoked, dry.alreadyRevoked, dry.truncated], [true, 1500, 0, true]);
        assert.deepEqual(dry.serials, [...lotA].sort().slice(0, 1000));
        assert.deepEqual(new Set(await statuses(lotA)), new Set(['issued']));
        assert.equal((await svc.crls.current(issuingId()))!.crlNumber, crlBefore);

        const done = (await bulk({ selector: { lot: 'BULK-A' }, reason: 'keyCompromise' }).expect(200)).body;
        assert.deepEqual([done.dryRun, done.revoked, done.alreadyRevoked], [false, 1500, 0]);
        assert.deepEqual(new Set(await statuses(lotA)), new Set(['revoked']));
        const lotDevices = await svc.db('devices').where({ lot: 'BULK-A' }).select('status');
        assert.deepEqual(new Set(lotDevices.map((d: { status: string }) => d.status)), new Set(['revoked']));
        assert.equal(Number((await svc.db('devices').where({ lot: 'BULK-B', status: 'active' }).count({ n: 'id' }))[0]!.n), 5);
        await svc.crls.settled();
        const crl = (await svc.crls.current(issuingId()))!;
        assert.ok(crl.crlNumber > crlBefore);
        assert.ok(crl.entries >= 1500);
        const audited = await svc.db('audit_log').where({ action: 'certificate.revoked' }).whereIn('target_id', lotA).count({ n: 'seq' });
        assert.equal(Number(audited[0]!.n), 1500);

        const again = (await bulk({ selector: { lot: 'BULK-A' }, reason: 'keyCompromise' }).expect(200)).body;
        assert.deepEqual([again.revoked, again.alreadyRevoked, again.serials], [0, 1500, []]);
      });

      it('selects by serials, devices, CA and issue-time window together', async () => {
        const lot = await issueLot('BULK-C', 4);
        // Serials of devices 0-2, device ids 0-1: only the two in both lists are taken.
        const after = new Date(Date.now() - 60_000).toISOString();
        const res = (
          await bulk({
            selector: { serials: lot.slice(0, 3), deviceIds: ['bulk-c-0000', 'bulk-c-0001'], caId: issuingId(), issuedAfter: after },
            reason: 'superseded',
          }).expect(200)
        ).body;
        assert.equal(res.revoked, 2);
        const revoked = await svc
          .db('certificates')
          .whereIn(
            'serial',
            lot.map((x) => Buffer.from(x, 'hex')),
          )
          .andWhere({ status: 'revoked' })
          .select('device_id');
        assert.deepEqual(revoked.map((r: { device_id: string }) => r.device_id).sort(), ['bulk-c-0000', 'bulk-c-0001']);
        // superseded leaves the devices as they are.
        assert.equal((await device('bulk-c-0000')).status, 'active');
        const none = (
          await bulk({
            selector: { lot: 'BULK-C', issuedBefore: new Date(Date.now() - 3_600_000).toISOString() },
            reason: 'superseded',
          }).expect(200)
        ).body;
        assert.equal(none.revoked, 0);
      });

      it("revokes a certificate's whole renewal lineage, and nothing beside it", async () => {
        await svc.devices.importManifest(
          [
            { id: 'lineage-1', kind: 'client' },
            { id: 'lineage-2', kind: 'client' },
          ],
          ctx,
          { lot: 'LIN' },
        );
        const a = await svc.issuance.issue({ profile: 'device', deviceId: 'lineage-1', subjectPublicKeyInfo: p256Spki() }, ctx);
        const b = await svc.issuance.issue(
          { profile: 'device', deviceId: 'lineage-1', subjectPublicKeyInfo: p256Spki(), renews: Buffer.from(a.serial, 'hex') },
          ctx,
        );
        const c = await svc.issuance.issue(
          { profile: 'device', deviceId: 'lineage-1', subjectPublicKeyInfo: p256Spki(), renews: Buffer.from(b.serial, 'hex') },
          ctx,
        );
        const other = await svc.issuance.issue({ profile: 'device', deviceId: 'lineage-2', subjectPublicKeyInfo: p256Spki() }, ctx);
        const res = (await bulk({ selector: { lineageOf: b.serial }, reason: 'privilegeWithdrawn' }).expect(200)).body;
        assert.deepEqual(res.serials, [a.serial, b.serial, c.serial].sort());
        assert.deepEqual(await statuses([other.serial]), ['issued']);
        assert.equal((await device('lineage-1')).status, 'revoked');
      });

      it('refuses a bulk revocation without a selector, bad selectors and the wrong callers', async () => {
        assertProblem(await bulk({ selector: {}, reason: 'keyCompromise' }), 400);
        assertProblem(await bulk({ reason: 'keyCompromise' }), 400);
        assertProblem(await bulk({ selector: { serials: [] }, reason: 'keyCompromise' }), 400);
        assertProblem(await bulk({ selector: { serials: ['XYZ'] }, reason: 'keyCompromise' }), 400);
        assertProblem(await bulk({ selector: { everything: true }, reason: 'keyCompromise' }), 400);
        assertProblem(await bulk({ selector: { lot: 'BULK-B' }, reason: 'oops' }), 400);
        assertProblem(
          await bulk({ selector: { lot: 'BULK-B' }, reason: 'keyCompromise', invalidityDate: new Date(Date.now() + 60_000).toISOString() }),
          400,
        );
        assertProblem(await bulk({ selector: { lot: 'BULK-B' }, reason: 'keyCompromise' }, 'auditor'), 403);
        assertProblem(await bulk({ selector: { lot: 'BULK-B' }, reason: 'keyCompromise' }, 'provisioner'), 403);
        assertProblem(await api.post('/v1/revocations').send({ selector: { lot: 'BULK-B' }, reason: 'keyCompromise' }), 401);
        assert.equal(Number((await svc.db('devices').where({ lot: 'BULK-B', status: 'active' }).count({ n: 'id' }))[0]!.n), 5);
      });
    });
  });
}
