// The OCSPResponse reader (GET /v1/certificates/{serial}/ocsp reads the responder's DER with it)
// against the writer's output: every certificate status, the nextUpdate, the nonce, the carried
// certificate, error statuses; and refusals, always with OcspResponseError.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { octetString, sequence } from '../../src/ca/x509/der.js';
import {
  encodeOcspError,
  encodeOcspResponse,
  encodeResponseCerts,
  encodeResponseData,
  encodeSingleResponse,
  type OcspCertStatus,
} from '../../src/ca/x509/ocsp-response.js';
import { OcspResponseError, readOcspResponse } from '../../src/ca/x509/ocsp-response-reader.js';
import type { OcspCertId } from '../../src/ca/x509/ocsp-request.js';

const thisUpdate = new Date('2026-12-07T16:00:00Z');
const nextUpdate = new Date('2026-12-08T16:00:00Z');
const certId = (serial: string, hash: OcspCertId['hashAlgorithm'] = 'sha1'): OcspCertId => {
  const n = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 }[hash];
  return { hashAlgorithm: hash, issuerNameHash: randomBytes(n), issuerKeyHash: randomBytes(n), serial: Buffer.from(serial, 'hex') };
};
const cert = sequence(octetString(randomBytes(300)));

function response(statuses: [OcspCertId, OcspCertStatus][], opts: { nonce?: Buffer; certs?: boolean } = {}): Buffer {
  const singles = statuses.map(([id, status]) => encodeSingleResponse({ certId: id, status, thisUpdate, nextUpdate }));
  const data = encodeResponseData({
    responderKeyHash: Buffer.alloc(20, 7),
    producedAt: thisUpdate,
    responses: singles,
    nonce: opts.nonce ?? null,
  });
  return encodeOcspResponse(data, 'ecdsa-with-SHA256', randomBytes(71), opts.certs === false ? null : encodeResponseCerts([cert]));
}

describe('OCSP response reader', () => {
  test('reads good, revoked (with and without a reason) and unknown back, with the CertID, times and the carried certificate', () => {
    const revokedAt = new Date('2026-12-07T15:59:58Z');
    const cases: [OcspCertId, OcspCertStatus][] = [
      [certId('01'), { kind: 'good' }],
      [certId('7f3a', 'sha256'), { kind: 'revoked', revokedAt, reasonCode: 1 }],
      [certId('ff'), { kind: 'revoked', revokedAt, reasonCode: null }],
      [certId('1234567890abcdef1234567890abcdef12345678', 'sha512'), { kind: 'unknown' }],
    ];
    for (const [id, status] of cases) {
      const read = readOcspResponse(response([[id, status]]));
      assert.equal(read.responseStatus, 'successful');
      const b = read.basic!;
      assert.deepEqual(b.responderId, { byKey: Buffer.alloc(20, 7) });
      assert.deepEqual(b.producedAt, thisUpdate);
      assert.equal(b.signatureAlgorithm, '1.2.840.10045.4.3.2');
      assert.deepEqual(b.certs, [Buffer.from(cert)]);
      assert.equal(b.nonce, null);
      assert.equal(b.responses.length, 1);
      const s = b.responses[0]!;
      assert.deepEqual(
        { ...s, serial: s.serial.toString('hex') },
        { ...id, serial: id.serial.toString('hex'), status, thisUpdate, nextUpdate },
      );
    }
  });

  test('a serial with its high bit set reads back without the sign byte; several responses; the nonce; no certs', () => {
    const nonce = octetString(randomBytes(16));
    const read = readOcspResponse(
      response(
        [
          [certId('80'), { kind: 'good' }],
          [certId('02'), { kind: 'unknown' }],
        ],
        { nonce: Buffer.from(nonce), certs: false },
      ),
    );
    assert.deepEqual(
      read.basic!.responses.map((r) => [r.serial.toString('hex'), r.status.kind]),
      [
        ['80', 'good'],
        ['02', 'unknown'],
      ],
    );
    assert.deepEqual(read.basic!.nonce, Buffer.from(nonce));
    assert.deepEqual(read.basic!.certs, []);
  });

  test('error statuses carry no response', () => {
    for (const status of ['malformedRequest', 'internalError', 'tryLater', 'sigRequired', 'unauthorized'] as const) {
      assert.deepEqual(readOcspResponse(encodeOcspError(status)), { responseStatus: status, basic: null });
    }
  });

  test('refuses what is not such a response, with OcspResponseError only', () => {
    const good = response([[certId('01'), { kind: 'good' }]]);
    const bad: [string, Uint8Array][] = [
      ['empty', Buffer.alloc(0)],
      ['garbage', randomBytes(64)],
      ['truncated', good.subarray(0, good.length - 3)],
      ['trailing bytes', Buffer.concat([good, Buffer.of(0)])],
      ['successful without bytes', Buffer.from('30030a0100', 'hex')],
      ['an unknown status', Buffer.from('30030a0104', 'hex')],
    ];
    for (const [what, der] of bad) assert.throws(() => readOcspResponse(der), OcspResponseError, what);
    // Every single-byte corruption either reads or is refused with OcspResponseError, never anything else.
    for (let i = 0; i < good.length; i++) {
      const c = Buffer.from(good);
      c[i] = c[i]! ^ 0xff;
      try {
        readOcspResponse(c);
      } catch (e) {
        assert.ok(e instanceof OcspResponseError, `byte ${i}: ${String(e)}`);
      }
    }
  });
});
