/**
 * Degenerate ("certs-only") CMS SignedData, RFC 5652 section 5 / RFC 7030 section 4.1.3:
 * a SignedData with no signers and no content, used only to carry certificates
 * (EST /cacerts and /simpleenroll responses, `.p7b` / `.p7c` files).
 */
import { TAG, explicit, isSingleTlv, oid, retagImplicit, sequence, setOf, smallInt } from './der.js';

const ID_SIGNED_DATA = '1.2.840.113549.1.7.2';
const ID_DATA = '1.2.840.113549.1.7.1';

const EMPTY_SET = Uint8Array.of(TAG.SET, 0);

/** Throws unless `der` is exactly one DER SEQUENCE (a cheap "this is a certificate" guard). */
export function assertSingleSequence(der: Uint8Array, what: string): void {
  if (!isSingleTlv(der, TAG.SEQUENCE)) throw new TypeError(`${what} is not a single DER SEQUENCE`);
}

/**
 * ContentInfo { id-signedData, [0] SignedData { version 1, digestAlgorithms {},
 * encapContentInfo { id-data } (no eContent), certificates [0] IMPLICIT SET OF Certificate,
 * signerInfos {} } }.
 *
 * The certificates are DER-sorted (SET OF), so the input order is NOT kept: readers must
 * build the chain from issuer/subject, as RFC 5652 expects. At least one certificate is
 * required; each must be a complete DER certificate (only its outer SEQUENCE is checked).
 */
export function certsOnlyPkcs7(certs: Uint8Array[]): Buffer {
  if (certs.length === 0) throw new RangeError('certsOnlyPkcs7 needs at least one certificate');
  certs.forEach((c, i) => assertSingleSequence(c, `certificate #${i}`));
  const signedData = sequence(
    smallInt(1), // CMSVersion 1: no attribute certificates, eContentType id-data, no v3+ signers
    EMPTY_SET, // digestAlgorithms
    sequence(oid(ID_DATA)), // encapContentInfo without eContent
    retagImplicit(0, setOf(certs)), // certificates [0] IMPLICIT CertificateSet
    EMPTY_SET, // signerInfos
  );
  const contentInfo = sequence(oid(ID_SIGNED_DATA), explicit(0, signedData));
  return Buffer.from(contentInfo.buffer, contentInfo.byteOffset, contentInfo.byteLength);
}
