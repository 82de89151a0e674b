/**
 * A lean PKCS#10 (RFC 2986) reader and proof-of-possession check for the enrollment hot path.
 *
 * @peculiar/x509's Pkcs10CertificateRequest builds an ASN.1 object model and verifies through
 * WebCrypto; parse + verify managed ~1,100-1,700 CSRs/s, under the 2,000/s the enrollment
 * endpoint needs on two cores (bench/csr.ts). Here the DER is walked once, strictly, without an
 * object model, and the signature is checked with node:crypto. The library stays the oracle:
 * test/unit/csr.test.ts parses openssl-, library- and encoder-made CSRs both ways and compares
 * every field.
 *
 * Division of labour:
 *  - `csrFromBody`  : transport encoding (PEM, base64 as EST sends it, raw DER) and a size cap.
 *  - `parseCsrDer`  : structure only, strict DER; no KeyObject, no crypto. Throws CsrError.
 *  - `verifyCsr`    : the signature over CertificationRequestInfo (proof of possession).
 *  - key policy (curves, RSA sizes, exponent) stays with `keyAlgorithmOf(spki)` in ../keys.ts.
 *
 * Strictness: definite lengths in minimal form only, low tag numbers, no constructed strings,
 * every SEQUENCE filled exactly, no trailing bytes, version v1(0) only, the attributes field
 * present (RFC 2986 makes it mandatory). Two deliberate leniencies, both without ambiguity:
 * an explicitly encoded `critical FALSE` / `cA FALSE` (a BER-ism many encoders emit), and
 * NULL or absent parameters for ECDSA and RSA PKCS#1 v1.5 signature algorithms (RFC 5758 and
 * RFC 4055 each name one form; real encoders emit both). SET OF ordering is not enforced
 * (encoders commonly get it wrong and it changes nothing we read).
 */
import { constants } from 'node:crypto';
import { SignatureVerifier, type VerifyJob } from '../../shared/crypto-worker.js';
import { DerError, readTlv, refusingWith, type DerFault, type TlvHeader } from './der.js';
import { verifyKeyOf } from './spki.js';

export type CsrSignatureAlgorithm =
  | 'ecdsa-with-SHA256'
  | 'ecdsa-with-SHA384'
  | 'ecdsa-with-SHA512'
  | 'Ed25519'
  | 'sha256WithRSAEncryption'
  | 'sha384WithRSAEncryption'
  | 'sha512WithRSAEncryption'
  | 'rsassa-pss';

export type CsrHash = 'sha256' | 'sha384' | 'sha512';

export interface ParsedCsr {
  der: Buffer;
  /** CertificationRequestInfo bytes (what the signature covers). */
  info: Buffer;
  subjectDer: Buffer;
  /** The first CN in the subject, if any (UTF8String/PrintableString/IA5String/T61/BMP/Universal decoded). */
  commonName: string | undefined;
  spki: Buffer;
  /** Every extension in the extensionRequest attribute (OID dotted + critical), for policy to refuse or ignore. */
  requestedExtensions: { oid: string; critical: boolean }[];
  /** SANs requested (dns, ip, uri, email), decoded. Other GeneralName types are skipped (their extension is listed above). */
  requestedSans: { type: 'dns' | 'ip' | 'uri' | 'email'; value: string }[];
  /** true when the request asks for basicConstraints cA=TRUE or keyUsage keyCertSign/cRLSign. */
  requestsCaRights: boolean;
  challengePassword: string | undefined;
  signatureAlgorithm: CsrSignatureAlgorithm;
  /** The signature value (BIT STRING contents after the unused-bits octet). */
  signature: Buffer;
  /** RSASSA-PSS parameters when signatureAlgorithm is 'rsassa-pss' (MGF1 uses the same hash). */
  pss: { hash: CsrHash; saltLength: number } | undefined;
}

/** The CSR is not one we accept; `message` is a short human reason. */
export class CsrError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CsrError';
  }
}

/** Bodies (PEM, base64 or DER) larger than this are refused before any decoding. */
export const MAX_CSR_BODY_BYTES = 64 * 1024;

// ---------------------------------------------------------------------------
// Strict DER reading

const fail = (reason: string): never => {
  throw new CsrError(reason);
};

/** One TLV: `tag`, contents from `start` to `end` (exclusive); `hdr` is where the tag octet sits. */
interface Tlv extends TlvHeader {
  hdr: number;
}

/** The CSR's words for a DER fault in `what`; `atEnd` when its container is the whole CSR. */
function derReason(fault: DerFault, atEnd: boolean, what: string): string {
  switch (fault) {
    case 'missing':
      return atEnd ? 'the CSR is truncated' : `malformed CSR: ${what} is missing`;
    case 'truncated':
      return atEnd ? 'the CSR is truncated' : `malformed CSR: ${what} overruns its container`;
    case 'high-tag':
      return 'malformed CSR: high tag numbers are not used in PKCS#10';
    case 'indefinite':
      return 'indefinite lengths are not DER';
    case 'too-long':
      return `malformed CSR: the length of ${what} is too large`;
    case 'non-minimal':
      return 'non-minimal DER length';
  }
}

