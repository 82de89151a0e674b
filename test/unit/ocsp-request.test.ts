// The OCSP request reader against requests made by OpenSSL (`openssl ocsp -reqout`), and against garbage.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import 'reflect-metadata';
import { parseOcspRequest, OcspRequestError, MAX_CERT_IDS } from '../../src/ca/x509/ocsp-request.js';
import { parseCertificate } from '../../src/ca/x509/inspect.js';
import { run, tempDir } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';

describe('OCSP request reader', { skip: toolSkip('openssl') }, () => {
  const dir = tempDir();
  const path = (f: string) => join(dir, f);
  const der = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  let issuer: ReturnType<typeof parseCertificate>;
  const leafSerials: string[] = [];
  const ok = (args: string[]) => {
    const r = run('openssl', args);
    assert.equal(r.status, 0, r.stderr);
  };
  const request = (args: string[]) => {
    ok(['ocsp', '-issuer', path('ca.pem'), ...args, '-reqout', path('req.der')]);
    return readFileSync(path('req.der'));
  };

  before(() => {
    ok([
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      path('ca.key'),
      '-out',
      path('ca.pem'),
      '-days',
      '2',
      '-subj',
      '/O=Test/CN=OCSP Test CA',
    ]);
    for (const i of [1, 2]) {
      ok([
        'req',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        path(`l${i}.key`),
        '-out',
        path(`l${i}.csr`),
        '-subj',
        `/CN=leaf-${i}`,
      ]);
      ok([
        'x509',
        '-req',
        '-in',
        path(`l${i}.csr`),
        '-CA',
        path('ca.pem'),
        '-CAkey',
        path('ca.key'),
        '-set_serial',
        i === 1 ? '0x00ff0102' : '0x7a' + 'bc'.repeat(15),
        '-days',
        '1',
        '-out',
        path(`l${i}.pem`),
      ]);
      leafSerials.push(parseCertificate(der(readFileSync(path(`l${i}.pem`), 'utf8'))).serialHex);
    }
    issuer = parseCertificate(der(readFileSync(path('ca.pem'), 'utf8')));
  });

  const keyBits = () => {
    // The issuer key hash covers the subjectPublicKey BIT STRING's value, without its unused-bits byte.
    const spki = issuer.spki;
    return spki.subarray(spki.length - 65);
  };

  test('SHA-1 CertID with a nonce, as openssl sends by default', () => {
    const r = parseOcspRequest(request(['-cert', path('l1.pem')]));
    assert.equal(r.certIds.length, 1);
    const id = r.certIds[0]!;
    assert.equal(id.hashAlgorithm, 'sha1');
    assert.deepEqual(id.issuerNameHash, createHash('sha1').update(issuer.subjectDer).digest());
    assert.deepEqual(id.issuerKeyHash, createHash('sha1').update(keyBits()).digest());
    assert.equal(id.serial.toString('hex'), 'ff0102');
    assert.ok(r.nonce && r.nonce.length >= 16);
    assert.equal(r.signed, false);
  });

  test('SHA-256 CertIDs, several in one request, no nonce', () => {
    const r = parseOcspRequest(request(['-sha256', '-cert', path('l1.pem'), '-cert', path('l2.pem'), '-no_nonce']));
    assert.deepEqual(
      r.certIds.map((c) => c.hashAlgorithm),
      ['sha256', 'sha256'],
    );
    assert.deepEqual(r.certIds[0]!.issuerNameHash, createHash('sha256').update(issuer.subjectDer).digest());
    assert.deepEqual(
      r.certIds.map((c) => c.serial.toString('hex')),
      leafSerials.map((s) => s.replace(/^(00)+/, '')),
    );
    assert.equal(r.nonce, null);
  });

  test('a signed request is read (its signature is not needed)', () => {
    const r = parseOcspRequest(request(['-cert', path('l1.pem'), '-signer', path('ca.pem'), '-signkey', path('ca.key')]));
    assert.equal(r.signed, true);
    assert.equal(r.certIds.length, 1);
  });

  test('garbage, truncation, trailing bytes and oversize are OcspRequestError, never anything else', () => {
    const good = request(['-cert', path('l1.pem')]);
    const handMade: Buffer[] = [
      Buffer.alloc(0),
      Buffer.from('not der'),
      good.subarray(0, good.length - 1),
      good.subarray(0, 10),
      Buffer.concat([good, Buffer.from([0])]),
      Buffer.alloc(20_000, 0x30),
      ...Array.from({ length: 500 }, (_, i) => randomBytes(1 + (i % 300))),
    ];
    for (const b of handMade) assert.throws(() => parseOcspRequest(b), OcspRequestError);
    // Mutations of a good request: refused or read, but never another kind of error.
    for (let i = 0; i < 2000; i++) {
      const m = Buffer.from(good);
      for (let k = 0; k < 1 + (i % 4); k++) m[(i * 7919 + k * 104729) % m.length] = randomBytes(1)[0]!;
      try {
        parseOcspRequest(m);
      } catch (e) {
        assert.ok(e instanceof OcspRequestError, `threw ${String(e)}`);
      }
    }
  });

  test(`more than ${MAX_CERT_IDS} CertIDs are refused`, () => {
    const args = Array.from({ length: MAX_CERT_IDS + 1 }, () => ['-cert', path('l1.pem')]).flat();
    assert.throws(() => parseOcspRequest(request([...args, '-no_nonce'])), /more than 64/);
  });
});
