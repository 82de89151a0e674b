import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { writeCaFiles } from '../helpers/http.js';
import { runAsync, tempDir, writeTemp, type RunResult } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { toPem } from '../../src/ca/x509/pem.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

/**
 * GET /v1/certificates/{serial}/ocsp (issue #25, "see it revoked in OCSP from the page"): the
 * service's own OCSP responder asked about a certificate, its answer read back from the DER, and
 * that DER checked by openssl (`ocsp -respin`, verified against the root through the delegated
 * responder) and compared with what a broker gets at /pki/ocsp. Roles, a missing serial, and
 * the OCSP metrics left alone.
 */
const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });

interface OcspView {
  serial: string;
  responseStatus: string;
  certStatus: 'good' | 'revoked' | 'unknown' | null;
  revocationTime: string | null;
  reason: string | null;
  thisUpdate: string | null;
  nextUpdate: string | null;
  producedAt: string | null;
  responderId: { byKey: string } | null;
  responderCertificate: { serial: string; subject: string; notAfter: string } | null;
  source: string;
  hashAlgorithm: string;
  der: string;
}

/** The status line openssl prints for one certificate, and what follows it. */
function opensslStatus(r: RunResult, certFile: string): string {
  const out = r.stdout + r.stderr;
  const at = out.indexOf(`${certFile}: `);
  assert.ok(at >= 0, `no status for ${certFile} in:\n${out}`);
  return out.slice(at + certFile.length + 2).split(/\n(?=\S)/)[0]!;
}

