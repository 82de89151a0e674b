/**
 * The DER encoder for OCSP responses (RFC 6960 §4.2, with RFC 5019's profile: GeneralizedTime
 * without fractions, one SingleResponse per pre-signed response, the responder named by key).
 *
 *   OCSPResponse      ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT ResponseBytes OPTIONAL }
 *   ResponseBytes     ::= SEQUENCE { responseType OBJECT IDENTIFIER, response OCTET STRING }
 *   BasicOCSPResponse ::= SEQUENCE { tbsResponseData ResponseData, signatureAlgorithm AlgorithmIdentifier,
 *                                    signature BIT STRING, certs [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL }
 *   ResponseData      ::= SEQUENCE { version [0] EXPLICIT DEFAULT v1, responderID ResponderID, producedAt GeneralizedTime,
 *                                    responses SEQUENCE OF SingleResponse, responseExtensions [1] EXPLICIT Extensions OPTIONAL }
 *   SingleResponse    ::= SEQUENCE { certID CertID, certStatus CertStatus, thisUpdate GeneralizedTime,
 *                                    nextUpdate [0] EXPLICIT GeneralizedTime OPTIONAL, singleExtensions [1] EXPLICIT OPTIONAL }
 *   CertStatus        ::= CHOICE { good [0] IMPLICIT NULL, revoked [1] IMPLICIT RevokedInfo, unknown [2] IMPLICIT NULL }
 *   RevokedInfo       ::= SEQUENCE { revocationTime GeneralizedTime, revocationReason [0] EXPLICIT CRLReason OPTIONAL }
 */
import { createHash } from 'node:crypto';
import { TAG, generalizedTime, integer, octetString, oid, sequence, sequenceOf, tlv, tlvSize, writeHeader, type Bytes } from './der.js';
import { algorithmIdentifier, type SignatureAlgorithm } from './encode.js';
import { extension, subjectPublicKeyBits } from './extensions.js';
import type { CertIdHash, OcspCertId } from './ocsp-request.js';

/** OCSPResponseStatus values other than successful: answered unsigned. */
export type OcspErrorStatus = 'malformedRequest' | 'internalError' | 'tryLater' | 'sigRequired' | 'unauthorized';

const ERROR_CODES: Record<OcspErrorStatus, number> = {
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  sigRequired: 5,
  unauthorized: 6,
};
const ENUMERATED = 0x0a;
const BASIC_RESPONSE = oid('1.3.6.1.5.5.7.48.1.1');
const NONCE_OID = '1.3.6.1.5.5.7.48.1.2';
const SUCCESSFUL = tlv(ENUMERATED, Uint8Array.of(0));
const HASH_ALGORITHMS: Record<CertIdHash, Bytes> = {
  sha1: sequence(oid('1.3.14.3.2.26'), Uint8Array.of(TAG.NULL, 0)),
  sha256: sequence(oid('2.16.840.1.101.3.4.2.1'), Uint8Array.of(TAG.NULL, 0)),
  sha384: sequence(oid('2.16.840.1.101.3.4.2.2'), Uint8Array.of(TAG.NULL, 0)),
  sha512: sequence(oid('2.16.840.1.101.3.4.2.3'), Uint8Array.of(TAG.NULL, 0)),
};
const ERRORS = new Map<OcspErrorStatus, Buffer>(
  (Object.keys(ERROR_CODES) as OcspErrorStatus[]).map((s) => [s, Buffer.from(sequence(tlv(ENUMERATED, Uint8Array.of(ERROR_CODES[s]))))]),
);

export type OcspCertStatus = { kind: 'good' } | { kind: 'unknown' } | { kind: 'revoked'; revokedAt: Date; reasonCode: number | null };

export interface SingleResponseInput {
  certId: OcspCertId;
  status: OcspCertStatus;
  thisUpdate: Date;
  nextUpdate: Date;
}

export interface ResponseDataInput {
  /** SHA-1 of the responder's subjectPublicKey bits (ResponderID byKey). */
  responderKeyHash: Uint8Array;
  producedAt: Date;
  /** From {@link encodeSingleResponse}. */
  responses: readonly Uint8Array[];
  /** The request's nonce extnValue, echoed as sent (RFC 8954). */
  nonce?: Uint8Array | null;
}

/** An unsigned OCSPResponse carrying only an error status. */
export function encodeOcspError(status: OcspErrorStatus): Buffer {
  return ERRORS.get(status)!;
}

