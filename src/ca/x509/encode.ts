/**
 * Direct DER encoding of X.509 v3 certificates (RFC 5280) and PKCS#10 requests
 * (RFC 2986) for the issuance hot path. No ASN.1 object model: every structure is
 * written from bytes, and anything that never changes (OIDs, AlgorithmIdentifiers,
 * the version field) is encoded once at module load.
 *
 * Signing is not done here: encode the TBS, sign it with node:crypto.sign (see
 * `nodeSignHash`), then wrap it with `encodeCertificate`.
 *
 * Returned arrays may be shared constants (e.g. `algorithmIdentifier`): read-only.
 */
import {
  TAG,
  alloc,
  concat,
  integer,
  integerSize,
  isSingleTlv,
  NULL,
  oid,
  sequence,
  sequenceOf,
  setOf,
  timeSize,
  tlvOf,
  tlvSize,
  writeHeader,
  writeInteger,
  writeTime,
  type Bytes,
} from './der.js';
import { OID } from './oids.js';

export type SignatureAlgorithm = 'ecdsa-with-SHA256' | 'ecdsa-with-SHA384' | 'Ed25519' | 'sha256WithRSAEncryption';

// ---------------------------------------------------------------------------
// Algorithms

const ALG_ID: Record<SignatureAlgorithm, Bytes> = {
  'ecdsa-with-SHA256': sequence(oid(OID.ecdsaWithSHA256)),
  'ecdsa-with-SHA384': sequence(oid(OID.ecdsaWithSHA384)),
  Ed25519: sequence(oid(OID.ed25519)),
  sha256WithRSAEncryption: sequence(oid(OID.sha256WithRSAEncryption), NULL),
};

/** AlgorithmIdentifier: ECDSA and Ed25519 without parameters (RFC 5758, 8410), RSA with NULL (RFC 4055). */
export function algorithmIdentifier(alg: SignatureAlgorithm): Uint8Array {
  const id = ALG_ID[alg];
  if (!id) throw new TypeError(`unsupported signature algorithm: ${String(alg)}`);
  return id;
}

/** The digest name to pass to node:crypto.sign for `alg` (null for Ed25519). */
export function nodeSignHash(alg: SignatureAlgorithm): 'sha256' | 'sha384' | null {
  switch (alg) {
    case 'ecdsa-with-SHA256':
    case 'sha256WithRSAEncryption':
      return 'sha256';
    case 'ecdsa-with-SHA384':
      return 'sha384';
    case 'Ed25519':
      return null;
  }
}

// ---------------------------------------------------------------------------
// TBSCertificate

export interface TbsInput {
  /** Unsigned big-endian bytes. */
  serial: Uint8Array;
  signatureAlgorithm: SignatureAlgorithm;
  /** DER Name. */
  issuer: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  /** DER Name. */
  subject: Uint8Array;
  /** DER SubjectPublicKeyInfo, copied verbatim. */
  subjectPublicKeyInfo: Uint8Array;
  /** DER Extensions, in this order; [3] EXPLICIT omitted when empty. */
  extensions: Uint8Array[];
}

/** [0] EXPLICIT Version v3(2). */
const VERSION_V3 = Uint8Array.of(0xa0, 0x03, 0x02, 0x01, 0x02);

function checkSerial(serial: Uint8Array): void {
  let start = 0;
  while (start < serial.length && serial[start] === 0) start++;
  if (start === serial.length) throw new RangeError('serial number must be positive (RFC 5280 4.1.2.2)');
  const contentLen = serial.length - start + ((serial[start] as number) & 0x80 ? 1 : 0);
  if (contentLen > 20) throw new RangeError(`serial number is ${contentLen} octets encoded; RFC 5280 4.1.2.2 allows 20`);
}

function checkDer(what: string, b: Uint8Array, tag: number): void {
  if (!(b instanceof Uint8Array) || b.length < 2 || b[0] !== tag) throw new TypeError(`${what} must be DER (tag 0x${tag.toString(16)})`);
}

function checkValidity(notBefore: Date, notAfter: Date): void {
  const nb = Math.floor(notBefore.getTime() / 1000);
  const na = Math.floor(notAfter.getTime() / 1000);
  if (!Number.isFinite(nb) || !Number.isFinite(na)) throw new RangeError('invalid validity dates');
  if (na < nb) throw new RangeError('notAfter is before notBefore');
}

