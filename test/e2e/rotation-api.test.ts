import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { sign } from 'node:crypto';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { p256Csr, signedRenewalAuth, type TestCsr } from '../helpers/csr.js';
import { ManualClock } from '../../src/shared/clock.js';
import { webhookSignature } from '../../src/broker/webhook.js';
import { DeliveryIncomplete } from '../../src/rotate/renewals.js';
import { pickupSigningInput } from '../../src/enroll/device-certificate-auth.js';
import { createPrivateKey } from 'node:crypto';
import { run, tempDir, writeTemp } from '../helpers/openssl.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import type { Serial } from '../../src/shared/ids.js';

type Agent = ReturnType<typeof request>;
const DAY = 86_400_000;
const SECRET = 'webhook-secret-for-the-rotation-tests-0123456789';

/** A webhook receiver that checks every signature, as a fleet manager would; `status` is what it answers. */
async function webhookReceiver() {
  const received: { notices: { noticeId: string; deviceId: string; serial: string; deadline: string; renewUrl: string }[] }[] = [];
  const state = { status: 204, badSignatures: 0 };
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const ts = String(req.headers['x-mqttca-timestamp']);
      if (req.headers['x-mqttca-signature'] !== `sha256=${webhookSignature(SECRET, ts, body)}`) {
        state.badSignatures += 1;
        res.statusCode = 401;
        return res.end();
      }
      if (state.status < 300) received.push(JSON.parse(body));
      res.statusCode = state.status;
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hooks/renewals`;
  return { url, received, state, close: () => new Promise((r) => server.close(r)) };
}

for (const target of dbTargets) {
  describe(`rotation: policies, renewal planning and notices, expiry sweeps on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    let hook: Awaited<ReturnType<typeof webhookReceiver>>;
    const clock = new ManualClock(new Date('2026-03-01T00:00:00Z'));
    before(async () => {
      hook = await webhookReceiver();
      ({ svc, api, keys } = await makeApiService(target, {
        clock,
        env: { RENEWAL_WEBHOOK_URL: hook.url, RENEWAL_WEBHOOK_SECRET: SECRET },
      }));
    });
    after(async () => {
      await svc?.dispose();
      await hook?.close();
    });

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const enroll = async (
      deviceId: string,
      lot?: string,
    ): Promise<{ serial: Serial; csr: TestCsr; certificate: string; notAfter: string }> => {
      await api
        .post('/v1/devices')
        .set(auth('provisioner'))
        .send({ id: deviceId, kind: 'client', ...(lot ? { lot } : {}) })
        .expect(201);
      const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId }).expect(201)).body.token as string;
      const csr = p256Csr(deviceId);
      const body = (
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ csr: csr.pem })
          .expect(201)
      ).body;
      return { serial: body.serial, csr, certificate: body.certificate, notAfter: body.notAfter };
    };
    const renewSigned = (e: { csr: TestCsr; certificate: string }, deviceId: string) => {
      const next = p256Csr(deviceId);
      return api
        .post('/v1/renew')
        .set({ Authorization: signedRenewalAuth(e.certificate, e.csr.privateKey, clock.now().toISOString(), next.der) })
        .send({ csr: next.pem });
    };
    const notice = async (serial: string) => (await api.get(`/v1/renewal-notices/${serial}`).set(auth('auditor')).expect(200)).body;

    it('keeps rotation policies per profile and per lot, merges them, and refuses invalid ones with 400', async () => {
      const put = (scope: string, name: string, body: object, role: Role = 'operator') =>
        api.put(`/v1/rotation-policies/${scope}/${name}`).set(auth(role)).send(body);
      const created = await put('profile', 'device', { renewAtFraction: 0.5, graceDays: 10 }).expect(201);
      assert.equal(created.body.renewAtFraction, 0.5);
      assert.equal(created.body.updatedBy.startsWith('api-key:'), true);
      assert.equal((await put('profile', 'device', { renewAtFraction: 0.75, graceDays: 10 }).expect(200)).body.renewAtFraction, 0.75);
      await put('lot', 'lot-A', { renewDaysBefore: 45, sessionKeyOverlapHours: 2 }).expect(201);
      const eff = (
        await api.get('/v1/rotation-policies/effective').query({ profile: 'device', lot: 'lot-A' }).set(auth('auditor')).expect(200)
      ).body;
      assert.deepEqual(
        [eff.renewDaysBefore, eff.renewAtFraction, eff.graceDays, eff.sessionKeyOverlapHours, eff.notify, eff.from],
        [45, null, 10, 2, ['webhook'], { renewal: 'lot:lot-A', graceDays: 'profile:device', sessionKeys: 'lot:lot-A', notify: 'default' }],
      );
      const plain = (await api.get('/v1/rotation-policies/effective').query({ profile: 'broker' }).set(auth('auditor')).expect(200)).body;
      assert.deepEqual([plain.renewAtFraction, plain.graceDays, plain.from.renewal], [2 / 3, 7, 'default']);

      assertProblem(await put('profile', 'device', { renewAtFraction: 1.5 }), 400);
      assertProblem(await put('profile', 'device', { renewAtFraction: 0.5, renewDaysBefore: 3 }), 400, /not both/);
      assertProblem(await put('profile', 'ocsp-responder', { renewAtFraction: 0.5 }), 400, /profile must be one of/);
      assertProblem(await put('profile', 'device', { notify: ['mqtt'] }), 400, /not configured/);
      assertProblem(await put('lot', 'lot-B', { sessionKeyPeriodHours: 4, sessionKeyOverlapHours: 4 }), 400, /shorter than the period/);
      assertProblem(await put('lot', 'lot-A', { bogus: 1 }), 400);
      assertProblem(await put('lot', 'lot-A', { renewDaysBefore: 1 }, 'auditor'), 403);
      assertProblem(await put('lot', 'lot-A', { renewDaysBefore: 1 }, 'provisioner'), 403);
      assertProblem(await api.put('/v1/rotation-policies/lot/x').send({}), 401);

      const list = (await api.get('/v1/rotation-policies').set(auth('auditor')).expect(200)).body;
      assert.deepEqual(
        list.policies.map((p: { scope: string; name: string }) => `${p.scope}:${p.name}`),
        ['lot:lot-A', 'profile:device'],
      );
      assert.deepEqual(list.sinks, ['webhook']);
      await api.delete('/v1/rotation-policies/lot/lot-A').set(auth('operator')).expect(204);
      await api.delete('/v1/rotation-policies/profile/device').set(auth('operator')).expect(204);
      assertProblem(await api.get('/v1/rotation-policies/lot/lot-A').set(auth('auditor')), 404);
      assertProblem(await api.delete('/v1/rotation-policies/lot/lot-A').set(auth('operator')), 404);
      const trail = (
        await api.get('/v1/audit').query({ targetType: 'rotation-policy', targetId: 'profile:device' }).set(auth('auditor')).expect(200)
      ).body.items.map((e: { action: string }) => e.action);
      assert.deepEqual(trail.reverse(), ['rotation-policy.created', 'rotation-policy.updated', 'rotation-policy.deleted']);
    });

    it('plans one notice per due certificate (at 2/3 of its life, or per lot policy), even when two planners race, and delivers it by signed webhook', async () => {
      clock.set(new Date('2026-03-01T00:00:00Z'));
      const a = await enroll('rot-a');
      const b = await enroll('rot-b', 'lot-early');
      await api.put('/v1/rotation-policies/lot/lot-early').set(auth('operator')).send({ renewDaysBefore: 300 }).expect(201);
      // Day 100: only the lot with "300 days before expiry" is due (365-day certificates).
      clock.set(new Date(Date.parse('2026-03-01T00:00:00Z') + 100 * DAY));
      const [p1, p2] = await Promise.all([svc.renewals.plan(), svc.renewals.plan()]);
      assert.equal(p1.planned + p2.planned, 1);
      assert.deepEqual([...p1.batches, ...p2.batches].flat(), [b.serial]);
      assertProblem(await api.get(`/v1/renewal-notices/${a.serial}`).set(auth('auditor')), 404);
      assert.equal((await notice(b.serial)).state, 'pending');

      // Day 250: past 2/3 of the lifetime, the other is due too; b is not planned again, but its
      // job, unrun for so long, may have been lost with Redis: it is enqueued again (re-driven).
      clock.set(new Date(Date.parse('2026-03-01T00:00:00Z') + 250 * DAY));
      const p3 = await svc.renewals.plan();
      assert.deepEqual([p3.planned, p3.redriven], [1, 1]);
      assert.deepEqual(p3.batches, [[a.serial], [b.serial]]);

      // The receiver is down: the notice stays pending with the reason; the retry delivers it once.
      hook.state.status = 503;
      await assert.rejects(svc.renewals.deliver([a.serial, b.serial]), DeliveryIncomplete);
      const failed = await notice(a.serial);
      assert.deepEqual([failed.state, failed.attempts, failed.webhookSentAt], ['pending', 1, null]);
      assert.match(failed.lastError, /webhook .* answered 503/);
      hook.state.status = 204;
      assert.deepEqual(await svc.renewals.deliver([a.serial, b.serial]), { sent: 2 });
      assert.deepEqual(await svc.renewals.deliver([a.serial, b.serial]), { sent: 0 }, 'a redelivered job sends nothing again');
      const sent = await notice(a.serial);
      assert.deepEqual([sent.state, sent.attempts, sent.lastError, typeof sent.webhookSentAt], ['sent', 2, null, 'string']);
      const delivered = hook.received.flatMap((r) => r.notices);
      assert.deepEqual(delivered.map((n) => n.noticeId).sort(), [a.serial, b.serial].sort());
      const na = delivered.find((n) => n.serial === a.serial)!;
      assert.deepEqual([na.deviceId, na.deadline, na.renewUrl], ['rot-a', a.notAfter, 'http://ca.test:8080/v1/renew']);
      assert.equal(hook.state.badSignatures, 0);
      const actions = (await api.get('/v1/audit').query({ targetType: 'renewal-batch' }).set(auth('auditor')).expect(200)).body.items.map(
        (e: { action: string }) => e.action,
      );
      assert.deepEqual(actions.sort(), ['renewal.notified', 'renewal.planned', 'renewal.planned']);
    });

    it('supersedes a pending notice when the device renewed first, and plans none for the renewed certificate yet', async () => {
      clock.set(new Date('2026-03-01T00:00:00Z'));
      const c = await enroll('rot-c');
      clock.set(new Date(Date.parse('2026-03-01T00:00:00Z') + 250 * DAY));
      assert.deepEqual((await svc.renewals.plan()).batches.flat(), [c.serial]);
      const renewed = await renewSigned(c, 'rot-c').expect(201);
      const again = await svc.renewals.plan();
      assert.equal(again.superseded, 1);
      assert.equal(again.planned, 0, 'the new certificate is not due');
      assert.equal((await notice(c.serial)).state, 'superseded');
      const before = hook.received.length;
      assert.deepEqual(await svc.renewals.deliver([c.serial]), { sent: 0 });
      assert.equal(hook.received.length, before);
      assertProblem(await api.get(`/v1/renewal-notices/${renewed.body.serial}`).set(auth('auditor')), 404);
    });

    it('marks a certificate that reached expiry unrenewed as expired, with an alert, once; grace after expiry follows the policy', async () => {
      clock.set(new Date('2026-03-01T00:00:00Z'));
      const d = await enroll('rot-d', 'lot-strict');
      clock.set(new Date(Date.parse(d.notAfter) + DAY));
      const first = await svc.sweeps.certificates();
      assert.ok(first.expired >= 1);
      assert.deepEqual(await svc.sweeps.certificates(), { expired: 0 });
      const events = (await api.get('/v1/events').query({ kind: 'certificate-expired' }).set(auth('auditor')).expect(200)).body.items;
      const mine = events.filter((e: { subject: string }) => e.subject === 'rot-d');
      assert.equal(mine.length, 1);
      assert.equal(mine[0].details.serial, d.serial);
      const trail = (
        await api.get('/v1/audit').query({ targetType: 'certificate', targetId: d.serial }).set(auth('auditor')).expect(200)
      ).body.items.map((e: { action: string }) => e.action);
      assert.ok(trail.includes('certificate.expired'));

      // A lot with no grace may not renew with the expired certificate; the profile's 30 days apply once the lot policy goes.
      await api.put('/v1/rotation-policies/lot/lot-strict').set(auth('operator')).send({ graceDays: 0 }).expect(201);
      assertProblem(await renewSigned(d, 'rot-d'), 403, /0-day renewal grace/);
      await api.delete('/v1/rotation-policies/lot/lot-strict').set(auth('operator')).expect(204);
      await renewSigned(d, 'rot-d').expect(201);
    });

    it('marks enrollment tokens past their expiry, in the audit log, once', async () => {
      clock.set(new Date('2026-03-01T00:00:00Z'));
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rot-t', kind: 'client' }).expect(201);
      const t = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId: 'rot-t', expiresInSeconds: 3600 }).expect(201))
        .body;
      clock.advance(2 * 3600_000);
      const r = await svc.sweeps.tokens();
      assert.ok(r.expired >= 1);
      assert.deepEqual(await svc.sweeps.tokens(), { expired: 0 });
      const trail = (
        await api.get('/v1/audit').query({ targetType: 'enrollment-token', targetId: t.id }).set(auth('auditor')).expect(200)
      ).body.items.map((e: { action: string }) => e.action);
      assert.ok(trail.includes('enrollment-token.expired'));
    });

    it("gives session keys the period and overlap of the device's lot policy, else its profile's, else the defaults", async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rot-s', kind: 'client', lot: 'lot-keys' }).expect(201);
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rot-s2', kind: 'client' }).expect(201);
      await api
        .put('/v1/rotation-policies/lot/lot-keys')
        .set(auth('operator'))
        .send({ sessionKeyPeriodHours: 6, sessionKeyOverlapHours: 2 })
        .expect(201);
      await api.put('/v1/rotation-policies/profile/device').set(auth('operator')).send({ sessionKeyPeriodHours: 12 }).expect(201);
      assert.deepEqual(await svc.policies.forDevice(svc.db, 'rot-s'), { periodMs: 6 * 3600_000, overlapMs: 2 * 3600_000 });
      assert.deepEqual(await svc.policies.forDevice(svc.db, 'rot-s2'), { periodMs: 12 * 3600_000, overlapMs: 3600_000 });
      await api.delete('/v1/rotation-policies/profile/device').set(auth('operator')).expect(204);
      assert.deepEqual(await svc.policies.forDevice(svc.db, 'rot-s2'), { periodMs: 24 * 3600_000, overlapMs: 3600_000 });
    });

    it('stages the successor of a server-generated key, tells the device, and hands it over once to the certificate it renews', async () => {
      clock.set(new Date('2026-03-01T00:00:00Z'));
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rot-k', kind: 'client' }).expect(201);
      const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId: 'rot-k' }).expect(201)).body.token as string;
      const first = (
        await api
          .post('/v1/enroll/serverkeygen')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ password: 'first-pass-123', format: 'pkcs8' })
          .expect(201)
      ).body;
      const oldKey = createPrivateKey({ key: first.privateKey, passphrase: 'first-pass-123' });
      const oldDer = Buffer.from(first.certificate.replace(/-----[^-]+-----|\s/g, ''), 'base64');

      clock.set(new Date(Date.parse('2026-03-01T00:00:00Z') + 250 * DAY));
      const planned = await svc.renewals.plan();
      assert.ok(planned.batches.flat().includes(first.serial));
      const before = hook.received.length;
      await svc.renewals.deliver([first.serial]);
      const told = hook.received
        .slice(before)
        .flatMap((r) => r.notices as unknown as { type: string; serial: string; newSerial: string; pickupUrl: string }[]);
      assert.equal(told.length, 1);
      assert.deepEqual(
        [told[0]!.type, told[0]!.serial, told[0]!.pickupUrl],
        ['credential-staged', first.serial, 'http://ca.test:8080/v1/renew/staged'],
      );
      const next = (await api.get(`/v1/certificates/${told[0]!.newSerial}`).set(auth('auditor')).expect(200)).body;
      assert.deepEqual([next.renewedFrom, next.status, next.deviceId], [first.serial, 'issued', 'rot-k']);
      // Staging again (a retried job) makes nothing new; nor does a second plan supersede the notice it sent.
      assert.deepEqual(await svc.staged.stage(Buffer.from(first.serial, 'hex')), { serial: next.serial });
      assert.equal((await api.get('/v1/certificates').query({ deviceId: 'rot-k' }).set(auth('auditor')).expect(200)).body.items.length, 2);
      const sealed = (await svc.db.raw('select ciphertext from staged_credentials where renews = ?', [Buffer.from(first.serial, 'hex')]))
        .rows[0].ciphertext as Buffer;

      const password = 'second-pass-456';
      const pickup = (
        key = oldKey,
        signedAt = clock.now().toISOString(),
        input = pickupSigningInput(signedAt, { password, format: 'pkcs12' }),
      ) =>
        api
          .post('/v1/renew/staged')
          .set({
            Authorization: `MQTT-CA-Renewal cert="${oldDer.toString('base64')}", signed-at="${signedAt}", signature="${sign(null, input, { key, dsaEncoding: 'der' }).toString('base64')}"`,
          })
          .send({ password });
      assertProblem(await pickup(p256Csr().privateKey), 401, /does not verify/);
      assertProblem(await pickup(oldKey, new Date(clock.now().getTime() - 3600_000).toISOString()), 401, /stale/);
      // The signature covers the body: one over the time alone (the old scheme), or over another
      // password or format, cannot carry the pickup to a password of someone else's choosing.
      const at = clock.now().toISOString();
      assertProblem(await pickup(oldKey, at, Buffer.from(`mqtt-ca-staged-pickup\n${at}`)), 401, /does not verify/);
      assertProblem(
        await pickup(oldKey, at, pickupSigningInput(at, { password: 'the-device-own-pass', format: 'pkcs12' })),
        401,
        /does not verify/,
      );
      assertProblem(await pickup(oldKey, at, pickupSigningInput(at, { password, format: 'pkcs8' })), 401, /does not verify/);
      const got = await pickup().expect(200);
      assert.equal(got.headers['cache-control'], 'no-store');
      assert.equal(got.body.serial, next.serial);
      const dir = tempDir();
      const pem = run('openssl', [
        'pkcs12',
        '-in',
        writeTemp(dir, 'k.p12', Buffer.from(got.body.pkcs12, 'base64')),
        '-nodes',
        '-passin',
        'pass:second-pass-456',
      ]);
      assert.equal(pem.status, 0, pem.stderr);
      const keyFile = writeTemp(dir, 'k.pem', pem.stdout);
      const certPub = run('openssl', ['x509', '-in', writeTemp(dir, 'c.pem', got.body.certificate), '-noout', '-pubkey']).stdout;
      assert.equal(run('openssl', ['pkey', '-in', keyFile, '-pubout']).stdout, certPub, 'the key fits the new certificate');
      const pkcs8 = createPrivateKey(pem.stdout).export({ format: 'der', type: 'pkcs8' });
      assert.ok(!sealed.includes(pkcs8.subarray(-32)), 'the key was stored sealed, never in the clear');
      const wiped = (
        await svc.db.raw('select ciphertext, wrapped_dek, picked_up_at from staged_credentials where renews = ?', [
          Buffer.from(first.serial, 'hex'),
        ])
      ).rows[0];
      assert.deepEqual([wiped.ciphertext, wiped.wrapped_dek, wiped.picked_up_at !== null], [null, null, true]);
      // The same request signed anew (other ECDSA bytes, same content) is a replay; a new one finds the key gone.
      assertProblem(await pickup(), 401, /replay/);
      clock.advance(1);
      assertProblem(await pickup(), 409, /picked up/);
      const trail = (
        await api.get('/v1/audit').query({ targetType: 'certificate', targetId: next.serial }).set(auth('auditor')).expect(200)
      ).body.items.map((e: { action: string }) => e.action);
      assert.ok(trail.includes('credential.staged') && trail.includes('credential.picked-up'), trail.join());
      // A device that made its own key has nothing staged.
      const own = await enroll('rot-own');
      const ownAt = clock.now().toISOString();
      const ownDer = Buffer.from(own.certificate.replace(/-----[^-]+-----|\s/g, ''), 'base64');
      assertProblem(
        await api
          .post('/v1/renew/staged')
          .set({
            Authorization: `MQTT-CA-Renewal cert="${ownDer.toString('base64')}", signed-at="${ownAt}", signature="${sign('sha256', pickupSigningInput(ownAt, { password: 'second-pass-456', format: 'pkcs12' }), own.csr.privateKey).toString('base64')}"`,
          })
          .send({ password: 'second-pass-456' }),
        404,
      );
      assertProblem(await api.post('/v1/renew/staged').send({ password: 'second-pass-456' }), 401);
    });

    it('re-signs pre-signed OCSP responses past half their validity (housekeeping), so a poll after a quiet spell needs no signing', async () => {
      clock.set(new Date('2026-03-01T00:00:00Z'));
      const e = await enroll('rot-ocsp');
      const dir = tempDir();
      const issuerPem = (await api.get('/v1/cas').set(auth('auditor')).expect(200)).body.items.find(
        (c: { isDefaultIssuer?: boolean }) => c.isDefaultIssuer,
      ).certificate;
      const reqFile = `${dir}/req.der`;
      const r = run('openssl', [
        'ocsp',
        '-issuer',
        writeTemp(dir, 'issuer.pem', issuerPem),
        '-cert',
        writeTemp(dir, 'leaf.pem', e.certificate),
        '-no_nonce',
        '-reqout',
        reqFile,
      ]);
      assert.equal(r.status, 0, r.stderr);
      const { readFileSync } = await import('node:fs');
      await svc.ocsp.respond(readFileSync(reqFile));
      const thisUpdate = async () =>
        new Date(
          (await svc.db.raw('select this_update from ocsp_responses where serial = ?', [Buffer.from(e.serial, 'hex')])).rows[0].this_update,
        ).getTime();
      const signedAt = await thisUpdate();
      clock.advance(6 * 3600_000); // a quarter of the 24 h validity: not due
      assert.equal(await svc.ocsp.refreshDue(1000), 0);
      clock.advance(7 * 3600_000); // past half
      assert.ok((await svc.ocsp.refreshDue(1000)) >= 1);
      assert.ok((await thisUpdate()) > signedAt + 12 * 3600_000, 'the stored response was re-signed now');
      assert.equal(await svc.ocsp.refreshDue(1000), 0, 'nothing left to re-sign');
    });

    it('shows the job queues and their schedules (in-process without Redis)', async () => {
      const jobs = (await api.get('/v1/jobs').set(auth('auditor')).expect(200)).body;
      assert.equal(jobs.backend, 'in-process');
      const names = jobs.queues.map((q: { name: string }) => q.name);
      assert.deepEqual(names, ['housekeeping', 'renewal-notices']);
      const schedules = jobs.queues[0].schedules.map((s: { name: string }) => s.name);
      for (const n of [
        'plan-renewals',
        'crl-refresh',
        'ocsp-refresh',
        'responder-renewal',
        'service-identity-renewal',
        'intent-sweep',
        'certificate-expiry',
        'token-expiry',
        'session-key-rotation',
      ])
        assert.ok(schedules.includes(n), n);
      assertProblem(await api.get('/v1/jobs').set(auth('provisioner')), 403);
      assertProblem(await api.get('/admin/queues').set(auth('admin')), 404);
    });
  });
}