export function encodeCertId(id: OcspCertId): Uint8Array {
  return sequence(HASH_ALGORITHMS[id.hashAlgorithm], octetString(id.issuerNameHash), octetString(id.issuerKeyHash), integer(id.serial));
}

const GOOD = Uint8Array.of(TAG.CONTEXT | 0, 0);
const UNKNOWN = Uint8Array.of(TAG.CONTEXT | 2, 0);

function certStatus(s: OcspCertStatus): Uint8Array {
  switch (s.kind) {
    case 'good':
      return GOOD;
    case 'unknown':
      return UNKNOWN;
    case 'revoked': {
      const reason = s.reasonCode === null ? [] : [tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 0, tlv(ENUMERATED, Uint8Array.of(s.reasonCode)))];
      return tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 1, generalizedTime(s.revokedAt), ...reason);
    }
  }
}

export function encodeSingleResponse(r: SingleResponseInput): Uint8Array {
  if (r.nextUpdate.getTime() <= r.thisUpdate.getTime()) throw new RangeError('nextUpdate must be after thisUpdate');
  return sequence(
    encodeCertId(r.certId),
    certStatus(r.status),
    generalizedTime(r.thisUpdate),
    tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 0, generalizedTime(r.nextUpdate)),
  );
}

/** ResponseData: the bytes the responder signs. */
export function encodeResponseData(input: ResponseDataInput): Uint8Array {
  if (input.responses.length === 0) throw new RangeError('a response answers at least one CertID');
  const parts = [
    tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 2, octetString(input.responderKeyHash)),
    generalizedTime(input.producedAt),
    sequenceOf(input.responses),
  ];
  if (input.nonce) parts.push(tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 1, sequence(extension(NONCE_OID, false, input.nonce))));
  return sequenceOf(parts);
}

/** BasicOCSPResponse's `certs [0] EXPLICIT SEQUENCE OF Certificate`: built once per responder certificate. */
export function encodeResponseCerts(certs: readonly Uint8Array[]): Uint8Array {
  return tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 0, sequenceOf(certs));
}

/**
 * A successful OCSPResponse around a signed BasicOCSPResponse; `certs` from
 * {@link encodeResponseCerts} (the responder's certificate). Sized first and written in one
 * buffer: on the nonce path this runs once per request.
 */
export function encodeOcspResponse(
  responseData: Uint8Array,
  alg: SignatureAlgorithm,
  signature: Uint8Array,
  certs: Uint8Array | null,
): Buffer {
  const algId = algorithmIdentifier(alg);
  const sigContent = signature.length + 1;
  const basicContent = responseData.length + algId.length + tlvSize(sigContent) + (certs?.length ?? 0);
  const basic = tlvSize(basicContent);
  const bytesContent = BASIC_RESPONSE.length + tlvSize(basic);
  const explicit = tlvSize(bytesContent);
  const content = SUCCESSFUL.length + tlvSize(explicit);
  const out = Buffer.allocUnsafe(tlvSize(content));
  let pos = writeHeader(out, 0, TAG.SEQUENCE, content);
  out.set(SUCCESSFUL, pos);
  pos = writeHeader(out, pos + SUCCESSFUL.length, TAG.CONTEXT | TAG.CONSTRUCTED | 0, explicit);
  pos = writeHeader(out, pos, TAG.SEQUENCE, bytesContent);
  out.set(BASIC_RESPONSE, pos);
  pos = writeHeader(out, pos + BASIC_RESPONSE.length, TAG.OCTET_STRING, basic);
  pos = writeHeader(out, pos, TAG.SEQUENCE, basicContent);
  out.set(responseData, pos);
  pos += responseData.length;
  out.set(algId, pos);
  pos = writeHeader(out, pos + algId.length, TAG.BIT_STRING, sigContent);
  out[pos++] = 0;
  out.set(signature, pos);
  pos += signature.length;
  if (certs) {
    out.set(certs, pos);
    pos += certs.length;
  }
  if (pos !== out.length) throw new Error(`OCSP response encoder wrote ${pos} of ${out.length} bytes`);
  return out;
}

/** ResponderID byKey and CertID issuerKeyHash both hash the subjectPublicKey BIT STRING's value. */
export function publicKeyHash(spki: Uint8Array, hash: CertIdHash): Buffer {
  return createHash(hash).update(subjectPublicKeyBits(spki)).digest();
}

/** CertID issuerNameHash: the hash of the issuer's DER subject Name. */
export function nameHash(subjectDer: Uint8Array, hash: CertIdHash): Buffer {
  return createHash(hash).update(subjectDer).digest();
}
