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
import { createHash } from 'node:crypto';
import {
  TAG,
  alloc,
  bitString,
  boolean,
  concat,
  ia5String,
  integer,
  integerSize,
  isPrintableString,
  isSingleTlv,
  NULL,
  octetString,
  oid,
  printableString,
  readTlv,
  sequence,
  sequenceOf,
  setOf,
  smallInt,
  timeSize,
  tlv,
  tlvOf,
  tlvSize,
  utf8String,
  writeHeader,
  writeInteger,
  writeTime,
  type Bytes,
} from './der.js';

export type SignatureAlgorithm = 'ecdsa-with-SHA256' | 'ecdsa-with-SHA384' | 'Ed25519' | 'sha256WithRSAEncryption';
export type NameAttributeType = 'C' | 'ST' | 'L' | 'O' | 'OU' | 'CN' | 'serialNumber';
export interface NameAttribute {
  type: NameAttributeType;
  value: string;
}
export type GeneralName =
  | { type: 'dns'; value: string }
  | { type: 'ip'; value: string }
  | { type: 'uri'; value: string }
  | { type: 'email'; value: string };
export type KeyUsageFlag =
  | 'digitalSignature'
  | 'nonRepudiation'
  | 'keyEncipherment'
  | 'dataEncipherment'
  | 'keyAgreement'
  | 'keyCertSign'
  | 'cRLSign';

export const OID = Object.freeze({
  // Extended key usages (RFC 5280 4.2.1.12)
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  codeSigning: '1.3.6.1.5.5.7.3.3',
  emailProtection: '1.3.6.1.5.5.7.3.4',
  timeStamping: '1.3.6.1.5.5.7.3.8',
  ocspSigning: '1.3.6.1.5.5.7.3.9',
  anyExtendedKeyUsage: '2.5.29.37.0',
  // Signature algorithms
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  ecdsaWithSHA384: '1.2.840.10045.4.3.3',
  ed25519: '1.3.101.112',
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  // Public key algorithms
  ecPublicKey: '1.2.840.10045.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  secp256r1: '1.2.840.10045.3.1.7',
  secp384r1: '1.3.132.0.34',
  // Name attributes (X.520)
  countryName: '2.5.4.6',
  stateOrProvinceName: '2.5.4.8',
  localityName: '2.5.4.7',
  organizationName: '2.5.4.10',
  organizationalUnitName: '2.5.4.11',
  commonName: '2.5.4.3',
  serialNumber: '2.5.4.5',
  // Certificate extensions
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  crlDistributionPoints: '2.5.29.31',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  authorityInfoAccess: '1.3.6.1.5.5.7.1.1',
  ocspNoCheck: '1.3.6.1.5.5.7.48.1.5',
  // Access methods (RFC 5280 4.2.2.1)
  adOcsp: '1.3.6.1.5.5.7.48.1',
  adCaIssuers: '1.3.6.1.5.5.7.48.2',
  // PKCS#9
  extensionRequest: '1.2.840.113549.1.9.14',
} as const);

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
// Names

const NAME_ATTR_OID: Record<NameAttributeType, Bytes> = {
  C: oid(OID.countryName),
  ST: oid(OID.stateOrProvinceName),
  L: oid(OID.localityName),
  O: oid(OID.organizationName),
  OU: oid(OID.organizationalUnitName),
  CN: oid(OID.commonName),
  serialNumber: oid(OID.serialNumber),
};

function attributeValue(a: NameAttribute): Bytes {
  if (typeof a.value !== 'string' || a.value.length === 0) throw new TypeError(`name attribute ${a.type} must be a non-empty string`);
  switch (a.type) {
    case 'C':
      // X.520 countryName: PrintableString (SIZE (2)), ISO 3166 alpha-2.
      if (a.value.length !== 2 || !isPrintableString(a.value)) throw new TypeError(`C must be a two-letter country code, got ${JSON.stringify(a.value)}`);
      return printableString(a.value);
    case 'serialNumber':
      return printableString(a.value);
    default:
      return utf8String(a.value);
  }
}

/**
 * Name as an RDNSequence with one single-valued RDN per attribute, in the given
 * order. C and serialNumber are PrintableString (their X.520 syntax), everything
 * else UTF8String (RFC 5280 4.1.2.6: new certificates MUST use UTF8String for
 * DirectoryString).
 */