/**
 * Reads the TLV at `pos`, which must lie wholly before `limit` (the end of its container), with
 * der.ts's strict reader; three length octets at most (a CSR is under 64 KB).
 */
function tlvAt(buf: Uint8Array, pos: number, limit: number, what: string): Tlv {
  let h: TlvHeader;
  try {
    h = readTlv(buf, pos, limit, 3);
  } catch (e) {
    return fail(e instanceof DerError ? derReason(e.fault, limit === buf.length, what) : 'the CSR cannot be parsed');
  }
  return { tag: h.tag, hdr: pos, start: h.start, end: h.end };
}

/** `tlvAt` that also checks the tag. */
function expect(buf: Uint8Array, pos: number, limit: number, tag: number, what: string): Tlv {
  const t = tlvAt(buf, pos, limit, what);
  if (t.tag !== tag) fail(`malformed CSR: ${what} has the wrong type`);
  return t;
}

const MAX_DEPTH = 24;

/**
 * Checks that [start, end) is a run of well-formed DER TLVs, recursing into constructed ones.
 * Universal constructed encodings other than SEQUENCE and SET (BER constructed strings) are refused.
 */
function walk(buf: Uint8Array, start: number, end: number, what: string, depth = 0): void {
  if (depth > MAX_DEPTH) fail(`malformed CSR: ${what} is nested too deeply`);
  let pos = start;
  while (pos < end) {
    const t = tlvAt(buf, pos, end, what);
    const tag = t.tag;
    if (tag === 0x00) fail(`malformed CSR: ${what} holds an end-of-contents marker`);
    if (tag & 0x20) {
      if ((tag & 0xc0) === 0 && tag !== 0x30 && tag !== 0x31) fail(`malformed CSR: ${what} uses a constructed string (BER, not DER)`);
      walk(buf, t.start, t.end, what, depth + 1);
    } else if (tag === 0x10 || tag === 0x11) {
      fail(`malformed CSR: ${what} has a primitive SEQUENCE or SET`);
    } else if (tag === 0x01 && (t.end - t.start !== 1 || (buf[t.start] !== 0 && buf[t.start] !== 0xff))) {
      fail(`malformed CSR: ${what} has a BOOLEAN that is not DER`);
    }
    pos = t.end;
  }
}

/** Dotted form of the OID whose contents are [start, end). */
function oidAt(buf: Uint8Array, t: Tlv, what: string): string {
  const { start, end } = t;
  if (start === end) fail(`malformed CSR: ${what} is an empty OID`);
  if ((buf[end - 1] as number) & 0x80) fail(`malformed CSR: ${what} is a truncated OID`);
  let out = '';
  let v = 0;
  let big: bigint | undefined;
  let first = true;
  let arcStart = true;
  for (let i = start; i < end; i++) {
    const b = buf[i] as number;
    if (arcStart && b === 0x80) fail(`malformed CSR: ${what} is an OID with a non-minimal arc`);
    arcStart = false;
    if (big !== undefined) big = (big << 7n) | BigInt(b & 0x7f);
    else {
      v = v * 128 + (b & 0x7f);
      if (v > 2 ** 45) big = BigInt(v);
    }
    if (b & 0x80) continue;
    arcStart = true;
    if (first) {
      first = false;
      if (big !== undefined) out = `2.${big - 80n}`;
      else out = v < 40 ? `0.${v}` : v < 80 ? `1.${v - 40}` : `2.${v - 80}`;
    } else {
      out += `.${big !== undefined ? big.toString() : v}`;
    }
    v = 0;
    big = undefined;
  }
  return out;
}

/** A non-negative INTEGER in minimal form, as a number (small values only). */
function smallIntAt(buf: Uint8Array, t: Tlv, what: string, max: number): number {
  const len = t.end - t.start;
  if (len === 0) fail(`malformed CSR: ${what} is an empty INTEGER`);
  const b0 = buf[t.start] as number;
  if (b0 & 0x80) fail(`${what} must not be negative`);
  if (len > 1 && b0 === 0 && ((buf[t.start + 1] as number) & 0x80) === 0) fail(`malformed CSR: ${what} is a non-minimal INTEGER`);
  if (len > 7) fail(`${what} is out of range`);
  let v = 0;
  for (let i = t.start; i < t.end; i++) v = v * 256 + (buf[i] as number);
  if (v > max) fail(`${what} is out of range`);
  return v;
}

