import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, sign, webcrypto, type KeyObject } from 'node:crypto';
import { request as httpsRequest, type Server } from 'node:https';
import request from 'supertest';
import * as x509 from '@peculiar/x509';
import { compactDecrypt, decodeProtectedHeader } from 'jose';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { createHttpHandler, listenTls, type Service } from '../../src/main.js';
import { bootstrap } from '../../src/bootstrap.js';
import { encodeCertificationRequest, encodeCertificationRequestInfo, type SignatureAlgorithm } from '../../src/ca/x509/encode.js';
import { encodeName } from '../../src/ca/x509/names.js';
import { fromPemAll, toPem } from '../../src/ca/x509/pem.js';
import { renewalSigningInput, sessionKeysSigningInput } from '../../src/enroll/device-certificate-auth.js';
import type { WrappedSessionKey } from '../../src/rotate/session-keys.js';
import { ManualClock } from '../../src/shared/clock.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type Agent = ReturnType<typeof request>;
type KeyKind = 'p256' | 'rsa2048' | 'ed25519';

interface Device {
  id: string;
  key: KeyObject;
  kind: KeyKind;
  serial: string;
  certPem: string;
  der: Buffer;
}

type Wrapped = WrappedSessionKey;

const HOUR = 3_600_000;

/** A CSR for a fresh key of the given kind, built with the project's encoder. */
function csrFor(cn: string, kind: KeyKind): { pem: string; key: KeyObject } {
  const { privateKey, publicKey } =
    kind === 'p256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : kind === 'rsa2048'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ed25519');
  const alg: SignatureAlgorithm = kind === 'p256' ? 'ecdsa-with-SHA256' : kind === 'rsa2048' ? 'sha256WithRSAEncryption' : 'Ed25519';
  const info = encodeCertificationRequestInfo(encodeName([{ type: 'CN', value: cn }]), publicKey.export({ format: 'der', type: 'spki' }));
  const signature = sign(
    kind === 'ed25519' ? null : 'sha256',
    info,
    kind === 'p256' ? { key: privateKey, dsaEncoding: 'der' } : privateKey,
  );
  return { pem: toPem(Buffer.from(encodeCertificationRequest(info, alg, signature)), 'CERTIFICATE REQUEST'), key: privateKey };
}