/**
 * Writes the whole TBSCertificate in one allocation. `fixed` is what sits between
 * the serial and the validity (AlgorithmIdentifier, issuer), possibly as one
 * precomputed run; `exts` are extension runs written back to back.
 */
function writeTbs(
  serial: Bytes,
  fixed: readonly Bytes[],
  notBefore: Date,
  notAfter: Date,
  subject: Bytes,
  spki: Bytes,
  exts: readonly Bytes[],
): Bytes {
  const serialLen = integerSize(serial);
  let fixedLen = 0;
  for (const f of fixed) fixedLen += f.length;
  const timesLen = timeSize(notBefore) + timeSize(notAfter);
  const validityLen = tlvSize(timesLen);
  let extLen = 0;
  for (const e of exts) extLen += e.length;
  const extSeqLen = extLen > 0 ? tlvSize(extLen) : 0;
  const extWrapLen = extLen > 0 ? tlvSize(extSeqLen) : 0;
  const bodyLen = VERSION_V3.length + serialLen + fixedLen + validityLen + subject.length + spki.length + extWrapLen;

  const out = alloc(tlvSize(bodyLen));
  let pos = writeHeader(out, 0, TAG.SEQUENCE, bodyLen);
  out.set(VERSION_V3, pos);
  pos += VERSION_V3.length;
  pos = writeInteger(out, pos, serial);
  for (const f of fixed) {
    out.set(f, pos);
    pos += f.length;
  }
  pos = writeHeader(out, pos, TAG.SEQUENCE, timesLen);
  pos = writeTime(out, pos, notBefore);
  pos = writeTime(out, pos, notAfter);
  out.set(subject, pos);
  pos += subject.length;
  out.set(spki, pos);
  pos += spki.length;
  if (extLen > 0) {
    pos = writeHeader(out, pos, TAG.CONTEXT | TAG.CONSTRUCTED | 3, extSeqLen);
    pos = writeHeader(out, pos, TAG.SEQUENCE, extLen);
    for (const e of exts) {
      out.set(e, pos);
      pos += e.length;
    }
  }
  if (pos !== out.length) throw new Error(`internal: TBS length mismatch (${pos} != ${out.length})`);
  return out;
}

/** TBSCertificate, version v3, in one allocation. */
export function encodeTbsCertificate(input: TbsInput): Uint8Array {
  checkSerial(input.serial);
  checkDer('issuer', input.issuer, TAG.SEQUENCE);
  checkDer('subject', input.subject, TAG.SEQUENCE);
  checkDer('subjectPublicKeyInfo', input.subjectPublicKeyInfo, TAG.SEQUENCE);
  checkValidity(input.notBefore, input.notAfter);
  return writeTbs(
    input.serial,
    [algorithmIdentifier(input.signatureAlgorithm), input.issuer],
    input.notBefore,
    input.notAfter,
    input.subject,
    input.subjectPublicKeyInfo,
    input.extensions,
  );
}

export interface TbsTemplateFixed {
  signatureAlgorithm: SignatureAlgorithm;
  /** DER Name of the issuing CA. */
  issuer: Uint8Array;
  /** Extensions identical in every certificate, placed before the per-certificate ones. */
  extensionsBefore?: Uint8Array[];
  /** Extensions identical in every certificate, placed after the per-certificate ones. */
  extensionsAfter?: Uint8Array[];
}

export type TbsTemplate = (
  serial: Uint8Array,
  notBefore: Date,
  notAfter: Date,
  subject: Uint8Array,
  subjectPublicKeyInfo: Uint8Array,
  extensions?: Uint8Array[],
) => Uint8Array;

/**
 * Precomputes the parts of a TBSCertificate that one issuing profile never changes.
 * The result is byte-identical to `encodeTbsCertificate` with extensions
 * `[...extensionsBefore, ...extensions, ...extensionsAfter]`.
 */