export function encodeName(attrs: NameAttribute[]): Uint8Array {
  const rdns: Bytes[] = new Array<Bytes>(attrs.length);
  for (let i = 0; i < attrs.length; i++) {
    const a = attrs[i] as NameAttribute;
    const type = NAME_ATTR_OID[a.type];
    if (!type) throw new TypeError(`unsupported name attribute: ${String(a.type)}`);
    rdns[i] = tlv(TAG.SET, sequence(type, attributeValue(a)));
  }
  return sequenceOf(rdns);
}

// ---------------------------------------------------------------------------
// Key identifiers

/** The subjectPublicKey BIT STRING contents of a DER SPKI, without the unused-bits octet. */
export function subjectPublicKeyBits(spki: Uint8Array): Uint8Array {
  const outer = readTlv(spki, 0);
  if (outer.tag !== TAG.SEQUENCE) throw new TypeError('SubjectPublicKeyInfo must be a SEQUENCE');
  const alg = readTlv(spki, outer.start);
  if (alg.tag !== TAG.SEQUENCE) throw new TypeError('SubjectPublicKeyInfo.algorithm must be a SEQUENCE');
  const key = readTlv(spki, alg.end);
  if (key.tag !== TAG.BIT_STRING || key.end - key.start < 1) throw new TypeError('SubjectPublicKeyInfo.subjectPublicKey must be a BIT STRING');
  if (key.end !== outer.end) throw new TypeError('trailing data in SubjectPublicKeyInfo');
  return spki.subarray(key.start + 1, key.end);
}

/**
 * RFC 5280 4.2.1.2 method (1): the 160-bit SHA-1 hash of the value of the BIT
 * STRING subjectPublicKey (excluding the tag, length, and number of unused bits).
 */
export function keyIdentifier(spki: Uint8Array): Uint8Array {
  const d = createHash('sha1').update(subjectPublicKeyBits(spki)).digest();
  return new Uint8Array(d.buffer, d.byteOffset, d.length);
}

// ---------------------------------------------------------------------------
// General names

function parseIPv4(s: string): number[] | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

function parseIPv6(s: string): number[] | undefined {
  if (s.includes('%')) return undefined; // zone ids have no meaning in a certificate
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (part: string | undefined): number[] | undefined => {
    if (!part) return [];
    const words: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const g = items[i] as string;
      if (i === items.length - 1 && g.includes('.')) {
        const v4 = parseIPv4(g);
        if (!v4) return undefined;
        words.push(((v4[0] as number) << 8) | (v4[1] as number), ((v4[2] as number) << 8) | (v4[3] as number));
      } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) {
        words.push(parseInt(g, 16));
      } else {
        return undefined;
      }
    }
    return words;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return undefined;
  // An embedded IPv4 address may only end the address.
  if (halves.length === 2 && halves[0]?.includes('.')) return undefined;
  let words: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    words = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    if (head.length !== 8) return undefined;
    words = head;
  }
  const out: number[] = [];
  for (const w of words) out.push(w >> 8, w & 0xff);
  return out;
}

/** iPAddress octets: 4 for IPv4 (dotted quad), 16 for IPv6 (full, `::` and embedded-IPv4 forms). */
export function ipAddressBytes(ip: string): Uint8Array {
  const bytes = ip.includes(':') ? parseIPv6(ip) : parseIPv4(ip);
  if (!bytes) throw new TypeError(`invalid IP address: ${JSON.stringify(ip)}`);
  return Uint8Array.from(bytes);
}

function ia5Contents(s: string, what: string): Bytes {
  if (s.length === 0) throw new TypeError(`${what} must not be empty`);
  const encoded = ia5String(s); // validates the repertoire
  return encoded.subarray(encoded.length - s.length);
}

/** One GeneralName (RFC 5280 4.2.1.6), IMPLICIT context tags. */
export function encodeGeneralName(n: GeneralName): Uint8Array {
  switch (n.type) {
    case 'email':
      return tlv(TAG.CONTEXT | 1, ia5Contents(n.value, 'rfc822Name'));
    case 'dns':
      return tlv(TAG.CONTEXT | 2, ia5Contents(n.value, 'dNSName'));
    case 'uri':
      return tlv(TAG.CONTEXT | 6, ia5Contents(n.value, 'uniformResourceIdentifier'));
    case 'ip':
      return tlv(TAG.CONTEXT | 7, ipAddressBytes(n.value));
    default:
      throw new TypeError(`unsupported GeneralName type: ${String((n as { type: unknown }).type)}`);
  }
}

function uriName(uri: string): Bytes {
  return tlv(TAG.CONTEXT | 6, ia5Contents(uri, 'URI'));
}

// ---------------------------------------------------------------------------
// Extensions