function booleanAt(buf: Uint8Array, t: Tlv, what: string): boolean {
  if (t.end - t.start !== 1) fail(`malformed CSR: ${what} is not a one-octet BOOLEAN`);
  const b = buf[t.start];
  if (b === 0xff) return true;
  if (b === 0x00) return false;
  return fail(`malformed CSR: ${what} is a BOOLEAN that is not DER`);
}

// ---------------------------------------------------------------------------
// Strings

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function latin1(buf: Uint8Array, start: number, end: number): string {
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('latin1');
}

/** 7-bit text (IA5String, PrintableString); NUL is refused (the null-prefix trick). */
function asciiAt(buf: Uint8Array, start: number, end: number, what: string): string {
  for (let i = start; i < end; i++) {
    const b = buf[i] as number;
    if (b === 0 || b > 0x7f) fail(`${what} is not 7-bit text`);
  }
  return latin1(buf, start, end);
}

/** A DirectoryString-like value (the CN, the challenge password), decoded to a JS string. */
function stringAt(buf: Uint8Array, t: Tlv, what: string): string {
  const { start, end } = t;
  let s: string;
  switch (t.tag) {
    case 0x0c: // UTF8String
      try {
        s = utf8Decoder.decode(buf.subarray(start, end));
      } catch {
        return fail(`${what} is not valid UTF-8`);
      }
      break;
    case 0x13: // PrintableString
    case 0x16: // IA5String
      return asciiAt(buf, start, end, what);
    case 0x14: // TeletexString (T61): read as ISO 8859-1, as OpenSSL does
      s = latin1(buf, start, end);
      break;
    case 0x1e: {
      // BMPString: UCS-2 big-endian
      if ((end - start) % 2 !== 0) fail(`${what} is a BMPString of odd length`);
      s = '';
      for (let i = start; i < end; i += 2) s += String.fromCharCode(((buf[i] as number) << 8) | (buf[i + 1] as number));
      // A surrogate without its pair is no character (and jsonb refuses it); a pair is read as UTF-16, as the library does.
      if (/\p{Cs}/u.test(s)) fail(`${what} holds an invalid character`);
      break;
    }
    case 0x1c: {
      // UniversalString: UCS-4 big-endian
      if ((end - start) % 4 !== 0) fail(`${what} is a UniversalString whose length is not a multiple of 4`);
      s = '';
      for (let i = start; i < end; i += 4) {
        const cp =
          (buf[i] as number) * 0x1000000 + (((buf[i + 1] as number) << 16) | ((buf[i + 2] as number) << 8) | (buf[i + 3] as number));
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) fail(`${what} holds an invalid character`);
        s += String.fromCodePoint(cp);
      }
      break;
    }
    default:
      return fail(`${what} has an unsupported string type`);
  }
  if (s.includes('\u0000')) fail(`${what} contains a NUL character`);
  return s;
}

// ---------------------------------------------------------------------------
// Algorithms

const OIDS = {
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  ecdsaWithSHA384: '1.2.840.10045.4.3.3',
  ecdsaWithSHA512: '1.2.840.10045.4.3.4',
  ed25519: '1.3.101.112',
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  sha384WithRSAEncryption: '1.2.840.113549.1.1.12',
  sha512WithRSAEncryption: '1.2.840.113549.1.1.13',
  rsassaPss: '1.2.840.113549.1.1.10',
  mgf1: '1.2.840.113549.1.1.8',
  sha1: '1.3.14.3.2.26',
  sha256: '2.16.840.1.101.3.4.2.1',
  sha384: '2.16.840.1.101.3.4.2.2',
  sha512: '2.16.840.1.101.3.4.2.3',
  commonName: '2.5.4.3',
  extensionRequest: '1.2.840.113549.1.9.14',
  /** Microsoft's pre-standard extensionRequest; read the same way so nothing it asks for goes unseen. */
  msExtensionRequest: '1.3.6.1.4.1.311.2.1.14',
  challengePassword: '1.2.840.113549.1.9.7',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
} as const;

type ParamsRule = 'absent' | 'absent-or-null';

const SIGNATURE_ALGORITHMS = new Map<string, { name: CsrSignatureAlgorithm; params: ParamsRule }>([
  [OIDS.ecdsaWithSHA256, { name: 'ecdsa-with-SHA256', params: 'absent-or-null' }],
  [OIDS.ecdsaWithSHA384, { name: 'ecdsa-with-SHA384', params: 'absent-or-null' }],
  [OIDS.ecdsaWithSHA512, { name: 'ecdsa-with-SHA512', params: 'absent-or-null' }],
  [OIDS.ed25519, { name: 'Ed25519', params: 'absent' }],
  [OIDS.sha256WithRSAEncryption, { name: 'sha256WithRSAEncryption', params: 'absent-or-null' }],
  [OIDS.sha384WithRSAEncryption, { name: 'sha384WithRSAEncryption', params: 'absent-or-null' }],
  [OIDS.sha512WithRSAEncryption, { name: 'sha512WithRSAEncryption', params: 'absent-or-null' }],
]);

