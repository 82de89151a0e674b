// OcspCheck (GET /v1/certificates/{serial}/ocsp) over a stand-in responder: what it reads from the
// DER it is handed, an error status, and a serial no certificate has. The real responder, its DER
// checked by openssl, is in test/e2e/certificate-ocsp.test.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeOcspError, encodeOcspResponse, encodeResponseData, encodeSingleResponse } from '../../src/ca/x509/ocsp-response.js';
import { DomainError } from '../../src/shared/errors.js';
import type { Serial } from '../../src/shared/ids.js';
import { OcspCheck } from '../../src/revoke/ocsp-check.js';

const thisUpdate = new Date('2026-12-07T16:00:00Z');
const nextUpdate = new Date('2026-12-07T17:00:00Z');
const revokedAt = new Date('2026-12-07T15:00:00Z');

function signedFor(serial: string, reasonCode: number | null): Buffer {
  const certId = {
    hashAlgorithm: 'sha1' as const,
    issuerNameHash: randomBytes(20),
    issuerKeyHash: randomBytes(20),
    serial: Buffer.from(serial, 'hex'),
  };
  const single = encodeSingleResponse({ certId, status: { kind: 'revoked', revokedAt, reasonCode }, thisUpdate, nextUpdate });
  const data = encodeResponseData({ responderKeyHash: Buffer.alloc(20, 0xab), producedAt: thisUpdate, responses: [single] });
  return encodeOcspResponse(data, 'ecdsa-with-SHA256', randomBytes(70), null);
}

describe('OcspCheck', () => {
  test('reads the status, reason, times and responder from the DER, and hands the DER on', async () => {
    const der = signedFor('7a01', 1);
    const check = new OcspCheck({ answerFor: async () => ({ der, source: 'stored' }) });
    const view = await check.check('7a01' as Serial);
    assert.deepEqual(view, {
      serial: '7a01',
      responseStatus: 'successful',
      certStatus: 'revoked',
      revocationTime: revokedAt.toISOString(),
      reason: 'keyCompromise',
      thisUpdate: thisUpdate.toISOString(),
      nextUpdate: nextUpdate.toISOString(),
      producedAt: thisUpdate.toISOString(),
      responderId: { byKey: 'ab'.repeat(20) },
      responderCertificate: null,
      source: 'stored',
      hashAlgorithm: 'sha1',
      der: der.toString('base64'),
    });
    // A revocation without a reason code (unspecified is left out) reads as no reason.
    const bare = new OcspCheck({ answerFor: async () => ({ der: signedFor('7a01', null), source: 'signed' }) });
    assert.equal((await bare.check('7a01' as Serial)).reason, null);
  });

  test('an error status has no certificate status; an unknown serial is NotFound', async () => {
    const refused = new OcspCheck({ answerFor: async () => ({ der: encodeOcspError('unauthorized'), source: 'none' }) });
    const view = await refused.check('01' as Serial);
    assert.equal(view.responseStatus, 'unauthorized');
    assert.equal(view.certStatus, null);
    assert.equal(view.producedAt, null);
    assert.equal(view.der, encodeOcspError('unauthorized').toString('base64'));
    const none = new OcspCheck({ answerFor: async () => undefined });
    await assert.rejects(none.check('02' as Serial), (e: unknown) => e instanceof DomainError && e.kind === 'NotFound');
  });
});
