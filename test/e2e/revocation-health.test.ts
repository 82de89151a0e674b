import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem, listenOnLoopback, writeCaFiles } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import { run, runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { toolSkip } from '../helpers/tools.js';
import { ManualClock } from '../../src/shared/clock.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

interface Health {
  at: string;
  crls: {
    caId: string;
    caName: string;
    shard: number;
    full: { crlNumber: string; ageSeconds: number; secondsToNextUpdate: number; entries: number } | null;
    delta: { crlNumber: string; entries: number } | null;
    stale: boolean;
  }[];
  ocsp: { total: number; answers: { status: string; source: string; count: number }[] };
  revocationVisible: { count: number; recent: { count: number; p50Seconds: number } | null };
}

/**
 * GET /v1/revocation-health (issue #25's Revocation page) and POST /v1/certificates/lookup: CRLs per
 * CA with the watch's stale rule under a manual clock, OCSP answers and revoke-to-visible latency
 * from the telemetry, the roles refused, a PEM looked up (bad, oversize, foreign, altered).
 */
for (const target of dbTargets) {
  describe(`revocation health and certificate lookup on ${target.name}`, { skip: target.skip ?? toolSkip('openssl') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    let keys: Record<Role, string>;
    let issuingId: string;
    let server: { url: string; close(): Promise<void> };
    const clock = new ManualClock(new Date());
    const dir = tempDir();
    const certs: Record<string, { serial: string; pem: string }> = {};

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const health = async (role: Role = 'auditor') => (await api.get('/v1/revocation-health').set(auth(role)).expect(200)).body as Health;
    const enroll = async (deviceId: string) => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: deviceId }).expect(201);
      const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId }).expect(201)).body.token as string;
      const body = (
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ csr: p256Csr(deviceId).pem })
          .expect(201)
      ).body as { serial: string; certificate: string };
      certs[deviceId] = { serial: body.serial, pem: body.certificate };
    };

    before(async () => {
      ({ svc, api, keys, issuingId } = await makeApiService(target, { clock }));
      server = await listenOnLoopback(createHttpHandler(svc, { validateResponses: true }));
      await enroll('rh-meter-1');
      await enroll('rh-meter-2');
    });
    after(async () => {
      await server?.close();
      await svc?.dispose();
    });

    it('lists each signing CA’s CRL with number, age, next update and entries; counts OCSP answers and the revoke-to-visible latency', async () => {
      // No CRL yet is stale (the watch's rule: the alarm is raised for a CA without one).
      assert.ok((await health()).crls.some((c) => c.full === null && c.stale));
      await svc.crls.all(); // every CA's CRL built, as the broker bundle does
      const first = await health('operator');
      const issuing = first.crls.find((c) => c.caId === issuingId && c.shard === 0);
      assert.ok(issuing?.full, JSON.stringify(first.crls));
      assert.equal(issuing.stale, false);
      assert.equal(issuing.full.entries, 0);
      assert.ok(issuing.full.secondsToNextUpdate > 0);
      assert.ok(first.crls.length >= 2, 'the root signs a CRL too');
      assert.deepEqual(
        first.crls.map((c) => c.stale),
        first.crls.map(() => false),
      );

      const revoke = await api
        .post(`/v1/certificates/${certs['rh-meter-1']!.serial}/revoke`)
        .set(auth('operator'))
        .send({ reason: 'keyCompromise' });
      assert.equal(revoke.status, 200, revoke.text);
      await svc.crls.settled();
      const files = await writeCaFiles(svc, issuingId, dir);
      const r = await runAsync('openssl', [
        'ocsp',
        '-issuer',
        files.issuing,
        '-url',
        `${server.url}/pki/ocsp`,
        '-CAfile',
        files.root,
        '-verify_other',
        files.issuing,
        '-no_nonce',
        '-cert',
        writeTemp(dir, 'm1.pem', certs['rh-meter-1']!.pem),
      ]);
      assert.match(r.stdout, /: revoked/, r.stderr);
      const garbage = await fetch(`${server.url}/pki/ocsp`, {
        method: 'POST',
        body: randomBytes(40),
        headers: { 'Content-Type': 'application/ocsp-request' },
      });
      assert.equal(garbage.status, 200);

      const second = await health();
      const after1 = second.crls.find((c) => c.caId === issuingId && c.shard === 0)!;
      assert.ok(
        BigInt(after1.full!.crlNumber) > BigInt(issuing.full.crlNumber) || after1.delta !== null,
        'a new CRL or delta after the revocation',
      );
      assert.equal(after1.full!.entries + (after1.delta?.entries ?? 0) > 0, true);
      const count = (status: string, source?: string) =>
        second.ocsp.answers.filter((a) => a.status === status && (!source || a.source === source)).reduce((n, a) => n + a.count, 0);
      assert.ok(count('revoked') >= 1, JSON.stringify(second.ocsp));
      assert.ok(count('malformedRequest', 'none') >= 1, JSON.stringify(second.ocsp));
      assert.ok(second.ocsp.total >= 2);
      assert.ok(second.revocationVisible.count >= 1, JSON.stringify(second.revocationVisible));
      assert.ok(second.revocationVisible.recent && second.revocationVisible.recent.count >= 1);
    });

    it('marks a CRL stale by the CRL watch’s rule once it is past its refresh point, and reading it builds nothing', async () => {
      const before1 = (await health()).crls.find((c) => c.caId === issuingId && c.shard === 0)!;
      assert.equal(before1.stale, false);
      clock.advance(13 * 3_600_000); // the default 48 h CRL is due 36 h before its nextUpdate
      const stale = (await health()).crls.find((c) => c.caId === issuingId && c.shard === 0)!;
      assert.equal(stale.stale, true);
      assert.equal(stale.full!.crlNumber, before1.full!.crlNumber, 'reading rebuilt nothing');
      assert.ok(stale.full!.ageSeconds >= 13 * 3600);
      // The watch agrees (its alarm rule), and once it replaced the CRL the flag clears.
      const watched = await svc.crlWatch.check();
      assert.equal(watched.find((s) => s.caId === issuingId && s.shard === 0)?.stale, false, 'the watch replaced it');
      const fresh = (await health()).crls.find((c) => c.caId === issuingId && c.shard === 0)!;
      assert.equal(fresh.stale, false);
      assert.ok(BigInt(fresh.full!.crlNumber) > BigInt(stale.full!.crlNumber));
    });

    it('refuses the revocation health to provisioners, device tokens and no key', async () => {
      assertProblem(await api.get('/v1/revocation-health').set(auth('provisioner')), 403);
      assertProblem(await api.get('/v1/revocation-health'), 401);
      const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId: 'rh-meter-2' }).expect(201)).body
        .token as string;
      const res = await api.get('/v1/revocation-health').set({ Authorization: `Bearer ${tok}` });
      assertProblem(res, 401); // an enrollment token is no API key
      await health('admin');
    });

    it('looks up a PEM: the recorded certificate and whether the bytes match; bad PEM 400, oversize 413, unknown 404', async () => {
      const hit = await api
        .post('/v1/certificates/lookup')
        .set(auth('auditor'))
        .send({ pem: `note\n${certs['rh-meter-1']!.pem}` })
        .expect(200);
      assert.equal(hit.body.serial, certs['rh-meter-1']!.serial);
      assert.equal(hit.body.matches, true);
      assert.equal(hit.body.certificate.status, 'revoked');
      assert.equal(hit.body.certificate.revocation.reason, 'keyCompromise');
      assert.equal(hit.body.certificate.deviceId, 'rh-meter-1');

      // The same serial, other bytes (a certificate re-signed elsewhere would look like this): found, not matching.
      const der = Buffer.from(certs['rh-meter-2']!.pem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
      der[der.length - 3] = der[der.length - 3]! ^ 0x01; // inside the signature: still parses
      const altered = `-----BEGIN CERTIFICATE-----\n${der.toString('base64')}\n-----END CERTIFICATE-----\n`;
      const other = await api.post('/v1/certificates/lookup').set(auth('operator')).send({ pem: altered }).expect(200);
      assert.equal(other.body.matches, false);
      assert.equal(other.body.certificate.status, 'issued');

      assertProblem(
        await api.post('/v1/certificates/lookup').set(auth('auditor')).send({ pem: 'hello' }),
        400,
        /no -----BEGIN CERTIFICATE/,
      );
      assertProblem(
        await api
          .post('/v1/certificates/lookup')
          .set(auth('auditor'))
          .send({ pem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' }),
        400,
        /cannot be parsed/,
      );
      assertProblem(
        await api
          .post('/v1/certificates/lookup')
          .set(auth('auditor'))
          .send({ pem: certs['rh-meter-1']!.pem + certs['rh-meter-2']!.pem }),
        400,
        /2 certificates/,
      );
      assertProblem(await api.post('/v1/certificates/lookup').set(auth('auditor')).send({}), 400);
      assertProblem(
        await api
          .post('/v1/certificates/lookup')
          .set(auth('auditor'))
          .send({ pem: 'x'.repeat(70_000) }),
        413,
      );
      // A certificate this CA never issued (self-signed elsewhere): its serial is not recorded.
      const foreign = run('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-subj',
        '/CN=foreign',
        '-days',
        '1',
        '-keyout',
        join(dir, 'foreign.key'),
        '-out',
        join(dir, 'foreign.pem'),
      ]);
      assert.equal(foreign.status, 0, foreign.stderr);
      const foreignPem = readFileSync(join(dir, 'foreign.pem'), 'utf8');
      assertProblem(
        await api.post('/v1/certificates/lookup').set(auth('auditor')).send({ pem: foreignPem }),
        404,
        /no certificate with serial/,
      );
      assertProblem(await api.post('/v1/certificates/lookup').send({ pem: certs['rh-meter-1']!.pem }), 401);
    });
  });
}