/** Signature algorithms refused for their digest, with the name the message gives. */
const WEAK: ReadonlyMap<string, string> = new Map([
  ['1.2.840.113549.1.1.2', 'md2WithRSAEncryption'],
  ['1.2.840.113549.1.1.3', 'md4WithRSAEncryption'],
  ['1.2.840.113549.1.1.4', 'md5WithRSAEncryption'],
  ['1.2.840.113549.1.1.5', 'sha1WithRSAEncryption'],
  ['1.3.14.3.2.29', 'sha1WithRSASignature'],
  ['1.3.14.3.2.3', 'md5WithRSA'],
  ['1.2.840.10045.4.1', 'ecdsa-with-SHA1'],
  ['1.2.840.10040.4.3', 'dsa-with-sha1'],
  ['1.3.14.3.2.27', 'dsaWithSHA1'],
]);

const HASHES: ReadonlyMap<string, CsrHash> = new Map([
  [OIDS.sha256, 'sha256'],
  [OIDS.sha384, 'sha384'],
  [OIDS.sha512, 'sha512'],
]);

const HASH_OF: Record<Exclude<CsrSignatureAlgorithm, 'rsassa-pss' | 'Ed25519'>, CsrHash> = {
  'ecdsa-with-SHA256': 'sha256',
  'ecdsa-with-SHA384': 'sha384',
  'ecdsa-with-SHA512': 'sha512',
  sha256WithRSAEncryption: 'sha256',
  sha384WithRSAEncryption: 'sha384',
  sha512WithRSAEncryption: 'sha512',
};

/** A hash AlgorithmIdentifier (parameters NULL or absent) inside RSASSA-PSS parameters. */
function pssHashAt(buf: Uint8Array, seq: Tlv, what: string): CsrHash {
  const o = expect(buf, seq.start, seq.end, 0x06, what);
  const name = oidAt(buf, o, what);
  if (o.end !== seq.end) {
    const p = expect(buf, o.end, seq.end, 0x05, `${what} parameters`);
    if (p.start !== p.end || p.end !== seq.end) fail(`malformed CSR: ${what} parameters must be NULL or absent`);
  }
  if (name === OIDS.sha1) fail('RSASSA-PSS with SHA-1 is too weak');
  const h = HASHES.get(name);
  if (!h) fail(`RSASSA-PSS with the hash ${name} is not supported (SHA-256, SHA-384, SHA-512)`);
  return h as CsrHash;
}

/**
 * RSASSA-PSS-params (RFC 4055 3.1). The defaults name SHA-1, which is refused; node:crypto's
 * verify takes the MGF1 hash from the message hash, so a different MGF1 hash is refused too.
 */
function pssParamsAt(buf: Uint8Array, start: number, end: number): { hash: CsrHash; saltLength: number } {
  const seq = expect(buf, start, end, 0x30, 'the RSASSA-PSS parameters');
  if (seq.end !== end) fail('malformed CSR: trailing data after the RSASSA-PSS parameters');
  let pos = seq.start;
  let hash: CsrHash | undefined;
  let mgfHash: CsrHash | undefined;
  let saltLength = 20;
  let last = -1;
  while (pos < seq.end) {
    const f = tlvAt(buf, pos, seq.end, 'an RSASSA-PSS parameter');
    const n = f.tag - 0xa0;
    if (n < 0 || n > 3 || n <= last) fail('malformed CSR: unexpected field in the RSASSA-PSS parameters');
    last = n;
    const inner = tlvAt(buf, f.start, f.end, 'an RSASSA-PSS parameter');
    if (inner.end !== f.end) fail('malformed CSR: trailing data in an RSASSA-PSS parameter');
    if (n === 0) {
      if (inner.tag !== 0x30) fail('malformed CSR: the RSASSA-PSS hashAlgorithm has the wrong type');
      hash = pssHashAt(buf, inner, 'the RSASSA-PSS hashAlgorithm');
    } else if (n === 1) {
      if (inner.tag !== 0x30) fail('malformed CSR: the RSASSA-PSS maskGenAlgorithm has the wrong type');
      const o = expect(buf, inner.start, inner.end, 0x06, 'the RSASSA-PSS maskGenAlgorithm');
      if (oidAt(buf, o, 'the RSASSA-PSS maskGenAlgorithm') !== OIDS.mgf1) fail('RSASSA-PSS supports MGF1 only');
      const h = expect(buf, o.end, inner.end, 0x30, 'the MGF1 hash');
      if (h.end !== inner.end) fail('malformed CSR: trailing data in the RSASSA-PSS maskGenAlgorithm');
      mgfHash = pssHashAt(buf, h, 'the MGF1 hash');
    } else if (n === 2) {
      if (inner.tag !== 0x02) fail('malformed CSR: the RSASSA-PSS saltLength has the wrong type');
      saltLength = smallIntAt(buf, inner, 'the RSASSA-PSS salt length', 1024);
    } else {
      if (inner.tag !== 0x02) fail('malformed CSR: the RSASSA-PSS trailerField has the wrong type');
      if (smallIntAt(buf, inner, 'the RSASSA-PSS trailerField', 255) !== 1) fail('the RSASSA-PSS trailerField must be 1');
    }
    pos = f.end;
  }
  if (hash === undefined) fail('RSASSA-PSS with SHA-1 is too weak');
  if (mgfHash === undefined) fail('RSASSA-PSS with MGF1-SHA-1 is too weak');
  if (mgfHash !== hash) fail('RSASSA-PSS with an MGF1 hash other than the message hash is not supported');
  return { hash: hash as CsrHash, saltLength };
}

