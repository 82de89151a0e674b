/**
 * OCSPRequest (RFC 6960 §4.1.1) from outside bytes: a strict reader that accepts what real
 * clients send (OpenSSL, GnuTLS, browsers' RFC 5019 GETs) and refuses anything else, non-minimal
 * DER lengths included (der.ts `readTlv`), with OcspRequestError, which the responder answers
 * with malformedRequest. Never throws anything else.
 *
 *   OCSPRequest ::= SEQUENCE { tbsRequest, optionalSignature [0] EXPLICIT Signature OPTIONAL }
 *   TBSRequest  ::= SEQUENCE { version [0] EXPLICIT INTEGER DEFAULT v1, requestorName [1] EXPLICIT GeneralName OPTIONAL,
 *                              requestList SEQUENCE OF Request, requestExtensions [2] EXPLICIT Extensions OPTIONAL }
 *   Request     ::= SEQUENCE { reqCert CertID, singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL }
 *   CertID      ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, issuerNameHash OCTET STRING,
 *                              issuerKeyHash OCTET STRING, serialNumber CertificateSerialNumber }
 */
import { DerCursor, TAG, octetString, oid, refusingWith, sequence, sequenceOf, tlv } from './der.js';
import { extension } from './extensions.js';

export type CertIdHash = 'sha1' | 'sha256' | 'sha384' | 'sha512';

export interface OcspCertId {
  hashAlgorithm: CertIdHash;
  issuerNameHash: Buffer;
  issuerKeyHash: Buffer;
  /** Unsigned big-endian, no leading zero bytes. */
  serial: Buffer;
}

export interface ParsedOcspRequest {
  certIds: OcspCertId[];
  /** The nonce extension's extnValue as sent (RFC 8954), to echo; null without one. */
  nonce: Buffer | null;
  /** The request carried a signature (not checked: this responder serves anyone). */
  signed: boolean;
}

export class OcspRequestError extends Error {}

/** More CertIDs than this in one request are refused: a responder signs one response for all of them. */
export const MAX_CERT_IDS = 64;
const MAX_REQUEST_BYTES = 16 * 1024;
const MAX_NONCE_BYTES = 128;

const HASHES: [Buffer, CertIdHash, number][] = [
  [Buffer.from(oid('1.3.14.3.2.26')), 'sha1', 20],
  [Buffer.from(oid('2.16.840.1.101.3.4.2.1')), 'sha256', 32],
  [Buffer.from(oid('2.16.840.1.101.3.4.2.2')), 'sha384', 48],
  [Buffer.from(oid('2.16.840.1.101.3.4.2.3')), 'sha512', 64],
];
const NONCE_EXTENSION = '1.3.6.1.5.5.7.48.1.2';
const NONCE_OID = Buffer.from(oid(NONCE_EXTENSION));
const CONTEXT = (n: number) => TAG.CONTEXT | TAG.CONSTRUCTED | n;

const fail = (msg: string): never => {
  throw new OcspRequestError(msg);
};

function certId(r: DerCursor): OcspCertId {
  const alg = r.children(r.next(TAG.SEQUENCE, 'hashAlgorithm'));
  const oidBytes = alg.whole(alg.next(TAG.OID, 'hash algorithm OID'));
  if (!alg.done) {
    alg.next(TAG.NULL, 'hash algorithm parameters');
    alg.finish('hashAlgorithm');
  }
  const known = HASHES.find(([o]) => o.equals(oidBytes));
  if (!known) fail('unsupported CertID hash algorithm');
  const [, hashAlgorithm, size] = known!;
  const issuerNameHash = r.bytes(r.next(TAG.OCTET_STRING, 'issuerNameHash'));
  const issuerKeyHash = r.bytes(r.next(TAG.OCTET_STRING, 'issuerKeyHash'));
  if (issuerNameHash.length !== size || issuerKeyHash.length !== size) fail(`CertID hashes must be ${size} bytes for ${hashAlgorithm}`);
  const serialBytes = r.bytes(r.next(TAG.INTEGER, 'serialNumber'));
  if (serialBytes.length === 0 || serialBytes.length > 21) fail('serialNumber has a bad length');
  if (serialBytes[0]! & 0x80) fail('serialNumber is negative');
  let i = 0;
  while (i < serialBytes.length - 1 && serialBytes[i] === 0) i++;
  r.finish('CertID');
  return {
    hashAlgorithm,
    issuerNameHash: Buffer.from(issuerNameHash),
    issuerKeyHash: Buffer.from(issuerKeyHash),
    serial: Buffer.from(serialBytes.subarray(i)),
  };
}

