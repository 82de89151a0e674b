import { describe, it, before, after, afterEach } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createPrivateKey, sign, webcrypto } from 'node:crypto';
import request from 'supertest';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import * as x509 from '@peculiar/x509';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { toolSkip } from '../helpers/tools.js';
import { p256Csr } from '../helpers/csr.js';
import { KEY_ARGS, opensslCsr, opensslVerify, run, tempDir, writeTemp } from '../helpers/openssl.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { bootstrap } from '../../src/bootstrap.js';
import { ext } from '../../src/ca/x509/extensions.js';
import { renewalSigningInput } from '../../src/enroll/device-certificate-auth.js';
import { ManualClock } from '../../src/shared/clock.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type Agent = ReturnType<typeof request>;

for (const target of dbTargets) {
  describe(`enrollment on ${target.name}`, { skip: target.skip ?? toolSkip('openssl') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let admin: Record<string, string>;
    const clock = new ManualClock(new Date());
    before(async () => {
      svc = await makeService(target, { clock });
      const boot = await bootstrap(svc);
      admin = { Authorization: `Bearer ${boot.adminKey}` };
      api = request(createHttpHandler(svc, { validateResponses: true }));
    });
    after(async () => svc?.dispose());
    // Refusals count against the source (127.0.0.1 here) and block it after 10 in a minute:
    // past the longest block, each test starts with a clean slate.
    // openssl checks validity against the service's (test) clock, which runs ahead of the wall clock.
    const verifyAt = (root: string, inter: string[], leaf: string, extra: string[] = []) =>
      opensslVerify(root, inter, leaf, [...extra, '-attime', String(Math.floor(clock.now().getTime() / 1000))]);
    const forgetFailures = () => clock.advance(11 * 60_000);
    afterEach(forgetFailures);

    const register = (body: Record<string, unknown>) => api.post('/v1/devices').set(admin).send(body).expect(201);
    const token = async (body: Record<string, unknown>) =>
      (await api.post('/v1/enrollment-tokens').set(admin).send(body).expect(201)).body as { id: string; token: string };
    const enroll = (tok: string, csr: string, headers: Record<string, string> = {}) =>
      api
        .post('/v1/enroll')
        .set({ Authorization: `Bearer ${tok}`, ...headers })
        .send({ csr });
    const certCount = async () => Number((await svc.db('certificates').count({ n: 'serial' }))[0]!.n);
    const eventCount = async () => Number((await svc.db('security_events').count({ n: 'id' }))[0]!.n);

    it('enrolls a device with its token and an OpenSSL CSR; the chain verifies; the device becomes active; the token is spent', async () => {
      await register({ id: 'meter-0001', kind: 'client', model: 'M1', lot: 'L-A' });
      const t = await token({ deviceId: 'meter-0001' });
      const { csrPem } = opensslCsr([...KEY_ARGS.p256], '/CN=meter-0001');
      const res = await enroll(t.token, csrPem).expect(201);
      const [issuer, root] = res.body.chain;
      const v = verifyAt(root, [issuer], res.body.certificate, ['-purpose', 'sslclient']);
      assert.equal(v.status, 0, v.stderr);
      assert.equal(new x509.X509Certificate(res.body.certificate).subject, 'CN=meter-0001');
      const device = (await api.get('/v1/devices/meter-0001').set(admin).expect(200)).body;
      assert.equal(device.status, 'active');
      assert.equal(device.currentSerial, res.body.serial);
      assert.ok(device.activatedAt);
      const tok = (await api.get(`/v1/enrollment-tokens/${t.id}`).set(admin).expect(200)).body;
      assert.equal(tok.uses, 1);
      assert.equal(tok.status, 'used-up');
      assert.ok(!JSON.stringify(tok).includes(t.token.split('_').slice(3).join('_')), 'the secret is never listed');
      // Spent: a second enrollment is refused and issues nothing.
      const before = await certCount();
      assertProblem(await enroll(t.token, opensslCsr([...KEY_ARGS.p256], '/CN=meter-0001').csrPem), 403, /used up|already enrolled/);
      assert.equal(await certCount(), before);
      const audit = await svc.audit.list({ limit: 20, targetId: 'meter-0001' });
      assert.ok(audit.items.some((e) => e.action === 'device.activated'));
    });

    it('a retry with the same Idempotency-Key returns the same certificate, never a second one', async () => {
      await register({ id: 'meter-0002', kind: 'client' });
      const t = await token({ deviceId: 'meter-0002' });
      const csr = p256Csr('meter-0002');
      const first = await enroll(t.token, csr.pem, { 'Idempotency-Key': 'k-0002' }).expect(201);
      const before = await certCount();
      for (let i = 0; i < 3; i++) {
        const again = await enroll(t.token, csr.pem, { 'Idempotency-Key': 'k-0002' }).expect(201);
        assert.equal(again.headers['idempotent-replayed'], 'true');
        assert.deepEqual(again.body, first.body);
      }
      assert.equal(await certCount(), before);
      assertProblem(await enroll(t.token, p256Csr('meter-0002').pem, { 'Idempotency-Key': 'k-0002' }), 422, /different request/);
    });

    it('accepts application/pkcs10 bodies as DER and as base64, and CSRs made by @peculiar/x509', async () => {
      await register({ id: 'meter-0003', kind: 'client' });
      await register({ id: 'meter-0004', kind: 'client' });
      await register({ id: 'meter-0005', kind: 'client' });
      const der = p256Csr('meter-0003').der;
      const t3 = await token({ deviceId: 'meter-0003' });
      await api
        .post('/v1/enroll')
        .set({ Authorization: `Bearer ${t3.token}`, 'Content-Type': 'application/pkcs10' })
        .send(der)
        .expect(201);
      const t4 = await token({ deviceId: 'meter-0004' });
      await api
        .post('/v1/enroll')
        .set({ Authorization: `Bearer ${t4.token}`, 'Content-Type': 'application/pkcs10' })
        .send(p256Csr('meter-0004').der.toString('base64'))
        .expect(201);
      const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']);
      const libCsr = await x509.Pkcs10CertificateRequestGenerator.create({
        name: 'CN=meter-0005',
        keys,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' },
      });
      const t5 = await token({ deviceId: 'meter-0005' });
      const res = await enroll(t5.token, libCsr.toString('pem')).expect(201);
      assert.equal(verifyAt(res.body.chain[1], [res.body.chain[0]], res.body.certificate).status, 0);
    });

    it('a token for one device fails for another, and a device cannot ask for other names or CA rights', async () => {
      await register({ id: 'meter-0006', kind: 'client' });
      await register({ id: 'meter-0007', kind: 'client' });
      const t = await token({ deviceId: 'meter-0006', maxUses: 5 });
      const before = [await certCount(), await eventCount()];
      assertProblem(await enroll(t.token, p256Csr('meter-0007').pem), 403, /meter-0007.*meter-0006/);
      assertProblem(
        await enroll(t.token, p256Csr(undefined, { sans: [{ type: 'uri', value: 'urn:mqtt-ca:device:meter-0007' }] }).pem),
        403,
        /may not have/,
      );
      assertProblem(
        await enroll(t.token, p256Csr('meter-0006', { sans: [{ type: 'dns', value: 'broker.example' }] }).pem),
        403,
        /dns:broker.example/,
      );
      assertProblem(
        await enroll(t.token, p256Csr('meter-0006', { extensions: [ext.basicConstraints({ ca: true })] }).pem),
        422,
        /CA rights/,
      );
      assertProblem(
        await enroll(t.token, p256Csr('meter-0006', { extensions: [ext.extendedKeyUsage(['1.3.6.1.5.5.7.3.1'])] }).pem),
        422,
        /2\.5\.29\.37/,
      );
      assert.equal(await certCount(), before[0]);
      // Each refusal is a security event; the fifth for one device also trips the failing-identity rule,
      // whose hold finds no certificate to hold (the device has none yet).
      assert.equal(await eventCount(), before[1]! + 6, 'each refusal is a security event');
      const tripped = (await api.get('/v1/events').query({ kind: 'identity.repeated-failures' }).set(admin).expect(200)).body.items;
      assert.equal(tripped.length, 1);
      assert.equal(tripped[0].subject, 'meter-0006');
      assert.deepEqual(tripped[0].details.responses['suspend-device'], { held: null, status: 'registered' });
      const events = (await api.get('/v1/events').query({ kind: 'enrollment.refused', limit: 5 }).set(admin).expect(200)).body.items;
      assert.equal(events[0].subject, 'meter-0006');
      assert.match(events[0].details.reason, /2\.5\.29\.37/);
      const audit = await svc.audit.list({ limit: 5, action: 'security.enrollment.refused' });
      assert.equal(audit.items.length, 5);
      // The same token, with its own identity, still works.
      await enroll(t.token, p256Csr('meter-0006', { sans: [{ type: 'uri', value: 'urn:mqtt-ca:device:meter-0006' }] }).pem).expect(201);
    });

    it('holds /v1/enroll to the OpenAPI contract: media type, body schema, headers, query, method', async () => {
      await register({ id: 'meter-0009', kind: 'client' });
      const t = await token({ deviceId: 'meter-0009' });
      const good = p256Csr('meter-0009');
      const auth = { Authorization: `Bearer ${t.token}` };
      const before = await certCount();
      assertProblem(
        await api
          .post('/v1/enroll')
          .set({ ...auth, 'Content-Type': 'text/plain' })
          .send(good.pem),
        415,
      );
      assertProblem(await api.post('/v1/enroll').set(auth).send({ csr: '' }), 400);
      assertProblem(await api.post('/v1/enroll').set(auth).send({ csr: 7 }), 400);
      assertProblem(
        await api
          .post('/v1/enroll')
          .set({ ...auth, 'Content-Type': 'application/json' })
          .send('{"csr": '),
        400,
        /JSON/,
      );
      assertProblem(
        await api
          .post('/v1/enroll')
          .set({ ...auth, 'Idempotency-Key': 'k'.repeat(256) })
          .send({ csr: good.pem }),
        400,
        /idempotency-key/i,
      );
      assertProblem(await api.post('/v1/enroll?debug=1').set(auth).send({ csr: good.pem }), 400, /query/);
      assertProblem(await api.get('/v1/enroll').set(auth), 405);
      assert.equal(await certCount(), before);
      // The request id is echoed, as on every other route; the DER body (application/pkcs10) enrolls.
      const res = await api
        .post('/v1/enroll')
        .set({ ...auth, 'Content-Type': 'application/pkcs10', 'X-Request-Id': 'factory-line-7-0001' })
        .send(good.der)
        .expect(201);
      assert.equal(res.headers['x-request-id'], 'factory-line-7-0001');
      assert.equal(await certCount(), before + 1);
    });

    it('a client that hangs up mid-body issues nothing and leaves the server serving', async () => {
      await register({ id: 'meter-0010', kind: 'client' });
      const t = await token({ deviceId: 'meter-0010' });
      const body = JSON.stringify({ csr: p256Csr('meter-0010').pem });
      const server = createServer(createHttpHandler(svc, { validateResponses: true }));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      try {
        const port = (server.address() as { port: number }).port;
        const before = await certCount();
        await new Promise<void>((resolve) => {
          const sock = connect(port, '127.0.0.1', () => {
            sock.write(
              `POST /v1/enroll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${t.token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 40)}`,
            );
            setTimeout(() => sock.destroy(), 50);
          });
          sock.on('close', () => resolve());
          sock.on('error', () => undefined);
        });
        assert.equal(await certCount(), before);
        await request(server)
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${t.token}` })
          .send(body)
          .type('json')
          .expect(201);
        assert.equal(await certCount(), before + 1);
      } finally {
        server.close();
      }
    });

    it('refuses bad CSRs and bad tokens with 4xx problem+json, issuing nothing', async () => {
      await register({ id: 'meter-0008', kind: 'client' });
      const t = await token({ deviceId: 'meter-0008', maxUses: 3 });
      const before = await certCount();
      const good = p256Csr('meter-0008');
      const truncated = good.der.subarray(0, good.der.length - 10);
      const flipped = Buffer.from(good.der);
      flipped[flipped.length - 3] = flipped[flipped.length - 3]! ^ 0x55;
      const cases: [Record<string, string>, string | Buffer, string, number, RegExp?][] = [
        [{}, 'garbage', 'application/json', 400],
        [{}, truncated, 'application/pkcs10', 400],
        [{}, flipped, 'application/pkcs10', 400, /signature|proof/],
        [{}, Buffer.alloc(300_000, 0x30), 'application/pkcs10', 413],
        [{}, svc.config.publicUrl, 'application/json', 400],
        [{}, opensslCsr([...KEY_ARGS.rsa1024], '/CN=meter-0008').csrPem, 'application/json', 400, /2048/],
        [{}, opensslCsr([...KEY_ARGS.p521], '/CN=meter-0008').csrPem, 'application/json', 400, /curve/],
        [
          { Authorization: 'Bearer mqet_et_00000000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' },
          good.pem,
          'application/json',
          401,
        ],
        [{ Authorization: 'Bearer not-a-token' }, good.pem, 'application/json', 401],
        [{ Authorization: `Bearer ${t.token}x` }, good.pem, 'application/json', 401],
        [{ Authorization: '' }, good.pem, 'application/json', 401],
      ];
      for (const [n, [headers, body, type, status, re]] of cases.entries()) {
        if (n % 8 === 7) forgetFailures();
        const req = api.post('/v1/enroll').set({ Authorization: `Bearer ${t.token}`, 'Content-Type': type, ...headers });
        const res = await (type === 'application/json' ? req.send(JSON.stringify({ csr: body })) : req.send(body));
        assertProblem(res, status, re);
      }
      forgetFailures();
      const cert = (await api.get('/v1/cas').set(admin)).body.items[0].certificate;
      assertProblem(await enroll(t.token, cert), 400, /certificate|CERTIFICATE REQUEST/);
      assertProblem(
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${t.token}` })
          .send({ csr: good.pem, extra: 1 }),
        400,
      );
      // Revoked and expired tokens.
      const revoked = await token({ deviceId: 'meter-0008' });
      await api.delete(`/v1/enrollment-tokens/${revoked.id}`).set(admin).expect(200);
      assertProblem(await enroll(revoked.token, good.pem), 401, /revoked/);
      const expiring = await token({ deviceId: 'meter-0008', expiresInSeconds: 60 });
      clock.advance(61_000);
      assertProblem(await enroll(expiring.token, good.pem), 401, /expired/);
      assert.equal(await certCount(), before);
      await enroll(t.token, good.pem).expect(201);
      // A one-use token presented with a CSR whose signature fails keeps its use (the spend, made
      // while the signature was checked, is refunded), and then enrolls.
      await register({ id: 'meter-0008b', kind: 'client' });
      const once = await token({ deviceId: 'meter-0008b', maxUses: 1 });
      const goodB = p256Csr('meter-0008b');
      const flippedB = Buffer.from(goodB.der);
      flippedB[flippedB.length - 3] = flippedB[flippedB.length - 3]! ^ 0x55;
      forgetFailures();
      assertProblem(
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${once.token}`, 'Content-Type': 'application/pkcs10' })
          .send(flippedB),
        400,
        /signature|proof/,
      );
      assert.equal((await api.get(`/v1/enrollment-tokens/${once.id}`).set(admin).expect(200)).body.uses, 0);
      await enroll(once.token, goodB.pem).expect(201);
    });

    it('imports a 1,000-device lot and provisions it with one lot token, each device once', async () => {
      const devices = Array.from({ length: 1000 }, (_, i) => ({ id: `lot9-${String(i).padStart(4, '0')}`, kind: 'client', model: 'S2' }));
      await api.post('/v1/devices/import').set(admin).send({ lot: 'LOT-9', devices }).expect(201);
      const t = await token({ lot: 'LOT-9' });
      const csrs = devices.map((d) => p256Csr(d.id));
      const before = await certCount();
      const results: { serial: string }[] = [];
      for (let i = 0; i < csrs.length; i += 50) {
        const batch = await Promise.all(
          csrs.slice(i, i + 50).map((c, j) => enroll(t.token, c.pem, { 'Idempotency-Key': `lot9-${i + j}` }).expect(201)),
        );
        results.push(...batch.map((r) => r.body));
      }
      assert.equal(new Set(results.map((r) => r.serial)).size, 1000);
      assert.equal(await certCount(), before + 1000);
      // Retried with the same keys: the same certificates, nothing new.
      const retried = await Promise.all(
        csrs.slice(0, 50).map((c, j) => enroll(t.token, c.pem, { 'Idempotency-Key': `lot9-${j}` }).expect(201)),
      );
      assert.deepEqual(
        retried.map((r) => r.body.serial),
        results.slice(0, 50).map((r) => r.serial),
      );
      assert.equal(await certCount(), before + 1000);
      const active = await api.get('/v1/devices').query({ lot: 'LOT-9', status: 'active', limit: 500 }).set(admin).expect(200);
      assert.equal(active.body.items.length, 500);
      // Each device once; devices outside the lot never.
      assertProblem(await enroll(t.token, p256Csr('lot9-0001').pem), 403, /already enrolled|used up/);
      assertProblem(await enroll(t.token, p256Csr('meter-0001').pem), 403, /not in lot LOT-9/);
      assertProblem(await enroll(t.token, p256Csr('nobody-at-all').pem), 403, /not in the inventory/);
      assertProblem(await enroll(t.token, p256Csr().pem), 403, /common name/);
      const tok = (await api.get(`/v1/enrollment-tokens/${t.id}`).set(admin)).body;
      assert.equal(tok.uses, 1000);
      // Idempotency-Keys need only be unique per device: two devices of a lot may both send "retry-1".
      await api
        .post('/v1/devices/import')
        .set(admin)
        .send({ lot: 'LOT-10', devices: [{ id: 'lot10-a' }, { id: 'lot10-b' }] })
        .expect(201);
      const t10 = await token({ lot: 'LOT-10' });
      const a = await enroll(t10.token, p256Csr('lot10-a').pem, { 'Idempotency-Key': 'retry-1' }).expect(201);
      const b = await enroll(t10.token, p256Csr('lot10-b').pem, { 'Idempotency-Key': 'retry-1' }).expect(201);
      assert.notEqual(a.body.serial, b.body.serial);
    });

    it('issues broker certificates through a broker-bound token, with the names the token allows', async () => {
      await register({ id: 'broker-east-1', kind: 'broker', site: 'east' });
      assertProblem(await api.post('/v1/enrollment-tokens').set(admin).send({ deviceId: 'broker-east-1' }), 400, /DNS names/);
      const t = await token({ deviceId: 'broker-east-1', dnsNames: ['mqtt-east.grid.example'], ipAddresses: ['10.20.0.5'] });
      assertProblem(
        await enroll(t.token, p256Csr('broker-east-1', { sans: [{ type: 'dns', value: 'mqtt-west.grid.example' }] }).pem),
        403,
        /mqtt-west/,
      );
      const res = await enroll(t.token, p256Csr('broker-east-1', { sans: [{ type: 'dns', value: 'mqtt-east.grid.example' }] }).pem).expect(
        201,
      );
      const v = verifyAt(res.body.chain[1], [res.body.chain[0]], res.body.certificate, [
        '-purpose',
        'sslserver',
        '-verify_hostname',
        'mqtt-east.grid.example',
      ]);
      assert.equal(v.status, 0, v.stderr);
      assert.equal(verifyAt(res.body.chain[1], [res.body.chain[0]], res.body.certificate, ['-verify_ip', '10.20.0.5']).status, 0);
      // A device token cannot get a broker certificate.
      await register({ id: 'meter-0100', kind: 'client' });
      assertProblem(
        await api
          .post('/v1/enrollment-tokens')
          .set(admin)
          .send({ deviceId: 'meter-0100', profile: 'broker', dnsNames: ['x.example'] }),
        400,
      );
    });

    it('generates the key server-side and returns it once as PKCS#12 or encrypted PKCS#8, never stored', async () => {
      await register({ id: 'meter-0200', kind: 'client' });
      await register({ id: 'meter-0201', kind: 'client' });
      const t = await token({ deviceId: 'meter-0200' });
      const res = await api
        .post('/v1/enroll/serverkeygen')
        .set({ Authorization: `Bearer ${t.token}` })
        .send({ password: 'correct horse battery' })
        .expect(201);
      assert.equal(res.headers['cache-control'], 'no-store');
      const dir = tempDir();
      const p12 = writeTemp(dir, 'k.p12', Buffer.from(res.body.pkcs12, 'base64'));
      const info = run('openssl', ['pkcs12', '-in', p12, '-nodes', '-passin', 'pass:correct horse battery']);
      assert.equal(info.status, 0, info.stderr);
      assert.match(info.stdout, /subject=CN = meter-0200/);
      assert.notEqual(run('openssl', ['pkcs12', '-in', p12, '-nodes', '-passin', 'pass:wrong password']).status, 0);
      const keyPub = run('openssl', ['pkey', '-pubout'], info.stdout.slice(info.stdout.indexOf('-----BEGIN PRIVATE KEY-----'))).stdout;
      const certPub = run('openssl', ['x509', '-pubkey', '-noout'], res.body.certificate).stdout;
      assert.equal(keyPub, certPub);
      const t2 = await token({ deviceId: 'meter-0201' });
      const pem = await api
        .post('/v1/enroll/serverkeygen')
        .set({ Authorization: `Bearer ${t2.token}` })
        .send({ password: 'another long password', format: 'pkcs8', keyAlgorithm: 'RSA-2048' })
        .expect(201);
      assert.match(pem.body.privateKey, /BEGIN ENCRYPTED PRIVATE KEY/);
      assert.equal(run('openssl', ['pkey', '-passin', 'pass:another long password', '-noout'], pem.body.privateKey).status, 0);
      // No private key anywhere in the database: only CA and service keys are kept, and sealed.
      const keyPem = info.stdout.slice(info.stdout.indexOf('-----BEGIN PRIVATE KEY-----'));
      const scalar = Buffer.from(createPrivateKey(keyPem).export({ format: 'jwk' }).d!, 'base64url');
      for (const table of ['key_material', 'certificates', 'audit_log', 'idempotency_keys', 'settings', 'security_events']) {
        for (const row of (await svc.db.raw(`select * from ${table}`)).rows as Record<string, unknown>[]) {
          for (const v of Object.values(row)) {
            const bytes = v instanceof Uint8Array ? Buffer.from(v) : Buffer.from(JSON.stringify(v ?? null));
            assert.ok(!bytes.includes(scalar) && !bytes.includes(Buffer.from(scalar.toString('base64'))), `key material in ${table}`);
          }
        }
      }
      assertProblem(
        await api
          .post('/v1/enroll/serverkeygen')
          .set({ Authorization: `Bearer ${t.token}` })
          .send({ password: 'short' }),
        400,
      );
      assertProblem(
        await api
          .post('/v1/enroll/serverkeygen')
          .set({ Authorization: `Bearer ${t.token}`, 'Idempotency-Key': 'x' })
          .send({ password: 'long enough password' }),
        400,
        /Idempotency-Key/,
      );
    });

    it('renews with a request signed by the current key (behind a TLS proxy): lineage recorded, replays and stale signatures refused', async () => {
      await register({ id: 'meter-0300', kind: 'client' });
      const t = await token({ deviceId: 'meter-0300' });
      const csr = p256Csr('meter-0300');
      const first = (await enroll(t.token, csr.pem).expect(201)).body;
      const certDer = Buffer.from(
        first.certificate
          .split('\n')
          .filter((l: string) => l && !l.startsWith('-----'))
          .join(''),
        'base64',
      );
      const renewWith = (newCsr: Buffer, signedAt: string, key = csr.privateKey) => {
        const signature = sign('sha256', renewalSigningInput(signedAt, newCsr), key);
        return `MQTT-CA-Renewal cert="${certDer.toString('base64')}", signed-at="${signedAt}", signature="${signature.toString('base64')}"`;
      };
      const next = p256Csr('meter-0300');
      const header = renewWith(next.der, clock.now().toISOString());
      const renewed = await api.post('/v1/renew').set({ Authorization: header }).send({ csr: next.pem }).expect(201);
      const got = (await api.get(`/v1/certificates/${renewed.body.serial}`).set(admin).expect(200)).body;
      assert.equal(got.renewedFrom, first.serial);
      assert.equal((await api.get('/v1/devices/meter-0300').set(admin)).body.currentSerial, renewed.body.serial);
      assertProblem(await api.post('/v1/renew').set({ Authorization: header }).send({ csr: next.pem }), 401, /replay/);
      assertProblem(
        await api
          .post('/v1/renew')
          .set({ Authorization: renewWith(next.der, new Date(clock.now().getTime() - 3600_000).toISOString()) })
          .send({ csr: next.pem }),
        401,
        /stale/,
      );
      assertProblem(
        await api
          .post('/v1/renew')
          .set({ Authorization: renewWith(next.der, clock.now().toISOString(), p256Csr().privateKey) })
          .send({ csr: next.pem }),
        401,
        /does not verify/,
      );
      assertProblem(
        await api
          .post('/v1/renew')
          .set({ Authorization: renewWith(p256Csr('meter-0300').der, clock.now().toISOString()) })
          .send({ csr: next.pem }),
        401,
        /does not verify/,
      );
      // A token does not renew; renewal keeps the identity.
      assertProblem(
        await api
          .post('/v1/renew')
          .set({ Authorization: `Bearer ${t.token}` })
          .send({ csr: next.pem }),
        401,
      );
      const other = p256Csr('meter-9999');
      assertProblem(
        await api
          .post('/v1/renew')
          .set({ Authorization: renewWith(other.der, clock.now().toISOString()) })
          .send({ csr: other.pem }),
        403,
        /meter-9999/,
      );
    });

    it('lets an offline device renew within the grace after expiry, not beyond it; a revoked certificate never', async () => {
      await register({ id: 'meter-0400', kind: 'client' });
      const t = await token({ deviceId: 'meter-0400' });
      const csr = p256Csr('meter-0400');
      const first = (await enroll(t.token, csr.pem).expect(201)).body;
      const certDer = Buffer.from(
        first.certificate
          .split('\n')
          .filter((l: string) => l && !l.startsWith('-----'))
          .join(''),
        'base64',
      );
      const renewAt = (at: Date) => {
        const n = p256Csr('meter-0400');
        const signedAt = at.toISOString();
        const signature = sign('sha256', renewalSigningInput(signedAt, n.der), csr.privateKey);
        return api
          .post('/v1/renew')
          .set({
            Authorization: `MQTT-CA-Renewal cert="${certDer.toString('base64')}", signed-at="${signedAt}", signature="${signature.toString('base64')}"`,
          })
          .send({ csr: n.pem });
      };
      clock.set(new Date(Date.parse(first.notAfter) + 10 * 86_400_000));
      await renewAt(clock.now()).expect(201);
      clock.set(new Date(Date.parse(first.notAfter) + 31 * 86_400_000));
      assertProblem(await renewAt(clock.now()), 403, /grace/);
      await svc.revocations.revoke(first.serial, { reason: 'superseded' }, { actor: 'test' });
      assertProblem(await renewAt(clock.now()), 403, /revoked/);
    });

    it('slows a source after repeated failures: 429 with Retry-After for requests without a valid credential, recorded as a security event, lifted later', async () => {
      await register({ id: 'meter-0600', kind: 'client' });
      const t = await token({ deviceId: 'meter-0600' });
      const wrong = 'mqet_et_00000000000000000000_' + 'A'.repeat(43);
      for (let i = 0; i < 10; i++) assertProblem(await enroll(wrong, p256Csr('meter-0600').pem), 401);
      const blocked = await enroll(wrong, p256Csr('meter-0600').pem);
      assertProblem(blocked, 429);
      assert.ok(Number(blocked.headers['retry-after']) > 0);
      const events = (await api.get('/v1/events').query({ kind: 'source.blocked' }).set(admin).expect(200)).body.items;
      assert.equal(events.length, 1);
      assert.ok(events[0].source.includes('127.0.0.1'));
      // A valid token is served from the blocked address: the block stops guessing, not the gateway's devices.
      await enroll(t.token, p256Csr('meter-0600').pem).expect(201);
      clock.advance(Number(blocked.headers['retry-after']) * 1000 + 1);
      assertProblem(await enroll(wrong, p256Csr('meter-0600').pem), 401);
    });

    it('does not let a decommissioned device enroll or renew', async () => {
      await register({ id: 'meter-0500', kind: 'client' });
      const t = await token({ deviceId: 'meter-0500', maxUses: 2 });
      await api.post('/v1/devices/meter-0500/decommission').set(admin).expect(200);
      assertProblem(await enroll(t.token, p256Csr('meter-0500').pem), 403, /decommissioned/);
      assertProblem(await api.post('/v1/enrollment-tokens').set(admin).send({ deviceId: 'meter-0500' }), 400, /decommissioned/);
    });
  });
}