function signatureAlgorithmAt(buf: Uint8Array, seq: Tlv): { name: CsrSignatureAlgorithm; pss: ParsedCsr['pss'] } {
  const o = expect(buf, seq.start, seq.end, 0x06, 'the signature algorithm');
  const dotted = oidAt(buf, o, 'the signature algorithm');
  const weak = WEAK.get(dotted);
  if (weak) fail(`${weak} is too weak`);
  if (dotted === OIDS.rsassaPss) {
    if (o.end === seq.end) fail('RSASSA-PSS needs explicit parameters (the defaults are SHA-1, too weak)');
    return { name: 'rsassa-pss', pss: pssParamsAt(buf, o.end, seq.end) };
  }
  const known = SIGNATURE_ALGORITHMS.get(dotted);
  if (!known) return fail(`the signature algorithm ${dotted} is not supported`);
  if (o.end !== seq.end) {
    const p = tlvAt(buf, o.end, seq.end, 'the signature algorithm parameters');
    const isNull = p.tag === 0x05 && p.start === p.end && p.end === seq.end;
    if (!isNull || known.params === 'absent') fail(`malformed CSR: ${known.name} takes no parameters`);
  }
  return { name: known.name, pss: undefined };
}

// ---------------------------------------------------------------------------
// Names, keys, attributes, extensions

/** Walks Name ::= SEQUENCE OF RelativeDistinguishedName; returns the first CN. */
function subjectAt(buf: Uint8Array, name: Tlv): string | undefined {
  let cn: string | undefined;
  let pos = name.start;
  while (pos < name.end) {
    const rdn = expect(buf, pos, name.end, 0x31, 'a subject RDN');
    if (rdn.start === rdn.end) fail('malformed CSR: an empty RDN in the subject');
    let p = rdn.start;
    while (p < rdn.end) {
      const atav = expect(buf, p, rdn.end, 0x30, 'a subject attribute');
      const type = expect(buf, atav.start, atav.end, 0x06, 'a subject attribute type');
      const value = tlvAt(buf, type.end, atav.end, 'a subject attribute value');
      if (value.end !== atav.end) fail('malformed CSR: trailing data in a subject attribute');
      const dotted = oidAt(buf, type, 'a subject attribute type');
      if (cn === undefined && dotted === OIDS.commonName) cn = stringAt(buf, value, 'the subject CN');
      else walk(buf, value.hdr, value.end, 'a subject attribute value');
      p = atav.end;
    }
    pos = rdn.end;
  }
  return cn;
}

/** SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING }, structurally. */
function checkSpki(buf: Uint8Array, spki: Tlv): void {
  const alg = expect(buf, spki.start, spki.end, 0x30, 'the public key algorithm');
  const o = expect(buf, alg.start, alg.end, 0x06, 'the public key algorithm');
  oidAt(buf, o, 'the public key algorithm');
  walk(buf, o.end, alg.end, 'the public key parameters');
  const key = expect(buf, alg.end, spki.end, 0x03, 'the public key');
  if (key.end !== spki.end) fail('malformed CSR: trailing data in the public key');
  if (key.end - key.start < 2 || buf[key.start] !== 0) fail('malformed CSR: the public key is not a whole-byte BIT STRING');
}

function ipString(buf: Uint8Array, start: number, end: number): string {
  if (end - start === 4) return `${buf[start]}.${buf[start + 1]}.${buf[start + 2]}.${buf[start + 3]}`;
  if (end - start !== 16) fail('a requested iPAddress SAN must be 4 or 16 octets');
  const words: number[] = [];
  for (let i = start; i < end; i += 2) words.push(((buf[i] as number) << 8) | (buf[i + 1] as number));
  // RFC 5952: the longest run (first on a tie) of two or more zero groups becomes "::".
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':');
  if (best < 0) return hex(words);
  return `${hex(words.slice(0, best))}::${hex(words.slice(best + bestLen))}`;
}