/** Extensions: returns the nonce's extnValue; refuses unknown critical extensions. */
function extensions(r: DerCursor, allowNonce: boolean): Buffer | null {
  let nonce: Buffer | null = null;
  const list = r.children(r.next(TAG.SEQUENCE, 'Extensions'));
  while (!list.done) {
    const ext = list.children(list.next(TAG.SEQUENCE, 'Extension'));
    const id = ext.whole(ext.next(TAG.OID, 'extnID'));
    let critical = false;
    if (ext.peekTag() === TAG.BOOLEAN) critical = ext.bytes(ext.next(TAG.BOOLEAN, 'critical'))[0] !== 0;
    const value = ext.bytes(ext.next(TAG.OCTET_STRING, 'extnValue'));
    ext.finish('Extension');
    if (allowNonce && id.equals(NONCE_OID)) {
      if (nonce) fail('more than one nonce');
      if (value.length === 0 || value.length > MAX_NONCE_BYTES) fail('the nonce has a bad length');
      nonce = Buffer.from(value);
    } else if (critical) {
      fail('an unsupported critical extension');
    }
  }
  return nonce;
}

export function parseOcspRequest(input: Uint8Array): ParsedOcspRequest {
  return refusingWith(OcspRequestError, 'the request cannot be parsed', () => parse(input));
}

function parse(input: Uint8Array): ParsedOcspRequest {
  if (!(input instanceof Uint8Array) || input.length === 0) fail('the request is empty');
  if (input.length > MAX_REQUEST_BYTES) fail(`the request is larger than ${MAX_REQUEST_BYTES} bytes`);
  const buf = Buffer.from(input.buffer, input.byteOffset, input.length);
  const top = new DerCursor(buf, 0, buf.length, fail);
  const req = top.children(top.next(TAG.SEQUENCE, 'OCSPRequest'));
  top.finish('the request');
  const tbs = req.children(req.next(TAG.SEQUENCE, 'TBSRequest'));
  let signed = false;
  if (!req.done) {
    req.next(CONTEXT(0), 'optionalSignature');
    signed = true;
  }
  req.finish('OCSPRequest');

  if (tbs.peekTag() === CONTEXT(0)) {
    const v = tbs.children(tbs.next(CONTEXT(0), 'version'));
    const n = v.bytes(v.next(TAG.INTEGER, 'version'));
    v.finish('version');
    if (n.length !== 1 || n[0] !== 0) fail('only OCSP version 1 is supported');
  }
  if (tbs.peekTag() === CONTEXT(1)) tbs.next(CONTEXT(1), 'requestorName');
  const list = tbs.children(tbs.next(TAG.SEQUENCE, 'requestList'));
  const certIds: OcspCertId[] = [];
  while (!list.done) {
    if (certIds.length === MAX_CERT_IDS) fail(`more than ${MAX_CERT_IDS} CertIDs in one request`);
    const one = list.children(list.next(TAG.SEQUENCE, 'Request'));
    certIds.push(certId(one.children(one.next(TAG.SEQUENCE, 'CertID'))));
    if (!one.done) {
      const single = one.children(one.next(CONTEXT(0), 'singleRequestExtensions'));
      extensions(single, false);
      single.finish('singleRequestExtensions');
    }
    one.finish('Request');
  }
  if (certIds.length === 0) fail('the request names no certificate');
  let nonce: Buffer | null = null;
  if (!tbs.done) {
    const exts = tbs.children(tbs.next(CONTEXT(2), 'requestExtensions'));
    nonce = extensions(exts, true);
    exts.finish('requestExtensions');
  }
  tbs.finish('TBSRequest');
  return { certIds, nonce, signed };
}

/** An OCSPRequest for these CertIDs, with a nonce extension when given (what a client sends; the benchmarks build their load with it). */
export function encodeOcspRequest(certIds: readonly Uint8Array[], nonce?: Uint8Array): Buffer {
  const requests = sequenceOf(certIds.map((id) => sequence(id)));
  const extensions = nonce ? [tlv(CONTEXT(2), sequence(extension(NONCE_EXTENSION, false, octetString(nonce))))] : [];
  return Buffer.from(sequence(sequence(requests, ...extensions)));
}
