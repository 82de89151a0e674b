/**
 * A strict reader of OCSPResponse DER (RFC 6960 §4.2.1), for the responder's own answers shown
 * through the API (GET /v1/certificates/{serial}/ocsp): what a relying party would read from the
 * same bytes. The structures are those of ocsp-response.ts (the writer); this reads them back,
 * refusing anything else with OcspResponseError and nothing else. It checks no signature: openssl
 * and GnuTLS do that in the tests, and a user can with the DER the API returns.
 */
import { DerCursor, TAG, oid, refusingWith } from './der.js';
import type { CertIdHash } from './ocsp-request.js';
import type { OcspCertStatus, OcspErrorStatus } from './ocsp-response.js';

/** What the reader throws, and nothing else. */
export class OcspResponseError extends Error {}

export interface ReadSingleResponse {
  hashAlgorithm: CertIdHash;
  issuerNameHash: Buffer;
  issuerKeyHash: Buffer;
  /** Unsigned big-endian, no leading zero bytes. */
  serial: Buffer;
  status: OcspCertStatus;
  thisUpdate: Date;
  nextUpdate: Date | null;
}

export interface ReadBasicResponse {
  /** ResponderID: byKey (SHA-1 of the responder's public key bits) or byName (the DER Name). */
  responderId: { byKey: Buffer } | { byName: Buffer };
  producedAt: Date;
  responses: ReadSingleResponse[];
  /** The nonce extension's extnValue, when the response carries one. */
  nonce: Buffer | null;
  /** The signature algorithm's OID (dotted). */
  signatureAlgorithm: string;
  /** The certificates the response carries (DER): the delegated responder's. */
  certs: Buffer[];
}

export interface ReadOcspResponse {
  responseStatus: 'successful' | OcspErrorStatus;
  /** The BasicOCSPResponse; null for an error status, which carries none. */
  basic: ReadBasicResponse | null;
}

const STATUSES: Record<number, ReadOcspResponse['responseStatus']> = {
  0: 'successful',
  1: 'malformedRequest',
  2: 'internalError',
  3: 'tryLater',
  5: 'sigRequired',
  6: 'unauthorized',
};
const ENUMERATED = 0x0a;
const GENERALIZED_TIME = 0x18;
const CONTEXT = (n: number) => TAG.CONTEXT | TAG.CONSTRUCTED | n;
const BASIC_RESPONSE = Buffer.from(oid('1.3.6.1.5.5.7.48.1.1'));
const NONCE = Buffer.from(oid('1.3.6.1.5.5.7.48.1.2'));
const HASHES: [Buffer, CertIdHash][] = [
  [Buffer.from(oid('1.3.14.3.2.26')), 'sha1'],
  [Buffer.from(oid('2.16.840.1.101.3.4.2.1')), 'sha256'],
  [Buffer.from(oid('2.16.840.1.101.3.4.2.2')), 'sha384'],
  [Buffer.from(oid('2.16.840.1.101.3.4.2.3')), 'sha512'],
];

const fail = (msg: string): never => {
  throw new OcspResponseError(msg);
};

/** GeneralizedTime as RFC 5280 and RFC 5019 have it: YYYYMMDDHHMMSSZ. */
function generalizedTime(r: DerCursor, what: string): Date {
  const s = r.bytes(r.next(GENERALIZED_TIME, what)).toString('latin1');
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return fail(`${what} is not a GeneralizedTime YYYYMMDDHHMMSSZ`);
  const [y, mo, d, h, mi, se] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const t = new Date(Date.UTC(y, mo - 1, d, h, mi, se));
  if (t.getUTCFullYear() !== y || t.getUTCMonth() !== mo - 1 || t.getUTCDate() !== d || h > 23 || mi > 59 || se > 59)
    fail(`${what} is not a valid date`);
  return t;
}