interface Requested {
  extensions: ParsedCsr['requestedExtensions'];
  sans: ParsedCsr['requestedSans'];
  caRights: boolean;
}

function sanAt(buf: Uint8Array, start: number, end: number, out: Requested): void {
  const seq = expect(buf, start, end, 0x30, 'the subjectAltName extension');
  if (seq.end !== end) fail('malformed CSR: trailing data in the subjectAltName extension');
  if (seq.start === seq.end) fail('the requested subjectAltName extension is empty');
  let pos = seq.start;
  while (pos < seq.end) {
    const n = tlvAt(buf, pos, seq.end, 'a requested SAN');
    switch (n.tag) {
      case 0x81:
        out.sans.push({ type: 'email', value: asciiAt(buf, n.start, n.end, 'a requested email SAN') });
        break;
      case 0x82:
        out.sans.push({ type: 'dns', value: asciiAt(buf, n.start, n.end, 'a requested DNS SAN') });
        break;
      case 0x86:
        out.sans.push({ type: 'uri', value: asciiAt(buf, n.start, n.end, 'a requested URI SAN') });
        break;
      case 0x87:
        out.sans.push({ type: 'ip', value: ipString(buf, n.start, n.end) });
        break;
      case 0xa0: // otherName
      case 0xa3: // x400Address
      case 0xa4: // directoryName
      case 0xa5: // ediPartyName
        walk(buf, n.start, n.end, 'a requested SAN');
        break;
      case 0x88: // registeredID
        oidAt(buf, n, 'a requested registeredID SAN');
        break;
      default:
        fail('malformed CSR: a requested SAN has an unknown GeneralName type');
    }
    pos = n.end;
  }
}

function basicConstraintsAt(buf: Uint8Array, start: number, end: number): boolean {
  const seq = expect(buf, start, end, 0x30, 'the basicConstraints extension');
  if (seq.end !== end) fail('malformed CSR: trailing data in the basicConstraints extension');
  let pos = seq.start;
  let ca = false;
  if (pos < seq.end && buf[pos] === 0x01) {
    const b = tlvAt(buf, pos, seq.end, 'basicConstraints cA');
    ca = booleanAt(buf, b, 'basicConstraints cA');
    pos = b.end;
  }
  if (pos < seq.end) {
    const p = expect(buf, pos, seq.end, 0x02, 'basicConstraints pathLenConstraint');
    smallIntAt(buf, p, 'basicConstraints pathLenConstraint', Number.MAX_SAFE_INTEGER);
    pos = p.end;
  }
  if (pos !== seq.end) fail('malformed CSR: trailing data in the basicConstraints extension');
  return ca;
}

/** true when keyCertSign (bit 5) or cRLSign (bit 6) is set. */
function keyUsageGrantsCa(buf: Uint8Array, start: number, end: number): boolean {
  const bits = expect(buf, start, end, 0x03, 'the keyUsage extension');
  if (bits.end !== end) fail('malformed CSR: trailing data in the keyUsage extension');
  const len = bits.end - bits.start;
  if (len < 1) fail('malformed CSR: the keyUsage extension is an empty BIT STRING');
  const unused = buf[bits.start] as number;
  if (unused > 7 || (len === 1 && unused !== 0)) fail('malformed CSR: the keyUsage BIT STRING has a bad unused-bits count');
  if (len > 1 && ((buf[bits.end - 1] as number) & ((1 << unused) - 1)) !== 0)
    fail('malformed CSR: the keyUsage BIT STRING has unused bits set');
  return len > 1 && ((buf[bits.start + 1] as number) & 0x06) !== 0;
}

/** Extensions ::= SEQUENCE OF Extension, as the one value of an extensionRequest attribute. */
function extensionsAt(buf: Uint8Array, value: Tlv, out: Requested): void {
  if (value.tag !== 0x30) fail('malformed CSR: the extensionRequest value is not a SEQUENCE');
  let pos = value.start;
  while (pos < value.end) {
    const ext = expect(buf, pos, value.end, 0x30, 'a requested extension');
    const o = expect(buf, ext.start, ext.end, 0x06, 'a requested extension OID');
    const id = oidAt(buf, o, 'a requested extension OID');
    let p = o.end;
    let critical = false;
    if (p < ext.end && buf[p] === 0x01) {
      const c = tlvAt(buf, p, ext.end, 'an extension criticality');
      critical = booleanAt(buf, c, 'an extension criticality');
      p = c.end;
    }
    const v = expect(buf, p, ext.end, 0x04, 'an extension value');
    if (v.end !== ext.end) fail('malformed CSR: trailing data in a requested extension');
    for (const e of out.extensions) if (e.oid === id) fail(`the CSR requests the extension ${id} twice`);
    out.extensions.push({ oid: id, critical });
    if (id === OIDS.subjectAltName) sanAt(buf, v.start, v.end, out);
    else if (id === OIDS.basicConstraints) out.caRights = basicConstraintsAt(buf, v.start, v.end) || out.caRights;
    else if (id === OIDS.keyUsage) out.caRights = keyUsageGrantsCa(buf, v.start, v.end) || out.caRights;
    pos = ext.end;
  }
}