for (const target of dbTargets) {
  describe(`GET /v1/certificates/{serial}/ocsp on ${target.name}`, { skip: target.skip ?? toolSkip('openssl') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    let keys: Record<Role, string>;
    const dir = tempDir();
    const files: Record<string, string> = {};
    const serials: Record<string, string> = {};
    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });

    const issue = async (name: string) => {
      const c = await svc.issuance.issue({ profile: 'device', deviceId: name, subjectPublicKeyInfo: p256() }, { actor: 'test' });
      files[name] = writeTemp(dir, `${name}.pem`, toPem(c.der));
      serials[name] = c.serial;
    };
    const look = async (name: string, role: Role = 'auditor'): Promise<OcspView> =>
      (await api.get(`/v1/certificates/${serials[name]}/ocsp`).set(auth(role)).expect(200)).body as OcspView;
    /** openssl reads the DER the API returned, offline, and verifies it against the root. */
    const respin = async (name: string, view: OcspView) => {
      const r = await runAsync('openssl', [
        'ocsp',
        '-respin',
        writeTemp(dir, `${name}-${Date.now()}.der`, Buffer.from(view.der, 'base64')),
        '-issuer',
        files.issuing!,
        '-cert',
        files[name]!,
        '-CAfile',
        files.root!,
        '-verify_other',
        files.issuing!,
      ]);
      assert.match(r.stderr + r.stdout, /Response verify OK/, r.stderr);
      return opensslStatus(r, files[name]!);
    };
    /** The request a broker's openssl makes for the certificate (SHA-1 CertID, no nonce), POSTed to /pki/ocsp. */
    const brokerAsks = async (name: string): Promise<Buffer> => {
      const out = join(dir, `${name}-${Date.now()}.req`);
      const made = await runAsync('openssl', ['ocsp', '-issuer', files.issuing!, '-no_nonce', '-cert', files[name]!, '-reqout', out]);
      assert.equal(made.status, 0, made.stderr);
      const res = await api
        .post('/pki/ocsp')
        .set('Content-Type', 'application/ocsp-request')
        .send(readFileSync(out))
        .buffer(true)
        .parse((r, cb) => {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () => cb(null, Buffer.concat(chunks)));
        })
        .expect(200);
      return res.body as Buffer;
    };

    before(async () => {
      let issuingId: string;
      ({ svc, api, keys, issuingId } = await makeApiService(target));
      Object.assign(files, await writeCaFiles(svc, issuingId, dir));
      for (const name of ['meter-1', 'meter-2']) await issue(name);
    });
    after(async () => {
      await svc?.dispose();
    });

    it('says good, read from a signed response that openssl verifies, the bytes a broker gets at /pki/ocsp', async () => {
      const before = await svc.metrics.ocspAnswers();
      const view = await look('meter-1');
      assert.equal(view.serial, serials['meter-1']);
      assert.equal(view.responseStatus, 'successful');
      assert.equal(view.certStatus, 'good');
      assert.equal(view.revocationTime, null);
      assert.equal(view.reason, null);
      assert.equal(view.hashAlgorithm, 'sha1');
      assert.ok(['memory', 'stored', 'signed'].includes(view.source), view.source);
      const now = Date.now();
      assert.ok(Date.parse(view.thisUpdate!) <= now && now < Date.parse(view.nextUpdate!), 'now is inside the window');
      assert.ok(Date.parse(view.producedAt!) <= now);
      assert.match(view.responderId!.byKey, /^[0-9a-f]{40}$/);
      assert.match(view.responderCertificate!.subject, /OCSP/i);
      assert.match(await respin('meter-1', view), /^good/);
      // Asking again is answered without signing anew: the same pre-signed bytes.
      const again = await look('meter-1', 'provisioner');
      assert.equal(again.der, view.der);
      assert.notEqual(again.source, 'signed');
      assert.deepEqual(await svc.metrics.ocspAnswers(), before, 'the API look is not a relying party: not counted');
      assert.equal((await brokerAsks('meter-1')).toString('base64'), view.der, 'a broker gets the same response');
    });

    it('says revoked with the time and reason once the revoke call returns; a hold is certificateHold until released', async () => {
      const revoked = (
        await api.post(`/v1/certificates/${serials['meter-1']}/revoke`).set(auth('operator')).send({ reason: 'keyCompromise' }).expect(200)
      ).body as { revocation: { revokedAt: string } };
      const view = await look('meter-1', 'operator');
      assert.equal(view.certStatus, 'revoked');
      assert.equal(view.reason, 'keyCompromise');
      // GeneralizedTime has whole seconds.
      assert.equal(view.revocationTime, new Date(Math.floor(Date.parse(revoked.revocation.revokedAt) / 1000) * 1000).toISOString());
      assert.match(await respin('meter-1', view), /^revoked[\s\S]*Reason: keyCompromise/);
      assert.equal((await brokerAsks('meter-1')).toString('base64'), view.der);

      await api.post(`/v1/certificates/${serials['meter-2']}/revoke`).set(auth('operator')).send({ reason: 'certificateHold' }).expect(200);
      const held = await look('meter-2', 'admin');
      assert.equal(held.certStatus, 'revoked');
      assert.equal(held.reason, 'certificateHold');
      assert.match(await respin('meter-2', held), /^revoked[\s\S]*Reason: certificateHold/);
      await api.post(`/v1/certificates/${serials['meter-2']}/release`).set(auth('operator')).expect(200);
      const released = await look('meter-2');
      assert.equal(released.certStatus, 'good');
      assert.match(await respin('meter-2', released), /^good/);
    });

    it('is read by every role that reads the certificate, and by nobody without a key; a missing serial is 404, a bad one 400', async () => {
      for (const role of ['admin', 'operator', 'provisioner', 'auditor'] as const) {
        const cert = await api.get(`/v1/certificates/${serials['meter-2']}`).set(auth(role));
        const ocsp = await api.get(`/v1/certificates/${serials['meter-2']}/ocsp`).set(auth(role));
        assert.equal(ocsp.status, cert.status, `${role}: as GET /v1/certificates/{serial}`);
        assert.equal(ocsp.status, 200);
      }
      const [none, wrong, missing, bad] = await Promise.all([
        api.get(`/v1/certificates/${serials['meter-2']}/ocsp`),
        api.get(`/v1/certificates/${serials['meter-2']}/ocsp`).set({ Authorization: 'Bearer mqca_wrongwrongwrongwrongwrong' }),
        api.get('/v1/certificates/0123456789abcdef/ocsp').set(auth('auditor')),
        api.get('/v1/certificates/XYZ/ocsp').set(auth('auditor')),
      ]);
      assert.equal(none.status, 401);
      assert.equal(wrong.status, 401);
      assert.equal(missing.status, 404);
      assert.match(missing.headers['content-type'] ?? '', /application\/problem\+json/);
      assert.match(missing.body.detail as string, /no certificate with serial 0123456789abcdef/);
      assert.equal(bad.status, 400);
      assert.match(bad.headers['content-type'] ?? '', /application\/problem\+json/);
    });
  });
}
