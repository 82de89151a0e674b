// The CRL encoder checked against @peculiar/x509's parser and signature check on small CRLs.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign, webcrypto } from 'node:crypto';
import 'reflect-metadata';
import { REMOVE_FROM_CRL, encodeCrlEntries, encodeTbsCertList } from '../../src/ca/x509/crl.js';
import { encodeCertificateList } from '../../src/ca/x509/encode.js';
import { keyIdentifier } from '../../src/ca/x509/extensions.js';
import { encodeName } from '../../src/ca/x509/names.js';

const x509 = await import('@peculiar/x509');
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

describe('CRL encoder', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const thisUpdate = new Date('2026-11-25T10:00:00Z');
  const base = {
    signatureAlgorithm: 'ecdsa-with-SHA256' as const,
    issuer: encodeName([{ type: 'CN', value: 'Test Issuing CA' }]),
    thisUpdate,
    nextUpdate: new Date('2026-11-27T10:00:00Z'),
    authorityKeyId: keyIdentifier(spki),
    distributionPoint: 'http://ca.test/pki/crl/ca_1.crl',
    scope: 'user' as const,
  };
  const signed = (tbs: Uint8Array) =>
    Buffer.from(encodeCertificateList(tbs, 'ecdsa-with-SHA256', sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' })));

  test('entries (encoded in two runs), reasons, invalidity dates and the CRL number read back through the library, and the signature verifies', async () => {
    const entries = [
      {
        serial: Buffer.from('00ff01', 'hex'),
        revokedAt: new Date('2026-11-24T01:02:03Z'),
        reasonCode: 1,
        invalidityDate: new Date('2026-11-23T00:00:00Z'),
      },
      { serial: Buffer.from('7f'.repeat(16), 'hex'), revokedAt: new Date('2026-11-24T02:00:00Z'), reasonCode: 0 },
      { serial: Buffer.from('80'.repeat(20), 'hex'), revokedAt: new Date('2050-01-01T00:00:00Z'), reasonCode: 6 },
    ];
    const crl = new x509.X509Crl(
      signed(
        encodeTbsCertList({
          ...base,
          crlNumber: 123456789012345678901234567890n,
          revoked: [encodeCrlEntries(entries.slice(0, 1)), encodeCrlEntries(entries.slice(1))],
        }),
      ),
    );
    assert.equal(crl.version, 1); // v2 is encoded as 1
    assert.equal(crl.thisUpdate.toISOString(), thisUpdate.toISOString());
    assert.equal(crl.entries.length, 3);
    assert.deepEqual(
      crl.entries.map((e) => e.serialNumber.toLowerCase()),
      ['ff01', '7f'.repeat(16), '80'.repeat(20)],
    );
    assert.deepEqual(
      crl.entries.map((e) => e.reason),
      [x509.X509CrlReason.keyCompromise, undefined, x509.X509CrlReason.certificateHold],
    );
    assert.equal(crl.entries[0]!.invalidity?.toISOString(), '2026-11-23T00:00:00.000Z');
    // 2050 and later are GeneralizedTime (RFC 5280 §5.1.2.6).
    assert.equal(crl.entries[2]!.revocationDate.toISOString(), '2050-01-01T00:00:00.000Z');
    const number = crl.getExtension('2.5.29.20')!;
    assert.equal(Buffer.from(number.value).toString('hex').slice(4), 123456789012345678901234567890n.toString(16).padStart(26, '0'));
    assert.ok(crl.getExtension('2.5.29.28')!.critical);
    assert.equal(await crl.verify({ publicKey: new x509.PublicKey(spki) }), true);
  });

  test('an empty CRL leaves out revokedCertificates; bad input is refused', () => {
    const crl = new x509.X509Crl(signed(encodeTbsCertList({ ...base, crlNumber: 1n, revoked: [] })));
    assert.equal(crl.entries.length, 0);
    assert.throws(() => encodeTbsCertList({ ...base, crlNumber: 1n, revoked: [], nextUpdate: thisUpdate }), /nextUpdate/);
    assert.throws(() => encodeTbsCertList({ ...base, crlNumber: -1n, revoked: [] }), /not negative/);
    assert.throws(() => encodeTbsCertList({ ...base, crlNumber: 1n << 161n, revoked: [] }), /20 octets/);
  });

  test('a delta CRL: a critical Delta CRL Indicator with the base number, removeFromCRL entries, no Freshest CRL; a full CRL names its delta', async () => {
    const delta = new x509.X509Crl(
      signed(
        encodeTbsCertList({
          ...base,
          crlNumber: 42n,
          baseCrlNumber: 40n,
          revoked: [encodeCrlEntries([{ serial: Buffer.from('0a0b', 'hex'), revokedAt: thisUpdate, reasonCode: REMOVE_FROM_CRL }])],
        }),
      ),
    );
    const indicator = delta.getExtension('2.5.29.27')!;
    assert.ok(indicator.critical);
    assert.equal(Buffer.from(indicator.value).toString('hex'), '020128'); // INTEGER 40
    assert.equal(delta.getExtension('2.5.29.46'), null);
    assert.equal(delta.entries[0]!.reason, x509.X509CrlReason.removeFromCRL);
    assert.equal(await delta.verify({ publicKey: new x509.PublicKey(spki) }), true);

    const full = new x509.X509Crl(
      signed(encodeTbsCertList({ ...base, crlNumber: 41n, revoked: [], freshestCrl: 'http://ca.test/pki/crl/ca_1-delta.crl' })),
    );
    const freshest = full.getExtension('2.5.29.46')!;
    assert.equal(freshest.critical, false);
    // The same DistributionPoint syntax as a certificate's CRL distribution points, read by the library's parser.
    const points = new x509.CRLDistributionPointsExtension(freshest.rawData);
    assert.deepEqual(
      [...points.distributionPoints.flatMap((p) => p.distributionPoint?.fullName?.map((n) => n.uniformResourceIdentifier) ?? [])],
      ['http://ca.test/pki/crl/ca_1-delta.crl'],
    );
    assert.equal(full.getExtension('2.5.29.27'), null);

    assert.throws(
      () => encodeTbsCertList({ ...base, crlNumber: 42n, baseCrlNumber: 40n, revoked: [], freshestCrl: 'http://x/d.crl' }),
      /Freshest/,
    );
    assert.throws(() => encodeTbsCertList({ ...base, crlNumber: 42n, baseCrlNumber: 42n, revoked: [] }), /lower CRL number/);
  });
});