/** attributes [0] IMPLICIT SET OF Attribute. */
function attributesAt(buf: Uint8Array, attrs: Tlv, out: Requested): string | undefined {
  let challengePassword: string | undefined;
  const seen: string[] = [];
  let pos = attrs.start;
  while (pos < attrs.end) {
    const a = expect(buf, pos, attrs.end, 0x30, 'an attribute');
    const o = expect(buf, a.start, a.end, 0x06, 'an attribute type');
    const type = oidAt(buf, o, 'an attribute type');
    const values = expect(buf, o.end, a.end, 0x31, 'the attribute values');
    if (values.end !== a.end) fail('malformed CSR: trailing data in an attribute');
    if (values.start === values.end) fail(`malformed CSR: the attribute ${type} has no value`);
    if (seen.includes(type)) fail(`the CSR carries the attribute ${type} twice`);
    seen.push(type);
    if (type === OIDS.extensionRequest || type === OIDS.msExtensionRequest || type === OIDS.challengePassword) {
      const v = tlvAt(buf, values.start, values.end, 'an attribute value');
      if (v.end !== values.end) fail(`the attribute ${type} must have exactly one value`);
      if (type === OIDS.challengePassword) challengePassword = stringAt(buf, v, 'the challenge password');
      else extensionsAt(buf, v, out);
    } else {
      walk(buf, values.start, values.end, `the attribute ${type}`);
    }
    pos = a.end;
  }
  return challengePassword;
}

// ---------------------------------------------------------------------------
// Entry points

function looksLikeCertificate(buf: Uint8Array, first: Tlv): boolean {
  return first.tag === 0x30 && first.end - first.start > 2 && buf[first.start] === 0xa0;
}

/**
 * A strict structural parse of a DER PKCS#10 CertificationRequest. Builds no key and checks
 * no signature (see `verifyCsr`). Throws CsrError, and nothing else, on anything it refuses.
 * The Buffers returned are views into `der`, which is a private copy of the input.
 */
export function parseCsrDer(input: Uint8Array): ParsedCsr {
  return refusingWith(CsrError, 'the CSR cannot be parsed', () => parse(input));
}

function parse(input: Uint8Array): ParsedCsr {
  if (!(input instanceof Uint8Array)) fail('the CSR must be bytes');
  if (input.length === 0) fail('the CSR is empty');
  if (input.length > MAX_CSR_BODY_BYTES) fail(`the CSR is larger than ${MAX_CSR_BODY_BYTES} bytes`);
  const der = Buffer.from(input);
  const n = der.length;

  const outer = tlvAt(der, 0, n, 'the CertificationRequest');
  if (outer.tag !== 0x30) fail('not a CSR (a DER SEQUENCE expected)');
  if (outer.end !== n) fail('trailing bytes after the CSR');
  const info = expect(der, outer.start, outer.end, 0x30, 'the CertificationRequestInfo');
  if (looksLikeCertificate(der, info)) fail('this is a certificate, not a CSR');
  const algSeq = expect(der, info.end, outer.end, 0x30, 'the signature algorithm');
  const sig = expect(der, algSeq.end, outer.end, 0x03, 'the signature');
  if (sig.end !== outer.end) fail('malformed CSR: trailing data after the signature');
  if (sig.end - sig.start < 2) fail('the CSR signature is empty');
  if (der[sig.start] !== 0) fail('malformed CSR: the signature BIT STRING has unused bits');
  const alg = signatureAlgorithmAt(der, algSeq);

  // CertificationRequestInfo ::= SEQUENCE { version, subject, subjectPKInfo, attributes [0] }
  const version = expect(der, info.start, info.end, 0x02, 'the CSR version');
  if (version.end - version.start !== 1 || der[version.start] !== 0) fail('unsupported CSR version (only v1, 0, exists)');
  const subject = expect(der, version.end, info.end, 0x30, 'the subject');
  const commonName = subjectAt(der, subject);
  const spki = expect(der, subject.end, info.end, 0x30, 'the subject public key');
  checkSpki(der, spki);
  const attrs = expect(der, spki.end, info.end, 0xa0, 'the attributes');
  if (attrs.end !== info.end) fail('malformed CSR: trailing data in the CertificationRequestInfo');
  const requested: Requested = { extensions: [], sans: [], caRights: false };
  const challengePassword = attributesAt(der, attrs, requested);

  return {
    der,
    info: der.subarray(info.hdr, info.end),
    subjectDer: der.subarray(subject.hdr, subject.end),
    commonName,
    spki: der.subarray(spki.hdr, spki.end),
    requestedExtensions: requested.extensions,
    requestedSans: requested.sans,
    requestsCaRights: requested.caRights,
    challengePassword,
    signatureAlgorithm: alg.name,
    signature: der.subarray(sig.start + 1, sig.end),
    pss: alg.pss,
  };
}