/**
 * CRLDistributionPoints (also the syntax of a CRL's Freshest CRL extension): one
 * DistributionPoint { distributionPoint [0] DistributionPointName } listing every URL, where
 * DistributionPointName is a CHOICE (so [0] is EXPLICIT) of fullName [0] IMPLICIT GeneralNames.
 */
export function distributionPoints(urls: string[]): Uint8Array {
  if (urls.length === 0) throw new TypeError('a distribution point needs at least one URL');
  const fullName = tlvOf(TAG.CONTEXT | TAG.CONSTRUCTED | 0, urls.map(uriName));
  return sequence(sequence(tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 0, fullName)));
}

/** Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }. */
export function extension(extnId: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? sequence(oid(extnId), boolean(true), octetString(value)) : sequence(oid(extnId), octetString(value));
}

const KEY_USAGE_BIT: Record<KeyUsageFlag, number> = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
};

const AD_OCSP = oid(OID.adOcsp);
const AD_CA_ISSUERS = oid(OID.adCaIssuers);
const OCSP_NOCHECK = extension(OID.ocspNoCheck, false, NULL);

export const ext = {
  /** Critical. cA is omitted when false (DEFAULT FALSE); pathLen only with cA. */
  basicConstraints(o: { ca: boolean; pathLen?: number }): Uint8Array {
    if (o.pathLen !== undefined && !o.ca) throw new TypeError('pathLen is only allowed when ca is true');
    const parts: Bytes[] = [];
    if (o.ca) parts.push(boolean(true));
    if (o.pathLen !== undefined) parts.push(smallInt(o.pathLen));
    return extension(OID.basicConstraints, true, sequenceOf(parts));
  },

  /** Critical. Named bit list, trailing zero bits trimmed (X.690 11.2.2). */
  keyUsage(flags: KeyUsageFlag[]): Uint8Array {
    if (flags.length === 0) throw new TypeError('keyUsage needs at least one flag');
    let bits = 0;
    let highest = 0;
    for (const f of flags) {
      const b = KEY_USAGE_BIT[f];
      if (b === undefined) throw new TypeError(`unknown key usage: ${String(f)}`);
      bits |= 0x80 >> b;
      if (b > highest) highest = b;
    }
    return extension(OID.keyUsage, true, bitString(Uint8Array.of(bits), 7 - highest));
  },

  /** Not critical. */
  extendedKeyUsage(oids: string[]): Uint8Array {
    if (oids.length === 0) throw new TypeError('extendedKeyUsage needs at least one OID');
    return extension(OID.extKeyUsage, false, sequenceOf(oids.map(oid)));
  },

  subjectKeyIdentifier(keyId: Uint8Array): Uint8Array {
    return extension(OID.subjectKeyIdentifier, false, octetString(keyId));
  },

  /** AuthorityKeyIdentifier with keyIdentifier [0] only. */
  authorityKeyIdentifier(keyId: Uint8Array): Uint8Array {
    return extension(OID.authorityKeyIdentifier, false, sequence(tlv(TAG.CONTEXT | 0, keyId)));
  },

  subjectAltName(names: GeneralName[], critical: boolean): Uint8Array {
    if (names.length === 0) throw new TypeError('subjectAltName needs at least one name');
    return extension(OID.subjectAltName, critical, sequenceOf(names.map(encodeGeneralName)));
  },

  /** Not critical. OCSP access descriptions first, then caIssuers. */
  authorityInfoAccess(o: { ocsp: string[]; caIssuers: string[] }): Uint8Array {
    const items: Bytes[] = [];
    for (const u of o.ocsp) items.push(sequence(AD_OCSP, uriName(u)));
    for (const u of o.caIssuers) items.push(sequence(AD_CA_ISSUERS, uriName(u)));
    if (items.length === 0) throw new TypeError('authorityInfoAccess needs at least one URL');
    return extension(OID.authorityInfoAccess, false, sequenceOf(items));
  },

  /** Not critical. One DistributionPoint whose fullName lists every URL. */
  crlDistributionPoints(urls: string[]): Uint8Array {
    return extension(OID.crlDistributionPoints, false, distributionPoints(urls));
  },

  /** id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): NULL value, not critical. */
  ocspNoCheck(): Uint8Array {
    return OCSP_NOCHECK;
  },
};

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
    if (!isSingleTlv(signature, TAG.SEQUENCE)) throw new TypeError('ECDSA signature must be a DER ECDSA-Sig-Value (node:crypto.sign default dsaEncoding "der")');
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
