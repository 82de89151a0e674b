import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem, servedCrlText } from '../helpers/http.js';
import { p256Csr, signedRenewalAuth, type TestCsr } from '../helpers/csr.js';
import { opensslVerify } from '../helpers/openssl.js';
import { ManualClock } from '../../src/shared/clock.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import type { Serial } from '../../src/shared/ids.js';

type Agent = ReturnType<typeof request>;
const DAY = 86_400_000;
const T0 = new Date('2026-03-01T00:00:00Z');

/** A webhook receiver that takes every notice (signatures are checked by the rotation tests). */
async function webhookReceiver() {
  const received: { noticeId: string; serial: string; reason: string }[] = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push(...(JSON.parse(body) as { notices: { noticeId: string; serial: string; reason: string }[] }).notices);
      res.statusCode = 204;
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hooks/renewals`;
  return { url, received, close: () => new Promise((r) => server.close(r)) };
}

for (const target of dbTargets) {
  describe(`issuing-CA rollover on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    let oldCa: string;
    let rootId: string;
    let hook: Awaited<ReturnType<typeof webhookReceiver>>;
    const clock = new ManualClock(T0);
    const devices = new Map<string, { serial: Serial; csr: TestCsr; certificate: string; notAfter: string }>();
    let rolloverId: string;
    let successorId: string;

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const enroll = async (deviceId: string, lot?: string) => {
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
      return {
        serial: body.serial as Serial,
        csr,
        certificate: body.certificate as string,
        notAfter: body.notAfter as string,
        caId: body.caId as string,
      };
    };
    const renewSigned = (e: { csr: TestCsr; certificate: string }, deviceId: string) => {
      const next = p256Csr(deviceId);
      return api
        .post('/v1/renew')
        .set({ Authorization: signedRenewalAuth(e.certificate, e.csr.privateKey, clock.now().toISOString(), next.der) })
        .send({ csr: next.pem });
    };
    const progress = async (id = rolloverId) => (await api.get(`/v1/rollovers/${id}`).set(auth('auditor')).expect(200)).body;
    const ca = async (id: string) => (await api.get(`/v1/cas/${id}`).set(auth('auditor')).expect(200)).body;
    const waveEntries = async () =>
      (await api.get('/v1/audit').query({ action: 'ca-rollover.wave', limit: 500 }).set(auth('auditor')).expect(200)).body.items as {
        targetId: string;
        details: { wave: number; count: number; serials: string[] };
      }[];

    before(async () => {
      hook = await webhookReceiver();
      let issuingId: string;
      ({ svc, api, keys, issuingId } = await makeApiService(target, {
        clock,
        env: { RENEWAL_WEBHOOK_URL: hook.url, RENEWAL_WEBHOOK_SECRET: 'webhook-secret-for-the-rollover-tests-0123456789' },
      }));
      oldCa = issuingId;
      rootId = (await ca(oldCa)).parentId;
      // Ten devices on the old CA; rl-early's due notice went out before the rollover started.
      for (let i = 0; i < 10; i++) {
        const id = `rl-${String(i).padStart(2, '0')}`;
        const e = await enroll(id, i === 0 ? 'lot-early' : undefined);
        assert.equal(e.caId, oldCa);
        devices.set(id, e);
      }
      await api.put('/v1/rotation-policies/lot/lot-early').set(auth('operator')).send({ renewDaysBefore: 400 }).expect(201);
      const planned = await svc.renewals.plan();
      assert.deepEqual(planned.batches.flat(), [devices.get('rl-00')!.serial]);
      assert.deepEqual(await svc.renewals.deliver(planned.batches[0]!), { sent: 1 });
    });
    after(async () => {
      await svc?.dispose();
      await hook?.close();
    });

    it('refuses a root, an unknown CA, a CA that is not active, bad input and the wrong roles', async () => {
      const start = (caId: string, body: object, role: Role = 'admin') => api.post(`/v1/cas/${caId}/rollover`).set(auth(role)).send(body);
      const ok = { waveSize: 4, waveIntervalSeconds: 3600 };
      assertProblem(await start(rootId, ok), 409, /root/);
      assertProblem(await start('ca_doesnotexist', ok), 404);
      const external = (
        await api.post('/v1/cas').set(auth('admin')).send({ kind: 'intermediate', name: 'Offline-signed', external: true }).expect(201)
      ).body;
      assertProblem(await start(external.id, ok), 409, /not active/);
      assertProblem(await start(oldCa, { waveSize: 0, waveIntervalSeconds: 3600 }), 400);
      assertProblem(await start(oldCa, { waveSize: 4, waveIntervalSeconds: 0 }), 400);
      assertProblem(await start(oldCa, { waveSize: 100_001, waveIntervalSeconds: 60 }), 400);
      assertProblem(await start(oldCa, { waveSize: 4 }), 400);
      assertProblem(await start(oldCa, { ...ok, bogus: true }), 400);
      assertProblem(await start(oldCa, { ...ok, name: '' }), 400);
      assertProblem(await start(oldCa, ok, 'operator'), 403);
      assertProblem(await start(oldCa, ok, 'auditor'), 403);
      assertProblem(await api.post(`/v1/cas/${oldCa}/rollover`).send(ok), 401);
      assertProblem(await api.get(`/v1/cas/${oldCa}/rollover`).set(auth('auditor')), 404, /no rollover/);
      assertProblem(await api.get('/v1/cas/ca_doesnotexist/rollover').set(auth('auditor')), 404);
      assertProblem(await api.get('/v1/rollovers/rollover_nope').set(auth('auditor')), 404);
      assert.equal((await ca(oldCa)).isDefaultIssuer, true, 'nothing changed');
    });

    it('creates a successor under the same parent, moves the default issuer to it, and takes no new issuance on the old CA', async () => {
      const res = await api
        .post(`/v1/cas/${oldCa}/rollover`)
        .set(auth('admin'))
        .send({ waveSize: 4, waveIntervalSeconds: 3600 })
        .expect(201);
      const { rollover, successor } = res.body;
      rolloverId = rollover.id;
      successorId = successor.id;
      assert.equal(res.headers.location, `/v1/rollovers/${rolloverId}`);
      const old = await ca(oldCa);
      assert.deepEqual(
        [successor.parentId, successor.keyAlgorithm, successor.pathLen, successor.status, successor.isDefaultIssuer],
        [old.parentId, old.keyAlgorithm, old.pathLen, 'active', true],
      );
      assert.match(successor.subject, /CN=mqtt-ca Issuing CA 1 \(rollover 2026-03-01\)/);
      assert.match(successor.subject, /O=mqtt-ca/);
      assert.deepEqual([old.status, old.isDefaultIssuer], ['active', false]);
      // New issuance stays off the old CA: it cannot be made the default issuer again while it is rolled over.
      assertProblem(await api.post(`/v1/cas/${oldCa}/default-issuer`).set(auth('admin')), 409, /rolled over/);
      assert.deepEqual(
        [
          rollover.state,
          rollover.fromCaId,
          rollover.toCaId,
          rollover.waves,
          rollover.remaining,
          rollover.unscheduled,
          rollover.notified,
          rollover.renewed,
          rollover.nextWaveAt,
        ],
        ['running', oldCa, successorId, 0, 10, 10, 0, 0, T0.toISOString()],
      );
      assert.deepEqual((await api.get(`/v1/cas/${oldCa}/rollover`).set(auth('operator')).expect(200)).body.id, rolloverId);
      assertProblem(
        await api.post(`/v1/cas/${oldCa}/rollover`).set(auth('admin')).send({ waveSize: 4, waveIntervalSeconds: 60 }),
        409,
        /already/,
      );

      // New devices get the successor; a request naming the old CA is refused.
      const fresh = await enroll('rl-new');
      assert.equal(fresh.caId, successorId);
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'rl-named', kind: 'client' }).expect(201);
      assertProblem(
        await api
          .post('/v1/certificates')
          .set(auth('provisioner'))
          .send({ profile: 'device', deviceId: 'rl-named', caId: oldCa, csr: p256Csr('rl-named').pem }),
        409,
        /rolled over/,
      );

      const trail = (await api.get('/v1/audit').query({ targetType: 'ca-rollover', targetId: rolloverId }).set(auth('auditor')).expect(200))
        .body.items;
      assert.deepEqual(
        trail.map((e: { action: string }) => e.action),
        ['ca-rollover.started'],
      );
      assert.equal(trail[0].details.defaultIssuerMoved, true);
    });

    it('runs waves of waveSize at most once per interval, never a certificate in two waves, even with concurrent ticks', async () => {
      const w1 = await svc.rollovers.tick();
      assert.equal(w1.waves, 1);
      assert.equal(w1.batches.flat().length, 4);
      let p = await progress();
      assert.deepEqual(
        [p.waves, p.inWaves, p.unscheduled, p.remaining, p.lastWaveAt, p.nextWaveAt],
        [1, 4, 6, 10, T0.toISOString(), new Date(T0.getTime() + 3600_000).toISOString()],
      );
      // Nothing more until the interval passed, however often the tick runs.
      clock.advance(3599_000);
      assert.deepEqual((await svc.rollovers.tick()).batches, []);
      assert.deepEqual((await svc.rollovers.tick()).batches, []);
      // Two workers' ticks at once: one wave between them.
      clock.advance(1000);
      const [a, b] = await Promise.all([svc.rollovers.tick(), svc.rollovers.tick()]);
      assert.equal(a.waves + b.waves, 1);
      assert.equal([...a.batches, ...b.batches].flat().length, 4);
      clock.advance(3600_000);
      const [c, d] = await Promise.all([svc.rollovers.tick(), svc.rollovers.tick()]);
      assert.equal([...c.batches, ...d.batches].flat().length, 2, 'the last two');
      clock.advance(3600_000);
      assert.deepEqual((await svc.rollovers.tick()).batches, [], 'every certificate is in a wave');

      const waves = (await waveEntries()).filter((e) => e.targetId === rolloverId).reverse();
      assert.deepEqual(
        waves.map((w) => [w.details.wave, w.details.count]),
        [
          [1, 4],
          [2, 4],
          [3, 2],
        ],
      );
      const all = waves.flatMap((w) => w.details.serials);
      assert.equal(new Set(all).size, 10, 'each certificate in exactly one wave');
      assert.deepEqual([...all].sort(), [...devices.values()].map((e) => e.serial).sort());
      p = await progress();
      assert.deepEqual([p.state, p.waves, p.inWaves, p.unscheduled, p.remaining, p.notified], ['running', 3, 10, 0, 10, 0]);

      // Each wave's notices are due now; the one already sent (rl-early) was set back to pending and goes out again.
      const early = devices.get('rl-00')!.serial;
      const n = (await api.get(`/v1/renewal-notices/${early}`).set(auth('auditor')).expect(200)).body;
      assert.deepEqual([n.state, n.reason, n.webhookSentAt], ['pending', 'rollover', null]);
      for (const batch of [...w1.batches, ...a.batches, ...b.batches, ...c.batches, ...d.batches]) await svc.renewals.deliver(batch);
      const got = hook.received.filter((r) => r.serial === early);
      assert.deepEqual(
        got.map((r) => r.reason),
        ['due', 'rollover'],
      );
      assert.equal(hook.received.filter((r) => r.reason === 'rollover').length, 10);
      assert.equal((await progress()).notified, 10);
    });

    it('pauses, resumes and cancels; a cancelled rollover lets the CA be rolled over again', async () => {
      const second = (
        await api
          .post('/v1/cas')
          .set(auth('admin'))
          .send({ kind: 'intermediate', name: 'Issuing CA 2', parentId: rootId, pathLen: 0 })
          .expect(201)
      ).body;
      const r = (
        await api
          .post(`/v1/cas/${second.id}/rollover`)
          .set(auth('admin'))
          .send({ waveSize: 10, waveIntervalSeconds: 60, name: 'Issuing CA 2b', validityDays: 30 })
          .expect(201)
      ).body;
      assert.equal(r.successor.name, 'Issuing CA 2b');
      assert.match(r.successor.subject, /CN=Issuing CA 2b/);
      assert.equal(r.successor.isDefaultIssuer, false, 'the old CA was not the default issuer');
      assert.equal(Date.parse(r.successor.notAfter) - Date.parse(r.successor.notBefore), 30 * DAY);
      const id = r.rollover.id as string;
      const act = (what: string, role: Role = 'operator') => api.post(`/v1/rollovers/${id}/${what}`).set(auth(role));
      assertProblem(await act('pause', 'auditor'), 403);
      assertProblem(await act('pause', 'provisioner'), 403);
      assertProblem(await api.post('/v1/rollovers/rollover_nope/pause').set(auth('operator')), 404);
      assert.equal((await act('pause').expect(200)).body.state, 'paused');
      assertProblem(await act('pause'), 409);
      assert.equal((await progress(id)).nextWaveAt, null);
      await svc.rollovers.tick(); // a paused rollover is left alone (it would be done: its CA has no devices)
      assert.equal((await progress(id)).state, 'paused');
      assert.equal((await act('resume').expect(200)).body.state, 'running');
      assertProblem(await act('resume'), 409);
      assert.equal((await act('cancel').expect(200)).body.state, 'cancelled');
      assertProblem(await act('cancel'), 409);
      assertProblem(await act('resume'), 409);
      const actions = (
        await api.get('/v1/audit').query({ targetType: 'ca-rollover', targetId: id }).set(auth('auditor')).expect(200)
      ).body.items.map((e: { action: string }) => e.action);
      assert.deepEqual(actions.reverse(), ['ca-rollover.started', 'ca-rollover.paused', 'ca-rollover.resumed', 'ca-rollover.cancelled']);

      // Cancelled: the CA may be named again, and rolled over anew; with no certificates it is done and retired at the next tick.
      assert.equal((await api.get(`/v1/cas/${second.id}/rollover`).set(auth('auditor')).expect(200)).body.state, 'cancelled');
      const again = (
        await api.post(`/v1/cas/${second.id}/rollover`).set(auth('admin')).send({ waveSize: 10, waveIntervalSeconds: 60 }).expect(201)
      ).body.rollover;
      const t = await svc.rollovers.tick();
      assert.ok(t.done.includes(again.id));
      assert.ok(t.retired.includes(second.id));
      const done = await progress(again.id);
      assert.deepEqual([done.state, done.fromCaStatus, done.waves, typeof done.retiredAt], ['done', 'retired', 0, 'string']);
      assertProblem(await api.post(`/v1/rollovers/${again.id}/cancel`).set(auth('operator')), 409);
      assertProblem(
        await api.post(`/v1/cas/${second.id}/rollover`).set(auth('admin')).send({ waveSize: 10, waveIntervalSeconds: 60 }),
        409,
      );
    });

    it('counts renewals onto the successor (verified by openssl), and is done once no current certificate is left on the old CA', async () => {
      const chainOf = async (id: string) => (await ca(id)).certificate as string;
      const root = await chainOf(rootId);
      const successor = await chainOf(successorId);
      const old = await chainOf(oldCa);
      let n = 0;
      for (const [id, e] of devices) {
        const renewed = (await renewSigned(e, id).expect(201)).body;
        assert.equal(renewed.caId, successorId);
        const at = ['-attime', String(Math.floor(clock.now().getTime() / 1000))];
        const ok = opensslVerify(root, [successor], renewed.certificate, at);
        assert.equal(ok.status, 0, ok.stdout + ok.stderr);
        assert.notEqual(opensslVerify(root, [old], renewed.certificate, at).status, 0, 'not issued by the old CA');
        n += 1;
        if (n === 5) {
          const half = await progress();
          assert.deepEqual([half.renewed, half.remaining, half.state], [5, 5, 'running']);
          await svc.rollovers.tick();
          assert.equal((await progress()).state, 'running');
        }
      }
      const before = await progress();
      assert.deepEqual([before.renewed, before.remaining, before.unscheduled], [10, 0, 0]);
      const t = await svc.rollovers.tick();
      assert.deepEqual(t.done, [rolloverId]);
      const done = await progress();
      assert.deepEqual([done.state, done.fromCaStatus, done.retiredAt, done.nextWaveAt, done.waves], ['done', 'active', null, null, 3]);
      assert.equal(typeof done.doneAt, 'string');
    });

    it("keeps publishing the old CA's CRL until its last certificate expired, then retires it", async () => {
      // An old, renewed certificate is revoked: the old CA's CRL must carry it.
      const revoked = devices.get('rl-03')!;
      await api.post(`/v1/certificates/${revoked.serial}/revoke`).set(auth('operator')).send({ reason: 'superseded' }).expect(200);
      await svc.crlWatch.check();
      let text = await servedCrlText(api, oldCa);
      assert.match(text, /Issuer: .*CN ?= ?mqtt-ca Issuing CA 1\b(?! \(rollover)/);
      assert.match(text, new RegExp(`Serial Number: ${revoked.serial.toUpperCase()}`));

      // A day before the last of the old certificates expires: still active, a fresh CRL still signed.
      const last = Math.max(...[...devices.values()].map((e) => Date.parse(e.notAfter)));
      clock.set(new Date(last - DAY));
      assert.deepEqual((await svc.rollovers.tick()).retired, []);
      assert.equal((await ca(oldCa)).status, 'active');
      await svc.crlWatch.check();
      text = await servedCrlText(api, oldCa);
      const lastUpdate = /Last Update: (.+)/.exec(text)![1]!;
      assert.ok(Math.abs(Date.parse(lastUpdate) - (last - DAY)) < 2 * DAY, `a CRL signed now, not the first one (${lastUpdate})`);
      assert.match(text, new RegExp(`Serial Number: ${revoked.serial.toUpperCase()}`));

      clock.set(new Date(last + 1000));
      assert.deepEqual((await svc.rollovers.tick()).retired, [oldCa]);
      assert.equal((await ca(oldCa)).status, 'retired');
      const p = await progress();
      assert.deepEqual([p.state, p.fromCaStatus, typeof p.retiredAt], ['done', 'retired', 'string']);
      assert.deepEqual((await svc.rollovers.tick()).retired, [], 'once');
      const trail = (
        await api.get('/v1/audit').query({ targetType: 'ca', targetId: oldCa, action: 'ca.retired' }).set(auth('auditor')).expect(200)
      ).body.items;
      assert.equal(trail.length, 1);
      assert.equal(trail[0].details.rolloverId, rolloverId);
      // The successor signs; the retired CA does not any more.
      const signing = (await svc.crlWatch.check()).map((x) => x.caId);
      assert.ok(signing.includes(successorId));
      assert.ok(!signing.includes(oldCa));
    });
  });
}