function certStatus(r: DerCursor): OcspCertStatus {
  const tag = r.peekTag();
  if (tag === (TAG.CONTEXT | 0) || tag === (TAG.CONTEXT | 2)) {
    const h = r.next(tag, 'certStatus');
    if (h.end !== h.start) fail('certStatus good/unknown must be empty');
    return { kind: tag === (TAG.CONTEXT | 0) ? 'good' : 'unknown' };
  }
  const info = r.children(r.next(CONTEXT(1), 'certStatus'));
  const revokedAt = generalizedTime(info, 'revocationTime');
  let reasonCode: number | null = null;
  if (!info.done) {
    const reason = info.children(info.next(CONTEXT(0), 'revocationReason'));
    const code = reason.bytes(reason.next(ENUMERATED, 'CRLReason'));
    reason.finish('revocationReason');
    if (code.length !== 1 || code[0]! > 10) fail('CRLReason is out of range');
    reasonCode = code[0]!;
  }
  info.finish('RevokedInfo');
  return { kind: 'revoked', revokedAt, reasonCode };
}

function singleResponse(r: DerCursor): ReadSingleResponse {
  const id = r.children(r.next(TAG.SEQUENCE, 'CertID'));
  const alg = id.children(id.next(TAG.SEQUENCE, 'hashAlgorithm'));
  const algOid = alg.whole(alg.next(TAG.OID, 'hash algorithm OID'));
  if (!alg.done) alg.next(TAG.NULL, 'hash algorithm parameters');
  alg.finish('hashAlgorithm');
  const hashAlgorithm = HASHES.find(([o]) => o.equals(algOid))?.[1] ?? fail('unknown CertID hash algorithm');
  const issuerNameHash = id.bytes(id.next(TAG.OCTET_STRING, 'issuerNameHash'));
  const issuerKeyHash = id.bytes(id.next(TAG.OCTET_STRING, 'issuerKeyHash'));
  let serial = id.bytes(id.next(TAG.INTEGER, 'serialNumber'));
  id.finish('CertID');
  if (serial.length === 0 || serial[0]! & 0x80) fail('serialNumber is not a positive INTEGER');
  while (serial.length > 1 && serial[0] === 0) serial = serial.subarray(1);
  const status = certStatus(r);
  const thisUpdate = generalizedTime(r, 'thisUpdate');
  let nextUpdate: Date | null = null;
  if (r.peekTag() === CONTEXT(0)) {
    const n = r.children(r.next(CONTEXT(0), 'nextUpdate'));
    nextUpdate = generalizedTime(n, 'nextUpdate');
    n.finish('nextUpdate');
  }
  if (r.peekTag() === CONTEXT(1)) r.next(CONTEXT(1), 'singleExtensions');
  r.finish('SingleResponse');
  return { hashAlgorithm, issuerNameHash, issuerKeyHash, serial, status, thisUpdate, nextUpdate };
}

function nonceOf(r: DerCursor): Buffer | null {
  let nonce: Buffer | null = null;
  const list = r.children(r.next(TAG.SEQUENCE, 'Extensions'));
  while (!list.done) {
    const ext = list.children(list.next(TAG.SEQUENCE, 'Extension'));
    const id = ext.whole(ext.next(TAG.OID, 'extnID'));
    if (ext.peekTag() === TAG.BOOLEAN) ext.next(TAG.BOOLEAN, 'critical');
    const value = ext.bytes(ext.next(TAG.OCTET_STRING, 'extnValue'));
    ext.finish('Extension');
    if (id.equals(NONCE)) nonce = value;
  }
  return nonce;
}