for (const target of dbTargets) {
  describe(`session keys end to end on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let tls: Server;
    const auth: Record<string, Record<string, string>> = {};
    const clock = new ManualClock(new Date());
    const devices: Record<string, Device> = {};

    before(async () => {
      svc = await makeService(target, { clock, env: { SESSION_KEY_PERIOD_HOURS: '2', SESSION_KEY_OVERLAP_HOURS: '1' } });
      const boot = await bootstrap(svc);
      auth.admin = { Authorization: `Bearer ${boot.adminKey}` };
      for (const role of ['operator', 'auditor', 'provisioner'] as const) {
        auth[role] = { Authorization: `Bearer ${(await svc.apiKeys.create({ name: role, role }, { actor: 'test' })).key}` };
      }
      api = request(createHttpHandler(svc, { validateResponses: true }));
      tls = await listenTls(svc, 0);
      // Token enrollment, as a device on the factory line does it.
      for (const [id, kind] of [
        ['sk-ec', 'p256'],
        ['sk-rsa', 'rsa2048'],
        ['sk-ed', 'ed25519'],
        ['sk-out', 'p256'],
      ] as const) {
        await api.post('/v1/devices').set(auth.provisioner!).send({ id, kind: 'client' }).expect(201);
        const token = (await api.post('/v1/enrollment-tokens').set(auth.provisioner!).send({ deviceId: id }).expect(201)).body
          .token as string;
        const csr = csrFor(id, kind);
        const res = await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${token}` })
          .send({ csr: csr.pem })
          .expect(201);
        devices[id] = {
          id,
          key: csr.key,
          kind,
          serial: res.body.serial,
          certPem: res.body.certificate,
          der: fromPemAll(res.body.certificate)[0]!,
        };
      }
    });
    after(async () => {
      tls?.close();
      tls?.closeAllConnections();
      await svc?.dispose();
    });

    const hashFor = (d: Device) => (d.kind === 'ed25519' ? null : 'sha256');
    const signedHeader = (d: Device, opts: { at?: Date; key?: KeyObject; input?: Buffer; der?: Buffer } = {}) => {
      const signedAt = (opts.at ?? clock.now()).toISOString();
      const signature = sign(hashFor(d), opts.input ?? sessionKeysSigningInput(signedAt), opts.key ?? d.key);
      return `MQTT-CA-SessionKeys cert="${(opts.der ?? d.der).toString('base64')}", signed-at="${signedAt}", signature="${signature.toString('base64')}"`;
    };
    const fetchSigned = async (d: Device): Promise<Wrapped[]> => {
      const res = await api
        .get('/v1/session-keys')
        .set({ Authorization: signedHeader(d) })
        .expect(200);
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.equal(res.body.deviceId, d.id);
      return res.body.keys;
    };
    const fetchTls = (d: Device) =>
      new Promise<{ status: number; body: Record<string, unknown> }>((resolve, reject) => {
        const port = (tls.address() as { port: number }).port;
        const req = httpsRequest(
          {
            host: '127.0.0.1',
            port,
            path: '/v1/session-keys',
            method: 'GET',
            key: d.key.export({ format: 'pem', type: 'pkcs8' }),
            cert: d.certPem,
            rejectUnauthorized: false,
            agent: false,
          },
          (res) => {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString()));
            res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as Record<string, unknown> }));
          },
        );
        req.on('error', reject);
        req.end();
      });
    /** Unwraps every key with the device's own private key; checks the JWE header. */
    const unwrap = async (d: Device, keys: Wrapped[]) => {
      const out = new Map<string, Buffer>();
      for (const k of keys) {
        const header = decodeProtectedHeader(k.jwe);
        assert.equal(header.alg, d.kind === 'p256' ? 'ECDH-ES+A256KW' : 'RSA-OAEP-256');
        assert.equal(header.enc, 'A256GCM');
        assert.equal(header.kid, k.kid);
        const { plaintext } = await compactDecrypt(k.jwe, d.key);
        assert.equal(plaintext.length, 32);
        out.set(`${k.scope}:${k.channel ?? d.id}:${k.version}`, Buffer.from(plaintext));
      }
      return out;
    };
    const summary = (keys: Wrapped[]) => keys.map((k) => `${k.scope}:${k.channel ?? '-'}:v${k.version}`).sort();

    it('members fetch their keys by signed request and by TLS client certificate, unwrap them with their own keys, and share the channel key; rotation brings the new version beside the old; a revoked member is cut off', async () => {
      const [ec, rsa] = [devices['sk-ec']!, devices['sk-rsa']!];
      const created = await api
        .post('/v1/channels')
        .set(auth.operator!)
        .send({ name: 'plant-7', topicTree: 'plant/7/#', periodSeconds: 3 * 3600, overlapSeconds: 1800, members: [ec.id, rsa.id] })
        .expect(201);
      assert.equal(created.body.currentVersion, 1);
      assert.equal(created.body.memberCount, 2);

      // EC by signed request (supertest), RSA by its TLS client certificate.
      const ecKeys = await fetchSigned(ec);
      const viaTls = await fetchTls(rsa);
      assert.equal(viaTls.status, 200, JSON.stringify(viaTls.body));
      const rsaKeys = viaTls.body.keys as Wrapped[];
      assert.deepEqual(summary(ecKeys), ['channel:plant-7:v1', 'device:-:v1']);
      assert.deepEqual(summary(rsaKeys), ['channel:plant-7:v1', 'device:-:v1']);
      const ecRaw = await unwrap(ec, ecKeys);
      const rsaRaw = await unwrap(rsa, rsaKeys);
      assert.deepEqual(ecRaw.get('channel:plant-7:1'), rsaRaw.get('channel:plant-7:1'), 'both members hold the same channel key');
      assert.notDeepEqual(ecRaw.get(`device:${ec.id}:1`), rsaRaw.get(`device:${rsa.id}:1`), 'each device its own key');
      // Each way works for each key type: RSA by signed request (PKCS#1 v1.5, SHA-256), EC over TLS.
      assert.deepEqual((await unwrap(rsa, await fetchSigned(rsa))).get('channel:plant-7:1'), rsaRaw.get('channel:plant-7:1'));
      const ecTls = await fetchTls(ec);
      assert.deepEqual(summary(ecTls.body.keys as Wrapped[]), summary(ecKeys));
      assert.deepEqual((await unwrap(ec, ecTls.body.keys as Wrapped[])).get('channel:plant-7:1'), ecRaw.get('channel:plant-7:1'));

      // Metadata for operators and auditors: never key material.
      const meta = (await api.get(`/v1/devices/${ec.id}/session-keys`).set(auth.auditor!).expect(200)).body;
      assert.deepEqual(
        meta.items.map((k: { version: number; status: string }) => [k.version, k.status]),
        [[1, 'current']],
      );
      assert.equal(meta.items[0].id, ecKeys.find((k) => k.scope === 'device')!.kid);
      assert.ok(!JSON.stringify(meta).includes('jwe'));

      // Past the devices' period (2 h) and within the channel's (3 h): the device keys rotate, v1 in its overlap.
      clock.advance(2 * HOUR + 60_000);
      assert.ok((await svc.sessionKeys.rotateDue()).rotated >= 2);
      assert.deepEqual(summary(await fetchSigned(ec)), ['channel:plant-7:v1', 'device:-:v1', 'device:-:v2']);
      // Past the channel's period: the channel's v2 beside v1 (30 min overlap); the devices' v1 has ended (1 h overlap), their v2 is not due.
      clock.advance(HOUR);
      assert.ok((await svc.sessionKeys.rotateDue()).rotated >= 1);
      const rotatedEc = await fetchSigned(ec);
      const rotatedRsa = (await fetchTls(rsa)).body.keys as Wrapped[];
      assert.deepEqual(summary(rotatedEc), ['channel:plant-7:v1', 'channel:plant-7:v2', 'device:-:v2']);
      assert.deepEqual(summary(rotatedRsa), summary(rotatedEc));
      const ecRaw2 = await unwrap(ec, rotatedEc);
      const rsaRaw2 = await unwrap(rsa, rotatedRsa);
      assert.deepEqual(ecRaw2.get('channel:plant-7:2'), rsaRaw2.get('channel:plant-7:2'));
      assert.deepEqual(ecRaw2.get('channel:plant-7:1'), ecRaw.get('channel:plant-7:1'), 'the old version is the same key');
      assert.notDeepEqual(ecRaw2.get('channel:plant-7:2'), ecRaw2.get('channel:plant-7:1'));
      const v1 = rotatedEc.find((k) => k.channel === 'plant-7' && k.version === 1)!;
      const v2 = rotatedEc.find((k) => k.channel === 'plant-7' && k.version === 2)!;
      assert.equal(Date.parse(v1.notAfter) - Date.parse(v1.rotateAt), 1800_000, 'valid through its overlap');
      assert.ok(Date.parse(v2.notBefore) <= Date.parse(v1.notAfter));

      // One member revoked through the API: the channel is re-keyed at once, for the other member only.
      clock.advance(60_000);
      await api.post(`/v1/certificates/${rsa.serial}/revoke`).set(auth.operator!).send({ reason: 'keyCompromise' }).expect(200);
      const keys = (await api.get('/v1/channels/plant-7/keys').set(auth.operator!).expect(200)).body.items;
      assert.deepEqual(
        keys.map((k: { version: number; status: string; origin: string }) => [k.version, k.status, k.origin]),
        [
          [3, 'current', 'member-revoked'],
          [2, 'revoked', 'scheduled'],
          [1, 'revoked', 'created'],
        ],
      );
      const afterEc = await fetchSigned(ec);
      assert.deepEqual(summary(afterEc), ['channel:plant-7:v3', 'device:-:v2']);
      const v3 = (await unwrap(ec, afterEc)).get('channel:plant-7:3')!;
      assert.ok(![ecRaw2.get('channel:plant-7:1'), ecRaw2.get('channel:plant-7:2')].some((k) => k!.equals(v3)));
      assertProblem(await api.get('/v1/session-keys').set({ Authorization: signedHeader(rsa) }), 403, /revoked/);
      const refused = await fetchTls(rsa);
      assert.equal(refused.status, 403);
      assert.match(String(refused.body.detail), /revoked/);

      // No key material in the database or the audit log, in any encoding.
      for (const raw of [v3, ...ecRaw2.values()]) {
        for (const table of ['session_keys', 'audit_log', 'channels', 'channel_members', 'replay_guard']) {
          for (const row of (await svc.db.raw(`select * from ${table}`)).rows as Record<string, unknown>[]) {
            for (const v of Object.values(row)) {
              const bytes = v instanceof Uint8Array ? Buffer.from(v) : Buffer.from(JSON.stringify(v ?? null));
              for (const form of [
                raw,
                Buffer.from(raw.toString('base64')),
                Buffer.from(raw.toString('base64url')),
                Buffer.from(raw.toString('hex')),
              ]) {
                assert.ok(!bytes.includes(form), `key material in ${table}`);
              }
            }
          }
        }
      }
    });

    it('refuses bad device credentials with 401/403 problem+json: wrong, replayed, stale, renewal, unknown certificate, none; Ed25519 gets a 400 saying why', async () => {
      const d = devices['sk-out']!;
      const header = signedHeader(d);
      await api.get('/v1/session-keys').set({ Authorization: header }).expect(200);
      assertProblem(await api.get('/v1/session-keys').set({ Authorization: header }), 401, /replay/);
      assertProblem(
        await api
          .get('/v1/session-keys')
          .set({ Authorization: signedHeader(d, { key: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey }) }),
        401,
        /does not verify/,
      );
      assertProblem(
        await api.get('/v1/session-keys').set({ Authorization: signedHeader(d, { at: new Date(clock.now().getTime() - HOUR) }) }),
        401,
        /stale/,
      );
      assertProblem(
        await api.get('/v1/session-keys').set({ Authorization: signedHeader(d, { at: new Date(clock.now().getTime() + 6 * 60_000) }) }),
        401,
        /stale/,
      );
      // A renewal signature (its own prefix) does not open the session keys.
      const at = clock.now().toISOString();
      assertProblem(
        await api.get('/v1/session-keys').set({ Authorization: signedHeader(d, { input: renewalSigningInput(at, Buffer.from('csr')) }) }),
        401,
        /does not verify/,
      );
      // A certificate this CA did not issue, for the same name, signed properly with its key.
      const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
      const stranger = await x509.X509CertificateGenerator.createSelfSigned({
        name: `CN=${d.id}`,
        keys,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
        notBefore: new Date(clock.now().getTime() - HOUR),
        notAfter: new Date(clock.now().getTime() + 24 * HOUR),
      });
      const strangerKey = createPrivateKey({
        key: Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
        format: 'der',
        type: 'pkcs8',
      });
      assertProblem(
        await api.get('/v1/session-keys').set({ Authorization: signedHeader(d, { der: Buffer.from(stranger.rawData), key: strangerKey }) }),
        401,
        /not issued by this CA/,
      );
      assertProblem(
        await api.get('/v1/session-keys').set({ Authorization: signedHeader(d, { der: Buffer.from('not a certificate') }) }),
        401,
        /cannot be parsed/,
      );
      assertProblem(await api.get('/v1/session-keys').set({ Authorization: 'MQTT-CA-SessionKeys cert="x"' }), 401);
      assertProblem(await api.get('/v1/session-keys'), 401, /certificate is required/);
      assertProblem(await api.get('/v1/session-keys').set(auth.admin!), 401, /certificate is required/);
      assertProblem(await api.get('/v1/session-keys?debug=1').set({ Authorization: signedHeader(d) }), 400);
      // Ed25519: authenticated, but no key agreement or encryption with a signature-only key.
      const ed = devices['sk-ed']!;
      assertProblem(await api.get('/v1/session-keys').set({ Authorization: signedHeader(ed) }), 400, /Ed25519/);
      const edTls = await fetchTls(ed);
      assert.equal(edTls.status, 400);
      assert.match(String(edTls.body.detail), /Ed25519/);
      assert.equal(
        (await api.get(`/v1/devices/${ed.id}/session-keys`).set(auth.operator!).expect(200)).body.items.length,
        0,
        'no key made for it',
      );
    });

    it('the operator API: roles, unknown channels and devices (404), bad input (400), never a 500', async () => {
      await api.post('/v1/channels').set(auth.auditor!).send({ name: 'ops-1', topicTree: 'ops/#' }).expect(403);
      await api.post('/v1/channels').set(auth.provisioner!).send({ name: 'ops-1', topicTree: 'ops/#' }).expect(403);
      await api.post('/v1/channels').set(auth.admin!).send({ name: 'ops-1', topicTree: 'ops/#' }).expect(201);
      assertProblem(await api.post('/v1/channels').set(auth.operator!).send({ name: 'ops-1', topicTree: 'ops/#' }), 409);
      assertProblem(await api.post('/v1/channels').set(auth.operator!).send({ name: 'bad name', topicTree: 'x' }), 400);
      assertProblem(await api.post('/v1/channels').set(auth.operator!).send({ name: 'ops-2' }), 400);
      assertProblem(await api.post('/v1/channels').set(auth.operator!).send({ name: 'ops-2', topicTree: 'a/#/b' }), 400, /#/);
      assertProblem(
        await api.post('/v1/channels').set(auth.operator!).send({ name: 'ops-2', topicTree: 'x', periodSeconds: 600, overlapSeconds: 700 }),
        400,
        /overlap/,
      );
      assertProblem(
        await api
          .post('/v1/channels')
          .set(auth.operator!)
          .send({ name: 'ops-2', topicTree: 'x', members: ['ghost-1'] }),
        404,
        /ghost-1/,
      );
      assertProblem(await api.post('/v1/channels').set(auth.operator!).send({ name: 'ops-2', topicTree: 'x', extra: true }), 400);
      assertProblem(await api.post('/v1/channels').set(auth.operator!).set('Content-Type', 'application/json').send('{"name":'), 400);
      assertProblem(await api.get('/v1/channels/nope').set(auth.auditor!), 404);
      assertProblem(await api.get('/v1/channels/nope/keys').set(auth.auditor!), 404);
      assertProblem(await api.get('/v1/channels/nope/members').set(auth.auditor!), 404);
      assertProblem(await api.post('/v1/channels/nope/rotate').set(auth.operator!), 404);
      assertProblem(
        await api
          .post('/v1/channels/nope/members')
          .set(auth.operator!)
          .send({ deviceIds: ['sk-ec'] }),
        404,
      );
      assertProblem(await api.delete('/v1/channels/nope/members/sk-ec').set(auth.operator!), 404);
      assertProblem(await api.get('/v1/channels/bad%20name').set(auth.auditor!), 400);
      assertProblem(await api.get('/v1/devices/nobody/session-keys').set(auth.auditor!), 404);
      assertProblem(
        await api
          .post('/v1/channels/ops-1/members')
          .set(auth.operator!)
          .send({ deviceIds: ['ghost-2'] }),
        404,
        /ghost-2/,
      );
      assertProblem(await api.post('/v1/channels/ops-1/members').set(auth.operator!).send({ deviceIds: [] }), 400);
      assertProblem(
        await api
          .post('/v1/channels/ops-1/members')
          .set(auth.auditor!)
          .send({ deviceIds: ['sk-ec'] }),
        403,
      );
      assertProblem(await api.delete('/v1/channels/ops-1/members/sk-ec').set(auth.operator!), 404, /not a member/);
      assertProblem(await api.post('/v1/channels/ops-1/rotate').set(auth.operator!).send({ immediate: 'yes' }), 400);
      assertProblem(await api.get('/v1/channels').query({ cursor: '***' }).set(auth.auditor!), 400);
      assertProblem(await api.get('/v1/channels').query({ limit: 0 }).set(auth.auditor!), 400);
      assertProblem(await api.get('/v1/channels').set(auth.provisioner!), 403);
      assertProblem(await api.get('/v1/channels'), 401);

      const added = (
        await api
          .post('/v1/channels/ops-1/members')
          .set(auth.operator!)
          .send({ deviceIds: ['sk-ec', 'sk-out'] })
          .expect(200)
      ).body;
      assert.deepEqual(added.added.sort(), ['sk-ec', 'sk-out']);
      const rotated = (await api.post('/v1/channels/ops-1/rotate').set(auth.operator!).expect(201)).body;
      assert.equal(rotated.version, 2);
      const immediate = (await api.post('/v1/channels/ops-1/rotate').set(auth.operator!).send({ immediate: true }).expect(201)).body;
      assert.equal(immediate.version, 3);
      const removed = (await api.delete('/v1/channels/ops-1/members/sk-out').set(auth.operator!).expect(200)).body;
      assert.equal(removed.key.version, 4);
      assert.equal(removed.channel.memberCount, 1);
      const members = (await api.get('/v1/channels/ops-1/members').set(auth.auditor!).expect(200)).body;
      assert.deepEqual(
        members.items.map((m: { deviceId: string }) => m.deviceId),
        ['sk-ec'],
      );
      const list = (await api.get('/v1/channels').query({ limit: 1 }).set(auth.auditor!).expect(200)).body;
      assert.equal(list.items.length, 1);
      const next = (await api.get('/v1/channels').query({ limit: 1, cursor: list.nextCursor }).set(auth.auditor!).expect(200)).body;
      assert.notEqual(next.items[0].name, list.items[0].name);
      const page = (await api.get('/v1/channels/ops-1/keys').query({ limit: 2 }).set(auth.auditor!).expect(200)).body;
      assert.deepEqual(
        page.items.map((k: { version: number }) => k.version),
        [4, 3],
      );
      const rest = (await api.get('/v1/channels/ops-1/keys').query({ limit: 2, cursor: page.nextCursor }).set(auth.auditor!).expect(200))
        .body;
      assert.deepEqual(
        rest.items.map((k: { version: number }) => k.version),
        [2, 1],
      );
      assert.equal(rest.nextCursor, null);
      const audit = (
        await api.get('/v1/audit').query({ targetType: 'channel', targetId: 'ops-1', limit: 50 }).set(auth.auditor!).expect(200)
      ).body.items;
      const actions = new Set(audit.map((e: { action: string }) => e.action));
      for (const a of [
        'channel.created',
        'channel.members-added',
        'channel.member-removed',
        'session-key.created',
        'session-key.rotated',
        'session-key.revoked',
      ])
        assert.ok(actions.has(a), a);
    });
  });
}
