import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import request from 'supertest';
import * as x509 from '@peculiar/x509';
import { dbTargets } from '../helpers/db.js';
import { toolSkip } from '../helpers/tools.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { KEY_ARGS, opensslCsr, opensslVerify, run, tempDir, writeTemp } from '../helpers/openssl.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import type { Serial } from '../../src/shared/ids.js';

type Agent = ReturnType<typeof request>;

/** The secret part of an issued key `mqca_<id>_<secret>` (the secret itself may contain '_'). */
function secretOf(key: string): string {
  const m = /^mqca_ak_[0-9a-f]+_(.+)$/.exec(key);
  if (!m || m[1]!.length < 40) throw new Error(`unexpected key format: ${key.slice(0, 12)}...`);
  return m[1]!;
}

for (const target of dbTargets) {
  describe(`REST API on ${target.name}`, { skip: target.skip ?? toolSkip('openssl') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    const keys = {} as Record<Role, string>;
    let issuingId: string;
    before(async () => {
      // Every response below is checked against openapi.yaml by the validator (a mismatch is a 500).
      const made = await makeApiService(target);
      ({ svc, api, issuingId } = made);
      Object.assign(keys, made.keys);
    });
    after(async () => svc?.dispose());

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });

    it('answers /healthz and /readyz without a key, and serves the contract and docs', async () => {
      assert.deepEqual((await api.get('/healthz').expect(200)).body, { status: 'ok' });
      assert.equal((await api.get('/readyz').expect(200)).body.database, 'ok');
      assert.equal((await api.get('/openapi.json').expect(200)).body.openapi, '3.1.0');
      assert.match((await api.get('/docs/').expect(200)).text, /swagger/i);
    });

    it('refuses /v1 without a key, with a malformed or wrong key, and with a revoked key: 401 problem+json', async () => {
      for (const headers of [
        {},
        { Authorization: 'Basic abc' },
        { Authorization: 'Bearer' },
        { Authorization: 'Bearer mqca_nope_nope' },
        { Authorization: `Bearer ${keys.admin}x` },
      ]) {
        const res = await api.get('/v1/cas').set(headers);
        assertProblem(res, 401);
        assert.match(String(res.headers['www-authenticate']), /^Bearer/);
      }
      const created = await api.post('/v1/api-keys').set(auth('admin')).send({ name: 'short-lived', role: 'operator' }).expect(201);
      await api
        .get('/v1/cas')
        .set({ Authorization: `Bearer ${created.body.key}` })
        .expect(200);
      await api.delete(`/v1/api-keys/${created.body.id}`).set(auth('admin')).expect(204);
      await api.delete(`/v1/api-keys/${created.body.id}`).set(auth('admin')).expect(204); // idempotent
      assertProblem(await api.get('/v1/cas').set({ Authorization: `Bearer ${created.body.key}` }), 401);
      const listed = (await api.get('/v1/api-keys').set(auth('admin')).expect(200)).body.items;
      assert.ok(listed.find((k: { id: string; revokedAt: string | null }) => k.id === created.body.id)?.revokedAt);
      assert.ok(!JSON.stringify(listed).includes(secretOf(created.body.key)), 'no secret in the listing');
    });

    it('keeps each role inside its boundary', async () => {
      const { csrPem } = opensslCsr([...KEY_ARGS.p256]);
      // Devices in each state, for the issuance rows (issue 23, item 4).
      for (const id of ['role-dev', 'role-revoked', 'role-retired']) await svc.devices.register({ id }, { actor: 'test' });
      const doomed = await svc.operatorIssuance.issueFromCsr(
        { profile: 'device', deviceId: 'role-revoked', csr: csrPem },
        { actor: 'test' },
      );
      await svc.revocations.revoke(doomed.serial as Serial, { reason: 'keyCompromise' }, { actor: 'test' });
      await svc.devices.decommission('role-retired', { actor: 'test' });
      const rootId = (await svc.hierarchy.list()).find((c) => c.kind === 'root')!.id;
      // Issue #23 items 3 and 5: what a role could obtain indirectly (docs/roles.md).
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'role-lost', kind: 'client' }).expect(201);
      const incidentId = (
        await api
          .post('/v1/incidents')
          .set(auth('operator'))
          .send({ kind: 'lost-device', title: 'role matrix', targets: { devices: ['role-lost'] } })
          .expect(201)
      ).body.id as string;
      const spareKey = (await svc.apiKeys.create({ name: 'role-matrix spare', role: 'auditor' }, { actor: 'test' })).id;
      const secondAdmin = (await svc.apiKeys.create({ name: 'role-matrix second admin', role: 'admin' }, { actor: 'test' })).id;
      const cases: { name: string; send: (h: Record<string, string>) => request.Test; allowed: Role[]; ok: number }[] = [
        { name: 'GET /v1/cas', send: (h) => api.get('/v1/cas').set(h), allowed: ['admin', 'operator', 'provisioner', 'auditor'], ok: 200 },
        {
          name: 'GET /v1/cas/{id}',
          send: (h) => api.get(`/v1/cas/${issuingId}`).set(h),
          allowed: ['admin', 'operator', 'provisioner', 'auditor'],
          ok: 200,
        },
        {
          name: 'POST /v1/cas',
          send: (h) => api.post('/v1/cas').set(h).send({ kind: 'root', name: 'r', keyAlgorithm: 'EC-P256' }),
          allowed: ['admin'],
          ok: 201,
        },
        {
          name: 'POST /v1/cas/{id}/default-issuer',
          send: (h) => api.post(`/v1/cas/${issuingId}/default-issuer`).set(h),
          allowed: ['admin'],
          ok: 200,
        },
        {
          name: 'GET /v1/certificates',
          send: (h) => api.get('/v1/certificates').set(h),
          allowed: ['admin', 'operator', 'provisioner', 'auditor'],
          ok: 200,
        },
        {
          name: 'POST /v1/certificates',
          send: (h) => api.post('/v1/certificates').set(h).send({ profile: 'device', deviceId: 'role-dev', csr: csrPem }),
          allowed: ['admin', 'provisioner'],
          ok: 201,
        },
        {
          name: 'POST /v1/certificates (broker)',
          send: (h) =>
            api
              .post('/v1/certificates')
              .set(h)
              .send({ profile: 'broker', dnsNames: ['b.example'], csr: csrPem }),
          allowed: ['admin', 'provisioner', 'operator'],
          ok: 201,
        },
        { name: 'GET /v1/api-keys', send: (h) => api.get('/v1/api-keys').set(h), allowed: ['admin'], ok: 200 },
        {
          name: 'POST /v1/api-keys',
          send: (h) => api.post('/v1/api-keys').set(h).send({ name: 'n', role: 'auditor' }),
          allowed: ['admin'],
          ok: 201,
        },
        { name: 'GET /v1/audit', send: (h) => api.get('/v1/audit').set(h), allowed: ['admin', 'auditor'], ok: 200 },
        { name: 'GET /metrics', send: (h) => api.get('/metrics').set(h), allowed: ['admin', 'operator', 'auditor'], ok: 200 },
        { name: 'DELETE /v1/api-keys/{id}', send: (h) => api.delete(`/v1/api-keys/${spareKey}`).set(h), allowed: ['admin'], ok: 204 },
        {
          name: 'POST /v1/enrollment-tokens',
          send: (h) => api.post('/v1/enrollment-tokens').set(h).send({ deviceId: 'role-lost' }),
          allowed: ['admin', 'provisioner'],
          ok: 201,
        },
        {
          name: 'POST /v1/incidents',
          send: (h) =>
            api
              .post('/v1/incidents')
              .set(h)
              .send({ kind: 'lost-device', title: 't', targets: { devices: ['role-lost'] } }),
          allowed: ['admin', 'operator'],
          ok: 201,
        },
        // An operator's reissue is only proposed (201, no tokens: checked below); an admin's runs.
        {
          name: 'incident reissue',
          send: (h) => api.post(`/v1/incidents/${incidentId}/actions`).set(h).send({ action: 'reissue' }),
          allowed: ['admin', 'operator'],
          ok: 201,
        },
        // An operator may not revoke an admin's key through an incident (the domain's 403).
        {
          name: 'incident revoke-credentials (an admin key)',
          send: (h) =>
            api
              .post(`/v1/incidents/${incidentId}/actions`)
              .set(h)
              .send({ action: 'revoke-credentials', params: { apiKeyIds: [secondAdmin], enrollmentTokens: false, sessionKeys: false } }),
          allowed: ['admin'],
          ok: 201,
        },
      ];
      // What no role gets, whichever role asks (issue 23, items 1, 2, 4): refused with the status given (403 for roles without the route).
      const nobody: { name: string; send: (h: Record<string, string>) => request.Test; status: number }[] = [
        {
          name: 'an OCSP responder certificate',
          send: (h) => api.post('/v1/certificates').set(h).send({ profile: 'ocsp-responder', commonName: 'r', csr: csrPem }),
          status: 400,
        },
        {
          name: 'a device certificate from the root',
          send: (h) => api.post('/v1/certificates').set(h).send({ profile: 'device', caId: rootId, deviceId: 'role-dev', csr: csrPem }),
          status: 403,
        },
        {
          name: 'a broker certificate from the root',
          send: (h) =>
            api
              .post('/v1/certificates')
              .set(h)
              .send({ profile: 'broker', caId: rootId, dnsNames: ['b.example'], csr: csrPem }),
          status: 403,
        },
        { name: 'the root as default issuer', send: (h) => api.post(`/v1/cas/${rootId}/default-issuer`).set(h), status: 400 },
        {
          name: 'a broker certificate named as the connector',
          send: (h) =>
            api
              .post('/v1/certificates')
              .set(h)
              .send({ profile: 'broker', commonName: 'mqtt-ca-connector', dnsNames: ['b.example'], csr: csrPem }),
          status: 403,
        },
        {
          name: "a broker certificate for the service's TLS name",
          send: (h) =>
            api
              .post('/v1/certificates')
              .set(h)
              .send({ profile: 'broker', dnsNames: ['ca.test'], csr: csrPem }),
          status: 403,
        },
        {
          name: 'a device named as the connector',
          send: (h) => api.post('/v1/devices').set(h).send({ id: 'mqtt-ca-connector' }),
          status: 400,
        },
        {
          name: 'a device certificate for an unknown device',
          send: (h) => api.post('/v1/certificates').set(h).send({ profile: 'device', deviceId: 'role-ghost', csr: csrPem }),
          status: 403,
        },
        {
          name: 'a device certificate for a revoked device',
          send: (h) => api.post('/v1/certificates').set(h).send({ profile: 'device', deviceId: 'role-revoked', csr: csrPem }),
          status: 403,
        },
        {
          name: 'a device certificate for a decommissioned device',
          send: (h) => api.post('/v1/certificates').set(h).send({ profile: 'device', deviceId: 'role-retired', csr: csrPem }),
          status: 403,
        },
      ];
      for (const c of nobody) {
        for (const role of ['admin', 'operator', 'provisioner', 'auditor'] as Role[]) {
          const res = await c.send(auth(role));
          assert.ok(res.status === c.status || res.status === 403, `${c.name} as ${role}: ${res.status} ${res.text}`);
          assertProblem(res, res.status);
        }
      }
      for (const c of cases) {
        for (const role of ['admin', 'operator', 'provisioner', 'auditor'] as Role[]) {
          const res = await c.send(auth(role));
          if (c.allowed.includes(role)) assert.equal(res.status, c.ok, `${c.name} as ${role}: ${res.text}`);
          else assertProblem(res, 403, new RegExp(role));
        }
        assertProblem(await c.send({}), 401);
      }
      const auditorKey = (await api.get('/v1/api-keys').set(auth('admin'))).body.items.find((k: { role: string }) => k.role === 'auditor');
      assertProblem(await api.delete(`/v1/api-keys/${auditorKey.id}`).set(auth('operator')), 403);
      // The operator's reissue handed out nothing; its proposal is approved only by a role that makes device credentials, who gets the token.
      for (const role of ['admin', 'operator', 'provisioner', 'auditor'] as Role[]) {
        const step = (await api.post(`/v1/incidents/${incidentId}/actions`).set(auth('operator')).send({ action: 'reissue' }).expect(201))
          .body;
        assert.deepEqual([step.status, step.secrets], ['proposed', undefined]);
        const res = await api.post(`/v1/approvals/${step.approvalId}/approve`).set(auth(role));
        if (role === 'admin' || role === 'provisioner')
          assert.equal(res.body.secrets?.tokens?.[0]?.deviceId, 'role-lost', `approve incident.reissue as ${role}: ${res.text}`);
        else assertProblem(res, 403, new RegExp(`${role} role may not approve`));
      }
      // The last active admin key is never revoked.
      assertProblem(
        await api.delete(`/v1/api-keys/${/^mqca_(ak_[0-9a-f]{20})_/.exec(keys.admin)![1]}`).set(auth('admin')),
        409,
        /last active admin key/,
      );
    });

    it('issues from a CSR and returns the certificate with its chain, which OpenSSL verifies', async () => {
      await svc.devices.register({ id: 'sensor-42' }, { actor: 'test' });
      const { csrPem } = opensslCsr([...KEY_ARGS.ed25519]);
      const res = await api
        .post('/v1/certificates')
        .set(auth('provisioner'))
        .send({ profile: 'device', deviceId: 'sensor-42', csr: csrPem })
        .expect(201);
      const [issuerPem, rootPem] = res.body.chain;
      const v = opensslVerify(rootPem, [issuerPem], res.body.certificate, ['-purpose', 'sslclient']);
      assert.equal(v.status, 0, v.stderr);
      const got = await api.get(`/v1/certificates/${res.body.serial}`).set(auth('auditor')).expect(200);
      assert.equal(got.body.status, 'issued');
      assert.equal(got.body.certificate, res.body.certificate);
      assert.equal(got.body.deviceId, 'sensor-42');
      const list = await api.get('/v1/certificates').query({ deviceId: 'sensor-42' }).set(auth('operator')).expect(200);
      assert.deepEqual(
        list.body.items.map((c: { serial: string }) => c.serial),
        [res.body.serial],
      );
      const broker = opensslCsr([...KEY_ARGS.p256]);
      const b = await api
        .post('/v1/certificates')
        .set(auth('admin'))
        .send({ profile: 'broker', dnsNames: ['mqtt.example.net'], ipAddresses: ['127.0.0.1'], csr: broker.csrPem })
        .expect(201);
      assert.equal(
        opensslVerify(b.body.chain[1], [b.body.chain[0]], b.body.certificate, [
          '-purpose',
          'sslserver',
          '-verify_hostname',
          'mqtt.example.net',
        ]).status,
        0,
      );
    });

    it('answers bad input with 4xx problem+json, never a 500', async () => {
      const h = auth('admin');
      for (const id of ['d', 'weak', 'p521']) await svc.devices.register({ id }, { actor: 'test' });
      assertProblem(await api.post('/v1/cas').set(h).send({}), 400);
      assertProblem(await api.post('/v1/cas').set(h).send({ kind: 'root', name: 'x', keyAlgorithm: 'RSA-1024' }), 400);
      assertProblem(await api.post('/v1/cas').set(h).send({ kind: 'root', name: 'x', unexpected: true }), 400);
      assertProblem(await api.post('/v1/cas').set(h).send({ kind: 'intermediate', name: 'x', parentId: 'ca_missing' }), 404);
      assertProblem(await api.post('/v1/cas').set(h).send({ kind: 'intermediate', name: 'x' }), 400, /parentId/);
      assertProblem(await api.post('/v1/cas').set(h).set('Content-Type', 'application/json').send('{"kind": "root", '), 400);
      assertProblem(
        await api
          .post('/v1/cas')
          .set(h)
          .set('Content-Type', 'application/json')
          .send(JSON.stringify({ kind: 'root', name: 'x'.repeat(70_000) })),
        413,
      );
      assertProblem(await api.post('/v1/cas').set(h).set('Content-Type', 'text/plain').send('kind=root'), 415);
      assertProblem(await api.get('/v1/cas/ca_doesnotexist').set(h), 404);
      assertProblem(await api.get('/v1/cas/NOT-AN-ID!').set(h), 400);
      assertProblem(await api.post(`/v1/cas/${issuingId}/certificate`).set(h).send({ certificate: 'garbage' }), 400);
      assertProblem(await api.get('/v1/certificates/00ff00ff00ff').set(h), 404);
      assertProblem(await api.get('/v1/certificates/NOTHEX').set(h), 400);
      assertProblem(await api.get('/v1/certificates').query({ limit: 100000 }).set(h), 400);
      assertProblem(await api.get('/v1/certificates').query({ cursor: 'garbage' }).set(h), 400);
      assertProblem(await api.post('/v1/certificates').set(h).send({ profile: 'device', deviceId: 'd', csr: 'garbage' }), 400);
      assertProblem(await api.post('/v1/certificates').set(h).send({ profile: 'root-ca', csr: 'x' }), 400);
      const weak = opensslCsr([...KEY_ARGS.rsa1024]);
      assertProblem(await api.post('/v1/certificates').set(h).send({ profile: 'device', deviceId: 'weak', csr: weak.csrPem }), 400, /2048/);
      const p521 = opensslCsr([...KEY_ARGS.p521]);
      assertProblem(
        await api.post('/v1/certificates').set(h).send({ profile: 'device', deviceId: 'p521', csr: p521.csrPem }),
        400,
        /curve/,
      );
      const ok = opensslCsr([...KEY_ARGS.p256]);
      assertProblem(
        await api
          .post('/v1/certificates')
          .set(h)
          .send({ profile: 'device', deviceId: 'd', dnsNames: ['a.example'], csr: ok.csrPem }),
        422,
      );
      assertProblem(
        await api.post('/v1/certificates').set(h).send({ profile: 'device', deviceId: 'd', validityDays: 3000, csr: ok.csrPem }),
        422,
      );
      assertProblem(await api.get('/v1/nothing-here').set(h), 404);
      // Nothing was recorded for any refused request.
      assert.equal((await api.get('/v1/certificates').query({ deviceId: 'weak' }).set(h)).body.items.length, 0);
      assert.equal((await api.get('/v1/certificates').query({ status: 'failed' }).set(h)).body.items.length, 0);
    });

    it('takes an intermediate through the offline-root path: CSR out, certificate signed by an outside OpenSSL CA in, chain verified', async () => {
      const h = auth('admin');
      const created = await api
        .post('/v1/cas')
        .set(h)
        .send({
          kind: 'intermediate',
          external: true,
          name: 'Offline-signed CA',
          subject: { commonName: 'Offline-signed CA', organization: 'Grid Co', country: 'DE' },
          keyAlgorithm: 'EC-P384',
        })
        .expect(201);
      assert.equal(created.body.status, 'awaiting-certificate');
      assert.equal(created.body.certificate, null);
      const dir = tempDir();
      const csrPath = writeTemp(dir, 'inter.csr', created.body.csr);
      assert.equal(run('openssl', ['req', '-in', csrPath, '-verify', '-noout']).status, 0);
      // The outside, offline root: made by OpenSSL alone.
      const rootKey = writeTemp(dir, 'root.key', run('openssl', ['genpkey', ...KEY_ARGS.p384]).stdout);
      const rootCrt = `${dir}/root.crt`;
      assert.equal(
        run('openssl', [
          'req',
          '-x509',
          '-new',
          '-key',
          rootKey,
          '-subj',
          '/O=Grid Co/CN=Offline Root',
          '-days',
          '3650',
          '-out',
          rootCrt,
          '-addext',
          'basicConstraints=critical,CA:TRUE',
          '-addext',
          'keyUsage=critical,keyCertSign,cRLSign',
        ]).status,
        0,
      );
      const ext = writeTemp(
        dir,
        'ext.cnf',
        'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n',
      );
      const interCrt = `${dir}/inter.crt`;
      const signed = run('openssl', [
        'x509',
        '-req',
        '-in',
        csrPath,
        '-CA',
        rootCrt,
        '-CAkey',
        rootKey,
        '-CAcreateserial',
        '-days',
        '1000',
        '-extfile',
        ext,
        '-out',
        interCrt,
      ]);
      assert.equal(signed.status, 0, signed.stderr);
      const rootPem = run('cat', [rootCrt]).stdout;
      const interPem = run('cat', [interCrt]).stdout;

      // Wrong inputs first: each refused, the CA still waiting.
      assertProblem(await api.post(`/v1/cas/${created.body.id}/certificate`).set(h).send({ certificate: interPem }), 400, /chain/);
      assertProblem(
        await api
          .post(`/v1/cas/${created.body.id}/certificate`)
          .set(h)
          .send({ certificate: rootPem + rootPem }),
        400,
        /key/,
      );
      const otherCsr = opensslCsr([...KEY_ARGS.p384], '/O=Grid Co/CN=Offline-signed CA');
      const otherCrt = run('openssl', [
        'x509',
        '-req',
        '-in',
        writeTemp(dir, 'o.csr', otherCsr.csrPem),
        '-CA',
        rootCrt,
        '-CAkey',
        rootKey,
        '-days',
        '10',
        '-extfile',
        ext,
      ]);
      assertProblem(
        await api
          .post(`/v1/cas/${created.body.id}/certificate`)
          .set(h)
          .send({ certificate: otherCrt.stdout + rootPem }),
        400,
        /key/,
      );
      const notCaExt = writeTemp(dir, 'leaf.cnf', 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n');
      const leafCrt = run('openssl', [
        'x509',
        '-req',
        '-in',
        csrPath,
        '-CA',
        rootCrt,
        '-CAkey',
        rootKey,
        '-days',
        '10',
        '-extfile',
        notCaExt,
      ]);
      assertProblem(
        await api
          .post(`/v1/cas/${created.body.id}/certificate`)
          .set(h)
          .send({ certificate: leafCrt.stdout + rootPem }),
        400,
        /not a CA/,
      );
      const strangerKey = writeTemp(dir, 's.key', run('openssl', ['genpkey', ...KEY_ARGS.p384]).stdout);
      const stranger = run('openssl', [
        'req',
        '-x509',
        '-new',
        '-key',
        strangerKey,
        '-subj',
        '/O=Grid Co/CN=Offline Root',
        '-days',
        '10',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ]);
      assertProblem(
        await api
          .post(`/v1/cas/${created.body.id}/certificate`)
          .set(h)
          .send({ certificate: interPem + stranger.stdout }),
        400,
        /not signed by/,
      );
      assert.equal((await api.get(`/v1/cas/${created.body.id}`).set(h)).body.status, 'awaiting-certificate');

      const imported = await api
        .post(`/v1/cas/${created.body.id}/certificate`)
        .set(h)
        .send({ certificate: interPem + rootPem })
        .expect(200);
      assert.equal(imported.body.status, 'active');
      assertProblem(
        await api
          .post(`/v1/cas/${created.body.id}/certificate`)
          .set(h)
          .send({ certificate: interPem + rootPem }),
        409,
      );

      const leaf = opensslCsr([...KEY_ARGS.p256]);
      await svc.devices.register({ id: 'behind-offline-root' }, { actor: 'test' });
      const issued = await api
        .post('/v1/certificates')
        .set(h)
        .send({ profile: 'device', caId: created.body.id, deviceId: 'behind-offline-root', csr: leaf.csrPem })
        .expect(201);
      assert.deepEqual(
        issued.body.chain.map((p: string) => new x509.X509Certificate(p).subject),
        ['C=DE, O=Grid Co, CN=Offline-signed CA', 'O=Grid Co, CN=Offline Root'],
      );
      const v = opensslVerify(rootPem, [interPem], issued.body.certificate, ['-purpose', 'sslclient']);
      assert.equal(v.status, 0, v.stderr);
    });

    it('serves CA certificates at /pki/ca without a key, as PEM and DER', async () => {
      const ca = (await api.get(`/v1/cas/${issuingId}`).set(auth('auditor'))).body;
      const pem = await api.get(`/pki/ca/${issuingId}.pem`).expect(200);
      assert.match(String(pem.headers['content-type']), /application\/x-pem-file/);
      assert.equal(pem.text, ca.certificate);
      const der = await api
        .get(`/pki/ca/${issuingId}.crt`)
        .buffer(true)
        .parse((res, cb) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => cb(null, Buffer.concat(chunks)));
        })
        .expect(200);
      assert.equal(String(der.headers['content-type']), 'application/pkix-cert');
      assert.equal(new x509.X509Certificate(der.body as Buffer).toString('pem').trim(), ca.certificate.trim());
      assertProblem(await api.get('/pki/ca/ca_unknown.pem'), 404);
      assertProblem(await api.get('/pki/ca/../../etc/passwd'), 404);
      assertProblem(await api.post(`/pki/ca/${issuingId}.pem`), 405);
    });

    it('records every change in the audit log, readable by auditors, with a chain that verifies', async () => {
      const page = await api.get('/v1/audit').query({ limit: 500 }).set(auth('auditor')).expect(200);
      const actions = new Set(page.body.items.map((e: { action: string }) => e.action));
      for (const a of [
        'kek.bound',
        'ocsp-responder.issued',
        'ca.created',
        'ca.default-issuer-set',
        'certificate.issued',
        'apikey.created',
        'apikey.revoked',
        'ca.csr-created',
        'ca.certificate-imported',
      ]) {
        assert.ok(actions.has(a), `audit has ${a}`);
      }
      const text = JSON.stringify(page.body);
      for (const k of Object.values(keys)) assert.ok(!text.includes(secretOf(k)), 'no API key secret in the audit log');
      const byCreate = page.body.items.find(
        (e: { action: string; actor: string }) => e.action === 'ca.created' && e.actor.startsWith('api-key:'),
      );
      assert.ok(byCreate.requestId, 'API actions carry their request id');
      assert.equal((await svc.audit.verify(svc.db)).ok, true);
      const filtered = await api.get('/v1/audit').query({ action: 'apikey.revoked' }).set(auth('admin')).expect(200);
      assert.ok(filtered.body.items.every((e: { action: string }) => e.action === 'apikey.revoked'));
    });
  });
}