function basicResponse(buf: Buffer): ReadBasicResponse {
  const top = new DerCursor(buf, 0, buf.length, fail, true);
  const basic = top.children(top.next(TAG.SEQUENCE, 'BasicOCSPResponse'));
  top.finish('the BasicOCSPResponse');
  const data = basic.children(basic.next(TAG.SEQUENCE, 'tbsResponseData'));
  if (data.peekTag() === CONTEXT(0)) {
    const v = data.children(data.next(CONTEXT(0), 'version'));
    const n = v.bytes(v.next(TAG.INTEGER, 'version'));
    v.finish('version');
    if (n.length !== 1 || n[0] !== 0) fail('only OCSP version 1 is supported');
  }
  let responderId: ReadBasicResponse['responderId'];
  if (data.peekTag() === CONTEXT(2)) {
    const k = data.children(data.next(CONTEXT(2), 'responderID'));
    responderId = { byKey: k.bytes(k.next(TAG.OCTET_STRING, 'KeyHash')) };
    k.finish('responderID');
  } else {
    const n = data.children(data.next(CONTEXT(1), 'responderID'));
    responderId = { byName: n.whole(n.next(TAG.SEQUENCE, 'Name')) };
    n.finish('responderID');
  }
  const producedAt = generalizedTime(data, 'producedAt');
  const list = data.children(data.next(TAG.SEQUENCE, 'responses'));
  const responses: ReadSingleResponse[] = [];
  while (!list.done) responses.push(singleResponse(list.children(list.next(TAG.SEQUENCE, 'SingleResponse'))));
  if (responses.length === 0) fail('the response answers no CertID');
  let nonce: Buffer | null = null;
  if (!data.done) {
    const exts = data.children(data.next(CONTEXT(1), 'responseExtensions'));
    nonce = nonceOf(exts);
    exts.finish('responseExtensions');
  }
  data.finish('tbsResponseData');
  const alg = basic.children(basic.next(TAG.SEQUENCE, 'signatureAlgorithm'));
  const algOid = alg.bytes(alg.next(TAG.OID, 'signature algorithm OID'));
  const signature = basic.bytes(basic.next(TAG.BIT_STRING, 'signature'));
  if (signature.length < 2 || signature[0] !== 0) fail('the signature is not a whole-byte BIT STRING');
  const certs: Buffer[] = [];
  if (!basic.done) {
    const wrap = basic.children(basic.next(CONTEXT(0), 'certs'));
    const seq = wrap.children(wrap.next(TAG.SEQUENCE, 'certs'));
    wrap.finish('certs');
    while (!seq.done) certs.push(seq.whole(seq.next(TAG.SEQUENCE, 'Certificate')));
  }
  basic.finish('BasicOCSPResponse');
  return { responderId, producedAt, responses, nonce, signatureAlgorithm: dotted(algOid), certs };
}

/** An OID's contents octets in dotted form. */
function dotted(bytes: Buffer): string {
  if (bytes.length === 0) return fail('an empty OID');
  const arcs: number[] = [];
  let v = 0;
  for (const b of bytes) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      arcs.push(v);
      v = 0;
    }
  }
  const first = arcs.shift()!;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs].join('.');
}

export function readOcspResponse(der: Uint8Array): ReadOcspResponse {
  return refusingWith(OcspResponseError, 'the OCSP response cannot be read', () => read(der));
}

function read(der: Uint8Array): ReadOcspResponse {
  if (!(der instanceof Uint8Array) || der.length === 0) fail('the response is empty');
  const buf = Buffer.from(der.buffer, der.byteOffset, der.length);
  const top = new DerCursor(buf, 0, buf.length, fail, true);
  const resp = top.children(top.next(TAG.SEQUENCE, 'OCSPResponse'));
  top.finish('the response');
  const code = resp.bytes(resp.next(ENUMERATED, 'responseStatus'));
  const responseStatus = (code.length === 1 ? STATUSES[code[0]!] : undefined) ?? fail('unknown responseStatus');
  if (resp.done) {
    if (responseStatus === 'successful') fail('a successful response without responseBytes');
    return { responseStatus, basic: null };
  }
  const wrap = resp.children(resp.next(CONTEXT(0), 'responseBytes'));
  resp.finish('OCSPResponse');
  const bytes = wrap.children(wrap.next(TAG.SEQUENCE, 'ResponseBytes'));
  wrap.finish('responseBytes');
  const type = bytes.whole(bytes.next(TAG.OID, 'responseType'));
  if (!type.equals(BASIC_RESPONSE)) fail('not a BasicOCSPResponse');
  const inner = bytes.bytes(bytes.next(TAG.OCTET_STRING, 'response'));
  bytes.finish('ResponseBytes');
  if (responseStatus !== 'successful') fail('an error status with responseBytes');
  return { responseStatus, basic: basicResponse(inner) };
}
