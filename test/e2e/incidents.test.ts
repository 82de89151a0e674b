// Incidents over the REST API: opening with targets, dry runs, each Respond and Recover action
// that needs no broker, the timeline, the audit log, and the refusals. The broker actions are
// tested against a real Mosquitto in incidents-broker.test.ts.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem, servedCrlText } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import { run, tempDir, writeTemp } from '../helpers/openssl.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

type Agent = ReturnType<typeof request>;

interface Step {
  id: string;
  seq: number;
  action: string;
  dryRun: boolean;
  status: string;
  actor: string;
  touchedCount: number;
  touched: { type: string; id: string }[];
  result: Record<string, unknown> | null;
  error: string | null;
  retryOf: string | null;
  secrets?: { tokens: { deviceId: string; tokenId: string; token: string }[] };
}

for (const target of dbTargets) {
  describe(`incidents on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    let issuingId: string;
    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });

    const register = (id: string, extra: Record<string, unknown> = {}) =>
      api
        .post('/v1/devices')
        .set(auth('provisioner'))
        .send({ id, kind: 'client', ...extra })
        .expect(201);
    const token = async (deviceId: string) =>
      (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId }).expect(201)).body as { id: string; token: string };
    const enrollWith = (tok: string, deviceId: string) =>
      api
        .post('/v1/enroll')
        .set({ Authorization: `Bearer ${tok}` })
        .send({ csr: p256Csr(deviceId).pem });
    const enroll = async (deviceId: string) =>
      (await enrollWith((await token(deviceId)).token, deviceId).expect(201)).body as { serial: string; certificate: string };
    const open = (body: Record<string, unknown>, role: Role = 'operator') => api.post('/v1/incidents').set(auth(role)).send(body);
    const act = (id: string, body: Record<string, unknown>, role: Role = 'operator') =>
      api.post(`/v1/incidents/${id}/actions`).set(auth(role)).send(body);
    const certificate = async (serial: string) =>
      (await api.get(`/v1/certificates/${serial}`).set(auth('auditor')).expect(200)).body as {
        status: string;
        revocation?: { reason: string } | null;
      };
    const device = async (id: string) =>
      (await api.get(`/v1/devices/${id}`).set(auth('auditor')).expect(200)).body as { status: string; currentSerial?: string | null };
    const timeline = async (id: string) => (await api.get(`/v1/incidents/${id}`).set(auth('auditor')).expect(200)).body.timeline as Step[];
    const audit = async (action: string, targetId?: string) =>
      (
        await api
          .get('/v1/audit')
          .query({ action, limit: 500, ...(targetId ? { targetId } : {}) })
          .set(auth('auditor'))
          .expect(200)
      ).body.items as { actor: string; targetId: string; details: Record<string, unknown> }[];

    before(async () => {
      ({ svc, api, keys, issuingId } = await makeApiService(target));
    });
    after(async () => {
      await svc?.dispose();
    });

    it('opens an incident only on targets that exist, for the roles that may', async () => {
      await register('known-1');
      await register('not-a-broker');
      assertProblem(
        await open({ kind: 'device-compromise', title: 't', targets: { devices: ['known-1', 'ghost-1'] } }),
        404,
        /unknown targets: ghost-1/,
      );
      assertProblem(
        await open({ kind: 'device-compromise', title: 't', targets: { lots: ['NO-SUCH-LOT'] } }),
        404,
        /no devices in lot NO-SUCH-LOT/,
      );
      assertProblem(await open({ kind: 'broker-compromise', title: 't', targets: { devices: ['known-1'] } }), 400, /names its brokers/);
      assertProblem(
        await open({ kind: 'broker-compromise', title: 't', targets: { brokers: ['not-a-broker'] } }),
        400,
        /not brokers: not-a-broker/,
      );
      assertProblem(await open({ kind: 'ca-compromise', title: 't', targets: {} }), 400, /names the compromised CA/);
      assertProblem(await open({ kind: 'ca-compromise', title: 't', targets: { caId: 'ca_00000000000000000000' } }), 404, /no CA/);
      assertProblem(await open({ kind: 'lost-device', title: 't' }), 400, /needs targets/);
      assertProblem(await open({ kind: 'mystery', title: 't', targets: { devices: ['known-1'] } }), 400);
      assertProblem(await open({ kind: 'lost-device', title: 't', targets: { devices: ['known-1'] } }, 'provisioner'), 403);
      assertProblem(await open({ kind: 'lost-device', title: 't', targets: { devices: ['known-1'] } }, 'auditor'), 403);
      assertProblem(await api.post('/v1/incidents').send({ kind: 'lost-device', title: 't', targets: { devices: ['known-1'] } }), 401);
      const ok = await open({ kind: 'lost-device', title: 'tablet left on a bus', targets: { devices: ['known-1'] } }).expect(201);
      assert.equal(ok.body.status, 'open');
      assert.equal(ok.headers.location, `/v1/incidents/${ok.body.id}`);
      const listed = (await api.get('/v1/incidents').query({ status: 'open', kind: 'lost-device' }).set(auth('auditor')).expect(200)).body
        .items as { id: string }[];
      assert.ok(listed.some((i) => i.id === ok.body.id));
      const opened = await audit('incident.opened', ok.body.id);
      assert.equal(opened.length, 1);
    });

    it('a device compromise: dry run, revocation with keyCompromise on the CRL, credentials revoked, re-admission and reissue', async () => {
      for (const id of ['lot-a-1', 'lot-a-2', 'lot-a-3']) await register(id, { lot: 'LOT-A' });
      await register('meter-7');
      const meter = await enroll('meter-7');
      const lotCerts = [];
      for (const id of ['lot-a-1', 'lot-a-2', 'lot-a-3']) lotCerts.push(await enroll(id));
      const spare = await token('meter-7'); // handed out before the compromise: must die with it
      const inc = (
        await open({
          kind: 'device-compromise',
          title: 'meter-7 and lot A tampered',
          targets: { devices: ['meter-7'], lots: ['LOT-A'] },
        }).expect(201)
      ).body as { id: string };

      // Dry run: lists the four certificates, changes nothing.
      const dry = (await act(inc.id, { action: 'revoke-certificates', dryRun: true }).expect(201)).body as Step;
      assert.equal(dry.dryRun, true);
      assert.equal(dry.status, 'succeeded');
      assert.equal(dry.touchedCount, 4);
      assert.deepEqual(dry.touched.map((t) => t.id).sort(), [meter.serial, ...lotCerts.map((c) => c.serial)].sort());
      assert.equal((await certificate(meter.serial)).status, 'issued');
      assert.equal((await device('meter-7')).status, 'active');

      // Bad parameters and unknown narrowing: 400, no step.
      assertProblem(await act(inc.id, { action: 'revoke-certificates', params: { channels: ['x'] } }), 400, /takes no channels/);
      assertProblem(await act(inc.id, { action: 'revoke-certificates', params: { devices: ['known-1'] } }), 400, /not targets of incident/);
      assertProblem(await act(inc.id, { action: 'revoke-certificates', params: { reason: 'certificateHold' } }), 400, /suspend action/);
      assertProblem(await act(inc.id, { action: 'teleport' }), 400);
      assertProblem(await act(inc.id, { action: 'quarantine-broker' }), 409, /broker-compromise incident/);
      assertProblem(await act(inc.id, { action: 'block' }), 409, /no broker connector is configured/);
      assertProblem(await act(inc.id, { action: 'revoke-certificates' }, 'auditor'), 403);
      assert.equal((await timeline(inc.id)).length, 1);

      const revoked = (await act(inc.id, { action: 'revoke-certificates' }).expect(201)).body as Step;
      assert.equal(revoked.status, 'succeeded');
      assert.equal(revoked.touchedCount, 4);
      assert.equal(revoked.result?.reason, 'keyCompromise');
      for (const s of [meter.serial, ...lotCerts.map((c) => c.serial)]) {
        const c = await certificate(s);
        assert.equal(c.status, 'revoked');
        assert.equal(c.revocation?.reason, 'keyCompromise');
      }
      assert.equal((await device('meter-7')).status, 'revoked');
      await svc.crls.publish(issuingId);
      const crl = await servedCrlText(api, issuingId);
      assert.match(crl, new RegExp(`Serial Number: ${meter.serial.toUpperCase()}[\\s\\S]*?Key Compromise`));

      // The spare token still looks live until the credentials go.
      const creds = (await act(inc.id, { action: 'revoke-credentials', params: { sessionKeys: false } }).expect(201)).body as Step;
      assert.equal(creds.status, 'succeeded');
      assert.ok(creds.touched.some((t) => t.type === 'enrollment-token' && t.id === spare.id));
      assertProblem(await enrollWith(spare.token, 'meter-7'), 401);

      // A revoked device cannot be reissued to until it is re-admitted.
      assertProblem(await act(inc.id, { action: 'reissue', params: { devices: ['meter-7'] } }), 409, /re-admit first: meter-7 is revoked/);
      const back = (await act(inc.id, { action: 'readmit', params: { devices: ['meter-7'] } }).expect(201)).body as Step;
      assert.deepEqual(back.result?.readmitted, ['meter-7']);
      assert.equal((await device('meter-7')).status, 'registered');
      const re = (await act(inc.id, { action: 'reissue', params: { devices: ['meter-7'], expiresInSeconds: 3600 } }, 'admin').expect(201))
        .body as Step; // an operator's reissue is a proposal (trust-escalation.test.ts)
      assert.equal(re.secrets?.tokens.length, 1);
      const fresh = re.secrets!.tokens[0]!;
      assert.equal(fresh.deviceId, 'meter-7');
      // The timeline keeps the token's id, never the token.
      const tl = await timeline(inc.id);
      assert.ok(!JSON.stringify(tl).includes(fresh.token));
      assert.equal((tl.at(-1)!.result as { tokens: { tokenId: string }[] }).tokens[0]!.tokenId, fresh.tokenId);
      const renewed = (await enrollWith(fresh.token, 'meter-7').expect(201)).body as { serial: string };
      assert.equal((await device('meter-7')).status, 'active');
      assert.notEqual(renewed.serial, meter.serial);

      // The timeline: numbered, each with its actor; the audit log has every step.
      assert.deepEqual(
        tl.map((s) => s.seq),
        [1, 2, 3, 4, 5],
      );
      assert.deepEqual(
        tl.map((s) => s.action),
        ['revoke-certificates', 'revoke-certificates', 'revoke-credentials', 'readmit', 'reissue'],
      );
      assert.ok(tl.every((s) => s.actor.startsWith('api-key:')));
      assert.equal((await audit('incident.action-finished', inc.id)).length, 4);
      assert.equal((await audit('incident.dry-run', inc.id)).length, 1);
      const revocations = await audit('certificate.revoked', meter.serial);
      assert.equal(revocations.length, 1);
      assert.equal(revocations[0]!.actor, tl[1]!.actor);

      // Closing: with a summary, once; then no more actions.
      const closed = (
        await api
          .post(`/v1/incidents/${inc.id}/close`)
          .set(auth('operator'))
          .send({ summary: 'meter-7 re-keyed; lot A stays revoked' })
          .expect(200)
      ).body;
      assert.equal(closed.status, 'closed');
      assert.equal(closed.summary, 'meter-7 re-keyed; lot A stays revoked');
      assertProblem(await api.post(`/v1/incidents/${inc.id}/close`).set(auth('operator')).send({ summary: 'again' }), 409);
      assertProblem(await act(inc.id, { action: 'revoke-certificates', dryRun: true }), 409, /closed/);
      assert.equal((await audit('incident.closed', inc.id)).length, 1);
    });

    it('a lost device: suspended by a hold, re-admitted by releasing it, then reissued with its old certificate superseded', async () => {
      await register('tablet-3');
      const old = await enroll('tablet-3');
      const inc = (await open({ kind: 'lost-device', title: 'tablet-3 missing', targets: { devices: ['tablet-3'] } }).expect(201)).body as {
        id: string;
      };
      const held = (await act(inc.id, { action: 'suspend' }).expect(201)).body as Step;
      assert.equal(held.touchedCount, 1);
      assert.equal((await certificate(old.serial)).revocation?.reason, 'certificateHold');
      assert.equal((await device('tablet-3')).status, 'suspended');
      // Found again: the hold is released.
      const readmitted = (await act(inc.id, { action: 'readmit' }).expect(201)).body as Step;
      assert.deepEqual(readmitted.result?.released, ['tablet-3']);
      assert.equal((await certificate(old.serial)).status, 'issued');
      assert.equal((await device('tablet-3')).status, 'active');
      // Re-keyed anyway: a new certificate, then the old one superseded.
      const tok = ((await act(inc.id, { action: 'reissue' }, 'admin').expect(201)).body as Step).secrets!.tokens[0]!.token;
      const nothingYet = (await act(inc.id, { action: 'supersede-replaced', dryRun: true }).expect(201)).body as Step;
      assert.equal(nothingYet.touchedCount, 0);
      const next = (await enrollWith(tok, 'tablet-3').expect(201)).body as { serial: string };
      const dry = (await act(inc.id, { action: 'supersede-replaced', dryRun: true }).expect(201)).body as Step;
      assert.deepEqual(dry.touched, [{ type: 'certificate', id: old.serial }]);
      await act(inc.id, { action: 'supersede-replaced' }).expect(201);
      assert.equal((await certificate(old.serial)).revocation?.reason, 'superseded');
      assert.equal((await certificate(next.serial)).status, 'issued');
      assert.equal((await device('tablet-3')).status, 'active');
    });

    it('every action has a dry run that lists what it would touch, changes nothing, and is on the timeline and in the audit log', async () => {
      await register('dry-1');
      const cert = await enroll('dry-1');
      const spare = await token('dry-1');
      await svc.sessionKeys.createChannel({ name: 'dry-channel', topicTree: 'dry/#', members: ['dry-1'] }, { actor: 'test' });
      const keyVersion = async () =>
        ((await api.get('/v1/channels/dry-channel/keys').set(auth('auditor')).expect(200)).body.items as { version: number }[])[0]!.version;
      const version = await keyVersion();
      const inc = (await open({ kind: 'device-compromise', title: 'dry runs', targets: { devices: ['dry-1'] } }).expect(201)).body as {
        id: string;
      };
      const actions = [
        'revoke-certificates',
        'suspend',
        'revoke-credentials',
        'readmit',
        'reissue',
        'supersede-replaced',
        'rotate-channel-keys',
      ];
      for (const action of actions) {
        const step = (await act(inc.id, { action, dryRun: true }).expect(201)).body as Step;
        assert.equal(step.dryRun, true, action);
        assert.equal(step.status, 'succeeded', action);
      }
      const byAction = Object.fromEntries((await timeline(inc.id)).map((s) => [s.action, s.touched]));
      assert.deepEqual(byAction['revoke-certificates'], [{ type: 'certificate', id: cert.serial }]);
      assert.deepEqual(byAction.suspend, [{ type: 'certificate', id: cert.serial }]);
      assert.ok(byAction['revoke-credentials']!.some((t) => t.type === 'enrollment-token' && t.id === spare.id));
      assert.ok(byAction['revoke-credentials']!.some((t) => t.type === 'channel' && t.id === 'dry-channel'));
      assert.deepEqual(byAction.readmit, []); // active: nothing to re-admit
      assert.deepEqual(byAction.reissue, [{ type: 'device', id: 'dry-1' }]);
      assert.deepEqual(byAction['rotate-channel-keys'], [{ type: 'channel', id: 'dry-channel' }]);
      // Nothing changed.
      assert.equal((await certificate(cert.serial)).status, 'issued');
      assert.equal((await device('dry-1')).status, 'active');
      assert.equal((await api.get(`/v1/enrollment-tokens/${spare.id}`).set(auth('auditor')).expect(200)).body.revokedAt, null);
      assert.equal(await keyVersion(), version);
      assert.equal(
        ((await api.get('/v1/enrollment-tokens').query({ deviceId: 'dry-1' }).set(auth('auditor')).expect(200)).body.items as unknown[])
          .length,
        2,
        'reissue made no token (the enrollment one and the spare only)',
      );
      assert.equal((await audit('incident.dry-run', inc.id)).length, actions.length);
      assert.equal((await audit('incident.action-started', inc.id)).length, 0);
    });

    it('a reissue token also serves a device that cannot make a key: the credential is generated here, returned once as PKCS#12', async () => {
      await register('sensor-no-rng');
      const old = await enroll('sensor-no-rng');
      const inc = (
        await open({ kind: 'device-compromise', title: 'sensor key dumped over JTAG', targets: { devices: ['sensor-no-rng'] } }).expect(201)
      ).body as { id: string };
      await act(inc.id, { action: 'revoke-certificates' }).expect(201);
      await act(inc.id, { action: 'readmit' }).expect(201);
      const tok = ((await act(inc.id, { action: 'reissue' }, 'admin').expect(201)).body as Step).secrets!.tokens[0]!.token;
      const res = await api
        .post('/v1/enroll/serverkeygen')
        .set({ Authorization: `Bearer ${tok}` })
        .send({ password: 'field technician passphrase' })
        .expect(201);
      const p12 = writeTemp(tempDir(), 'k.p12', Buffer.from(res.body.pkcs12 as string, 'base64'));
      const info = run('openssl', ['pkcs12', '-in', p12, '-nodes', '-passin', 'pass:field technician passphrase']);
      assert.equal(info.status, 0, info.stderr);
      assert.match(info.stdout, /subject=CN = sensor-no-rng/);
      assert.notEqual(res.body.serial, old.serial);
      assert.equal((await device('sensor-no-rng')).status, 'active');
      // The token was for one use.
      assertProblem(
        await api
          .post('/v1/enroll/serverkeygen')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ password: 'field technician passphrase' }),
        403,
      );
    });

    it('a credential leak: session keys and API keys revoked while the certificates stay trusted', async () => {
      await register('dms-1');
      await register('cap-bank-1');
      const dms = await enroll('dms-1');
      await enroll('cap-bank-1');
      await svc.sessionKeys.createChannel(
        { name: 'feeder-12', topicTree: 'grid/feeder12/#', members: ['dms-1', 'cap-bank-1'] },
        { actor: 'test' },
      );
      const before = (await api.get('/v1/channels/feeder-12/keys').set(auth('auditor')).expect(200)).body.items as { version: number }[];
      const leaked = await svc.apiKeys.create({ name: 'integration script', role: 'operator' }, { actor: 'test' });
      await api
        .get('/v1/devices')
        .set({ Authorization: `Bearer ${leaked.key}` })
        .expect(200);
      const inc = (await open({ kind: 'credential-leak', title: 'keys in a public repo', targets: { devices: ['dms-1'] } }).expect(201))
        .body as { id: string };
      assertProblem(await act(inc.id, { action: 'revoke-credentials', params: { apiKeyIds: ['key_nope'] } }), 404, /unknown API keys/);
      const dry = (await act(inc.id, { action: 'revoke-credentials', dryRun: true, params: { apiKeyIds: [leaked.id] } }).expect(201))
        .body as Step;
      assert.deepEqual(dry.result?.channelsRekeyed, ['feeder-12']);
      assert.ok(dry.touched.some((t) => t.type === 'api-key' && t.id === leaked.id));
      const done = (await act(inc.id, { action: 'revoke-credentials', params: { apiKeyIds: [leaked.id] } }).expect(201)).body as Step;
      assert.equal(done.status, 'succeeded');
      assertProblem(await api.get('/v1/devices').set({ Authorization: `Bearer ${leaked.key}` }), 401);
      const after = (await api.get('/v1/channels/feeder-12/keys').set(auth('auditor')).expect(200)).body.items as {
        version: number;
        status: string;
      }[];
      assert.equal(after[0]!.version, before[0]!.version + 1);
      assert.equal(after.find((k) => k.version === before[0]!.version)!.status, 'revoked');
      assert.equal((await certificate(dms.serial)).status, 'issued');
      assert.equal((await device('dms-1')).status, 'active');
      // And a channel rotated by name.
      const rotated = (await act(inc.id, { action: 'rotate-channel-keys', params: { channels: ['feeder-12'] } }).expect(201)).body as Step;
      assert.deepEqual(rotated.touched, [{ type: 'channel', id: 'feeder-12' }]);
      assertProblem(await act(inc.id, { action: 'rotate-channel-keys', params: { channels: ['no-such-channel'] } }), 404);
    });
  });
}
