import { oid, readTlv, TAG, type Bytes } from './der.js';

/** What a SubjectPublicKeyInfo holds, read structurally from its DER (no key object is built). */
export type SpkiDescription =
  | { kind: 'ec'; curve: 'P-256' | 'P-384' | 'other'; curveOid: string | undefined; uncompressed: boolean }
  | { kind: 'ed25519' }
  | { kind: 'rsa'; bits: number; exponent: bigint }
  | { kind: 'other' };

const OIDS = {
  ecPublicKey: oid('1.2.840.10045.2.1'),
  p256: oid('1.2.840.10045.3.1.7'),
  p384: oid('1.3.132.0.34'),
  ed25519: oid('1.3.101.112'),
  rsa: oid('1.2.840.113549.1.1.1'),
};

const same = (buf: Bytes, start: number, end: number, encoded: Bytes) =>
  end - start === encoded.length && encoded.every((b, i) => buf[start + i] === b);

function readInteger(buf: Bytes, pos: number): { value: Bytes; end: number } {
  const t = readTlv(buf, pos);
  if (t.tag !== TAG.INTEGER || t.end === t.start) throw new TypeError('INTEGER expected');
  if (buf[t.start]! & 0x80) throw new TypeError('negative INTEGER');
  let s = t.start;
  while (s < t.end - 1 && buf[s] === 0) s++;
  return { value: buf.subarray(s, t.end), end: t.end };
}

/**
 * The issuance hot path needs only the algorithm, curve and size to apply key policy. Building a
 * KeyObject per request (node:crypto.createPublicKey) cost a fifth of issuance time; the key's
 * mathematical validity is established where possession is proven (the CSR signature).
 * Throws TypeError/RangeError on malformed DER.
 */
export function describeSpki(spki: Bytes): SpkiDescription {
  const outer = readTlv(spki, 0);
  if (outer.tag !== TAG.SEQUENCE || outer.end !== spki.length) throw new TypeError('SubjectPublicKeyInfo must be one SEQUENCE');
  const alg = readTlv(spki, outer.start);
  if (alg.tag !== TAG.SEQUENCE) throw new TypeError('AlgorithmIdentifier expected');
  const algOid = readTlv(spki, alg.start);
  if (algOid.tag !== TAG.OID) throw new TypeError('algorithm OID expected');
  const bits = readTlv(spki, alg.end);
  if (bits.tag !== TAG.BIT_STRING || bits.end !== outer.end || bits.end - bits.start < 2 || spki[bits.start] !== 0) {
    throw new TypeError('subjectPublicKey must be a whole-byte BIT STRING ending the SEQUENCE');
  }
  const key = spki.subarray(bits.start + 1, bits.end);
  const oidOf = (t: { start: number; end: number }) => spki.subarray(t.start - 2, t.end);

  if (same(spki, algOid.start - 2, algOid.end, OIDS.ecPublicKey)) {
    const params = readTlv(spki, algOid.end);
    if (params.tag !== TAG.OID || params.end !== alg.end) return { kind: 'ec', curve: 'other', curveOid: undefined, uncompressed: false };
    const p = oidOf(params);
    const curve = same(p, 0, p.length, OIDS.p256) ? 'P-256' : same(p, 0, p.length, OIDS.p384) ? 'P-384' : 'other';
    const coord = curve === 'P-256' ? 32 : curve === 'P-384' ? 48 : 0;
    const uncompressed = key[0] === 0x04 && key.length === 1 + 2 * coord;
    return { kind: 'ec', curve, curveOid: Buffer.from(p).toString('hex'), uncompressed };
  }
  if (same(spki, algOid.start - 2, algOid.end, OIDS.ed25519)) {
    if (algOid.end !== alg.end || key.length !== 32) throw new TypeError('an Ed25519 key is 32 bytes with no parameters');
    return { kind: 'ed25519' };
  }
  if (same(spki, algOid.start - 2, algOid.end, OIDS.rsa)) {
    const seq = readTlv(key, 0);
    if (seq.tag !== TAG.SEQUENCE || seq.end !== key.length) throw new TypeError('RSAPublicKey must be a SEQUENCE');
    const n = readInteger(key, seq.start);
    const e = readInteger(key, n.end);
    if (e.end !== seq.end) throw new TypeError('trailing data in RSAPublicKey');
    const bitLength = (n.value.length - 1) * 8 + (32 - Math.clz32(n.value[0]!));
    let exponent = 0n;
    for (const b of e.value) exponent = (exponent << 8n) | BigInt(b);
    return { kind: 'rsa', bits: bitLength, exponent };
  }
  return { kind: 'other' };
}

/**
 * The subject key's type as the crypto inventory names it ("EC P-256", "EC P-384", "EC <curve
 * OID hex>", "RSA 2048", "Ed25519", "other"): recorded with each certificate when it is issued
 * (certificates.key_type, migration 0029) and read from the DER of rows issued before.
 */
export function keyTypeLabel(spki: Bytes): string {
  const k = describeSpki(spki);
  if (k.kind === 'ec') return `EC ${k.curve === 'other' ? (k.curveOid ?? 'unknown curve') : k.curve}`;
  if (k.kind === 'rsa') return `RSA ${k.bits}`;
  return k.kind === 'ed25519' ? 'Ed25519' : 'other';
}

/**
 * How the verify worker builds the key of a SubjectPublicKeyInfo. OpenSSL 3's DER decoder costs
 * ~125 µs per key; an uncompressed P-256/P-384 point goes in raw instead (~55 µs), which checks
 * that the point is on the curve just the same.
 */
export function verifyKeyOf(spki: Uint8Array): { ecPoint: Uint8Array; curve: 'P-256' | 'P-384' } | { spki: Uint8Array } {
  const d = describeSpki(spki);
  if (d.kind === 'ec' && d.uncompressed && d.curve !== 'other') {
    const length = 1 + 2 * (d.curve === 'P-256' ? 32 : 48);
    return { ecPoint: Buffer.from(spki.buffer, spki.byteOffset + spki.length - length, length), curve: d.curve };
  }
  return { spki };
}

/**
 * The SubjectPublicKeyInfo inside a certificate's DER, found by walking the TBSCertificate's
 * fields (version, serial, signature, issuer, validity, subject) without parsing the rest: what a
 * crypto inventory over a whole fleet needs, at a fraction of a full parse's cost.
 */
export function spkiOfCertificate(der: Bytes): Bytes {
  const cert = readTlv(der, 0);
  const tbs = readTlv(der, cert.start);
  if (cert.tag !== TAG.SEQUENCE || tbs.tag !== TAG.SEQUENCE) throw new TypeError('not a certificate');
  let pos = tbs.start;
  if (der[pos] === 0xa0) pos = readTlv(der, pos).end; // [0] version
  for (let i = 0; i < 5; i++) pos = readTlv(der, pos).end; // serial, signature, issuer, validity, subject
  const spki = readTlv(der, pos);
  if (spki.tag !== TAG.SEQUENCE || spki.end > tbs.end) throw new TypeError('SubjectPublicKeyInfo expected');
  return der.subarray(pos, spki.end);
}
