import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { p256Csr, signedRenewalAuth } from '../helpers/csr.js';
import { run, tempDir, writeTemp } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { ext, TLS_FEATURE } from '../../src/ca/x509/extensions.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { DomainError } from '../../src/shared/errors.js';
import type { Service } from '../../src/main.js';
import type request from 'supertest';

const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
const target = dbTargets.find((t) => t.name === 'pglite')!;

describe('TLS Feature (must-staple) on broker certificates', { skip: toolSkip('openssl') }, () => {
  let svc: Service & { dispose(): Promise<void> };
  let api: ReturnType<typeof request>;
  let keys: Record<string, string>;
  const dir = tempDir();
  const text = (pem: string) => {
    const r = run('openssl', ['x509', '-in', writeTemp(dir, 'c.pem', pem), '-noout', '-text']);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout;
  };
  const bearer = (role: string) => ({ Authorization: `Bearer ${keys[role]}` });

  before(async () => {
    ({ svc, api, keys } = await makeApiService(target));
  });
  after(async () => svc?.dispose());

  it('encodes the extension as RFC 7633 has it: id-pe-tlsfeature, not critical, SEQUENCE OF INTEGER { 5 }', () => {
    assert.equal(
      Buffer.from(ext.tlsFeature([TLS_FEATURE.statusRequest])).toString('hex'),
      '3011' + '06082b06010505070118' + '0405' + '3003020105',
    );
  });

  it('an operator asks for mustStaple on a broker certificate: openssl and gnutls read TLS Feature status_request; without it, none', async () => {
    const res = await api
      .post('/v1/certificates')
      .set(bearer('operator'))
      .send({ profile: 'broker', dnsNames: ['staple.example'], mustStaple: true, csr: p256Csr('staple.example').pem })
      .expect(201);
    const out = text(res.body.certificate as string);
    assert.match(out, /TLS Feature: *\n\s*status_request\n/);
    if (!toolSkip('certtool')) {
      const g = run('certtool', ['-i', '--infile', writeTemp(dir, 'g.pem', res.body.certificate as string)]);
      assert.equal(g.status, 0, g.stderr);
      assert.match(g.stdout, /TLS Features \(not critical\):\s*\n\s*OCSP Status Request\(5\)/, g.stdout);
    }
    const plain = await api
      .post('/v1/certificates')
      .set(bearer('operator'))
      .send({ profile: 'broker', dnsNames: ['plain.example'], csr: p256Csr('plain.example').pem })
      .expect(201);
    assert.doesNotMatch(text(plain.body.certificate as string), /TLS Feature/);
  });

  it('a device request asking for it gets a 400 problem+json, and nothing is issued', async () => {
    await api.post('/v1/devices').set(bearer('admin')).send({ id: 'staple-dev', kind: 'client' }).expect(201);
    const before = Number((await svc.db('certificates').count({ n: 'serial' }))[0]!.n);
    assertProblem(
      await api
        .post('/v1/certificates')
        .set(bearer('provisioner'))
        .send({ profile: 'device', deviceId: 'staple-dev', mustStaple: true, csr: p256Csr('staple-dev').pem }),
      400,
      /mustStaple .*broker certificates; profile device does not allow it/,
    );
    assert.equal(Number((await svc.db('certificates').count({ n: 'serial' }))[0]!.n), before);
  });

  it('in process: Issuance.issue takes mustStaple for a broker, refuses it for a device', async () => {
    const c = await svc.issuance.issue(
      { profile: 'broker', dnsNames: ['inproc.example'], mustStaple: true, subjectPublicKeyInfo: p256() },
      { actor: 'test' },
    );
    assert.match(text(toPem(c.der)), /TLS Feature: *\n\s*status_request/);
    await assert.rejects(
      svc.issuance.issue({ profile: 'device', deviceId: 'x-1', mustStaple: true, subjectPublicKeyInfo: p256() }, { actor: 'test' }),
      (e: unknown) => e instanceof DomainError && e.kind === 'BadRequest',
    );
  });

  it('a renewal of a must-staple broker certificate is must-staple too; of a plain one, plain', async () => {
    for (const mustStaple of [true, false]) {
      // Renewal is for the inventory's devices: a broker registered as one.
      const id = `broker-renew-${mustStaple}`;
      const name = `${id}.example`;
      await api.post('/v1/devices').set(bearer('admin')).send({ id, kind: 'broker' }).expect(201);
      const csr = p256Csr(name);
      const first = await api
        .post('/v1/certificates')
        .set(bearer('operator'))
        .send({ profile: 'broker', deviceId: id, dnsNames: [name], mustStaple, csr: csr.pem })
        .expect(201);
      const next = p256Csr(name);
      const auth = signedRenewalAuth(first.body.certificate as string, csr.privateKey, new Date().toISOString(), next.der);
      const renewed = await api.post('/v1/renew').set({ Authorization: auth }).send({ csr: next.pem });
      assert.equal(renewed.status, 201, renewed.text);
      const out = text(renewed.body.certificate as string);
      if (mustStaple) assert.match(out, /TLS Feature: *\n\s*status_request/);
      else assert.doesNotMatch(out, /TLS Feature/);
    }
  });
});