export function compileTbsTemplate(fixed: TbsTemplateFixed): TbsTemplate {
  checkDer('issuer', fixed.issuer, TAG.SEQUENCE);
  const algAndIssuer = concat([algorithmIdentifier(fixed.signatureAlgorithm), fixed.issuer]);
  const before = concat(fixed.extensionsBefore ?? []);
  const after = concat(fixed.extensionsAfter ?? []);
  const fixedParts = [algAndIssuer];
  return (serial, notBefore, notAfter, subject, spki, extensions = []) => {
    checkSerial(serial);
    checkDer('subject', subject, TAG.SEQUENCE);
    checkDer('subjectPublicKeyInfo', spki, TAG.SEQUENCE);
    checkValidity(notBefore, notAfter);
    return writeTbs(serial, fixedParts, notBefore, notAfter, subject, spki, [before, ...extensions, after]);
  };
}

/**
 * Cheap shape checks that catch the usual mix-ups: an ECDSA signature in IEEE P1363
 * (r||s) form instead of DER, or a signature made with the wrong key type.
 */
function checkSignature(alg: SignatureAlgorithm, signature: Uint8Array): void {
  if (alg === 'ecdsa-with-SHA256' || alg === 'ecdsa-with-SHA384') {
    if (!isSingleTlv(signature, TAG.SEQUENCE))
      throw new TypeError('ECDSA signature must be a DER ECDSA-Sig-Value (node:crypto.sign default dsaEncoding "der")');
  } else if (alg === 'Ed25519' && signature.length !== 64) {
    throw new TypeError(`Ed25519 signature must be 64 bytes, got ${signature.length}`);
  } else if (signature.length === 0) {
    throw new TypeError('empty signature');
  }
}

/** Writes SEQUENCE { body, AlgorithmIdentifier, BIT STRING signature } in one allocation. */
function signed(body: Bytes, alg: SignatureAlgorithm, signature: Uint8Array): Bytes {
  const algId = algorithmIdentifier(alg);
  checkSignature(alg, signature);
  const sigLen = tlvSize(signature.length + 1);
  const len = body.length + algId.length + sigLen;
  const out = alloc(tlvSize(len));
  let pos = writeHeader(out, 0, TAG.SEQUENCE, len);
  out.set(body, pos);
  pos += body.length;
  out.set(algId, pos);
  pos += algId.length;
  pos = writeHeader(out, pos, TAG.BIT_STRING, signature.length + 1);
  out[pos++] = 0;
  out.set(signature, pos);
  return out;
}

/**
 * Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }.
 * `signature` is what node:crypto.sign returns: DER ECDSA-Sig-Value, raw Ed25519,
 * or PKCS#1 v1.5 bytes.
 */
export function encodeCertificate(tbs: Uint8Array, alg: SignatureAlgorithm, signature: Uint8Array): Uint8Array {
  checkDer('tbsCertificate', tbs, TAG.SEQUENCE);
  return signed(tbs, alg, signature);
}

/** CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue } (RFC 5280 5.1). */
export function encodeCertificateList(tbs: Uint8Array, alg: SignatureAlgorithm, signature: Uint8Array): Uint8Array {
  checkDer('tbsCertList', tbs, TAG.SEQUENCE);
  return signed(tbs, alg, signature);
}

// ---------------------------------------------------------------------------
// PKCS#10

const CSR_VERSION_V1 = integer(Uint8Array.of(0));
const EXTENSION_REQUEST = oid(OID.extensionRequest);

/**
 * CertificationRequestInfo (RFC 2986 4.1), version 1. With extensions, the
 * attributes hold one extensionRequest (PKCS#9) attribute; otherwise attributes
 * is present and empty ([0] IMPLICIT SET OF with no elements, as RFC 2986 requires).
 */
export function encodeCertificationRequestInfo(subject: Uint8Array, spki: Uint8Array, extensions?: Uint8Array[]): Uint8Array {
  checkDer('subject', subject, TAG.SEQUENCE);
  checkDer('subjectPublicKeyInfo', spki, TAG.SEQUENCE);
  const attrs: Bytes[] = [];
  if (extensions && extensions.length > 0) {
    attrs.push(sequence(EXTENSION_REQUEST, setOf([sequenceOf(extensions)])));
  }
  return sequence(CSR_VERSION_V1, subject, spki, tlvOf(TAG.CONTEXT | TAG.CONSTRUCTED | 0, attrs));
}

/** CertificationRequest ::= SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature BIT STRING }. */
export function encodeCertificationRequest(info: Uint8Array, alg: SignatureAlgorithm, signature: Uint8Array): Uint8Array {
  checkDer('certificationRequestInfo', info, TAG.SEQUENCE);
  return signed(info, alg, signature);
}