const verifier = new SignatureVerifier();

/**
 * Proof of possession: the signature over CertificationRequestInfo verifies with the CSR's own
 * key, checked on a worker thread (see SignatureVerifier). false on any failure: a key that
 * cannot be built, a malformed signature, a key type that does not match the signature algorithm.
 */
export function verifyCsr(csr: ParsedCsr): Promise<boolean> {
  let key: VerifyJob['key'];
  try {
    key = verifyKeyOf(csr.spki);
  } catch {
    return Promise.resolve(false);
  }
  const job = { key, data: csr.info, signature: csr.signature };
  switch (csr.signatureAlgorithm) {
    case 'Ed25519':
      return verifier.verify({ ...job, hash: null, keyTypes: ['ed25519'] });
    case 'ecdsa-with-SHA256':
    case 'ecdsa-with-SHA384':
    case 'ecdsa-with-SHA512':
      return verifier.verify({ ...job, hash: HASH_OF[csr.signatureAlgorithm], options: { dsaEncoding: 'der' }, keyTypes: ['ec'] });
    case 'sha256WithRSAEncryption':
    case 'sha384WithRSAEncryption':
    case 'sha512WithRSAEncryption':
      return verifier.verify({
        ...job,
        hash: HASH_OF[csr.signatureAlgorithm],
        options: { padding: constants.RSA_PKCS1_PADDING },
        keyTypes: ['rsa'],
      });
    case 'rsassa-pss': {
      const pss = csr.pss;
      if (!pss) return Promise.resolve(false);
      return verifier.verify({
        ...job,
        hash: pss.hash,
        options: { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: pss.saltLength },
        keyTypes: ['rsa', 'rsa-pss'],
      });
    }
    default:
      return Promise.resolve(false);
  }
}

const PEM_LABELS = ['CERTIFICATE REQUEST', 'NEW CERTIFICATE REQUEST'] as const;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function base64Der(text: string, what: string): Buffer {
  const b64 = text.replace(/[ \t\r\n]+/g, '');
  if (b64.length === 0) fail(`${what} is empty`);
  if (!BASE64_RE.test(b64) || b64.length % 4 === 1 || (b64.includes('=') && b64.length % 4 !== 0)) fail(`${what} is not valid base64`);
  return Buffer.from(b64, 'base64');
}

/**
 * The DER of a CSR from a request body: PEM ("CERTIFICATE REQUEST" or "NEW CERTIFICATE
 * REQUEST", one block; text around it is ignored), base64 of the DER (whitespace allowed, as
 * EST's application/pkcs10 sends it), or raw DER (a Buffer starting with a SEQUENCE tag).
 * Throws CsrError on anything else, and on bodies over MAX_CSR_BODY_BYTES.
 */
export function csrFromBody(body: Buffer | string): Buffer {
  if (typeof body !== 'string' && !Buffer.isBuffer(body)) fail('the CSR body must be text or bytes');
  if (body.length === 0) fail('the CSR body is empty');
  if (body.length > MAX_CSR_BODY_BYTES) fail(`the CSR body is larger than ${MAX_CSR_BODY_BYTES} bytes`);
  if (typeof body !== 'string' && body[0] === 0x30) return Buffer.from(body);

  const text = typeof body === 'string' ? body : body.toString('latin1');
  let der: Buffer;
  const begin = text.indexOf('-----BEGIN ');
  if (begin >= 0) {
    const labelEnd = text.indexOf('-----', begin + 11);
    if (labelEnd < 0) fail('malformed PEM');
    const label = text.slice(begin + 11, labelEnd);
    if (!(PEM_LABELS as readonly string[]).includes(label)) fail(`expected a PEM CERTIFICATE REQUEST, got ${label.slice(0, 40)}`);
    const footer = `-----END ${label}-----`;
    const end = text.indexOf(footer, labelEnd + 5);
    if (end < 0) fail('malformed PEM: no END line');
    if (text.indexOf('-----BEGIN ', end + footer.length) >= 0) fail('the body holds more than one PEM block');
    der = base64Der(text.slice(labelEnd + 5, end), 'the PEM body');
  } else {
    der = base64Der(text, 'the CSR body');
  }
  if (der.length === 0) fail('the CSR is empty');
  if (der[0] !== 0x30) fail('not a CSR (a DER SEQUENCE expected)');
  return der;
}
