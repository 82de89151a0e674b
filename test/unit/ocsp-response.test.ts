// The one-pass OCSPResponse writer against the same structure nested with the DER helpers (short
// and long length forms: small ECDSA and large RSA signatures, certificate blocks past 255 bytes).
// Real responses are read by openssl ocsp and GnuTLS ocsptool in test/e2e/ocsp.test.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { TAG, bitString, octetString, oid, sequence, sequenceOf, tlv } from '../../src/ca/x509/der.js';
import { algorithmIdentifier, type SignatureAlgorithm } from '../../src/ca/x509/encode.js';
import { encodeOcspResponse, encodeResponseCerts } from '../../src/ca/x509/ocsp-response.js';

function nested(responseData: Uint8Array, alg: SignatureAlgorithm, signature: Uint8Array, certs: Uint8Array[]): Buffer {
  const basic = sequenceOf([
    responseData,
    algorithmIdentifier(alg),
    bitString(signature),
    ...(certs.length ? [tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 0, sequenceOf(certs))] : []),
  ]);
  return Buffer.from(
    sequence(
      tlv(0x0a, Uint8Array.of(0)),
      tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 0, sequence(oid('1.3.6.1.5.5.7.48.1.1'), octetString(basic))),
    ),
  );
}

/** A stand-in ResponseData / Certificate of the given size: a SEQUENCE of filler. */
const blob = (n: number) => sequence(octetString(randomBytes(n)));

describe('OCSP response writer', () => {
  const cases: [string, SignatureAlgorithm, number, number, number][] = [
    ['ECDSA P-256, small certificate', 'ecdsa-with-SHA256', 120, 72, 100],
    ['ECDSA P-256, typical', 'ecdsa-with-SHA256', 180, 71, 480],
    ['RSA-4096, large certificate', 'sha256WithRSAEncryption', 300, 512, 1400],
    ['no certificate', 'ecdsa-with-SHA256', 100, 70, 0],
    ['a response past 64 KiB', 'sha256WithRSAEncryption', 70_000, 256, 300],
  ];
  for (const [name, alg, dataSize, sigSize, certSize] of cases) {
    test(name, () => {
      const data = blob(dataSize);
      const sig = randomBytes(sigSize);
      const certs = certSize ? [blob(certSize)] : [];
      const ours = encodeOcspResponse(data, alg, sig, certs.length ? encodeResponseCerts(certs) : null);
      assert.deepEqual(ours, nested(data, alg, sig, certs));
    });
  }
});
