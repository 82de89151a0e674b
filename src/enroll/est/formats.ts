/**
 * EST (RFC 7030, with the RFC 8951 clarifications) wire formats. Pure functions: the HTTP
 * adapter sets the headers.
 *
 * Base64 bodies are RFC 2045 style: lines of at most 64 characters, each ended by CRLF
 * (including the last). Decoders must ignore the line breaks (RFC 8951 section 3.2).
 */
import { randomBytes } from 'node:crypto';
import { TAG, isSingleTlv, oid, sequence, sequenceOf, setOf } from '../../ca/x509/der.js';
import { certsOnlyPkcs7 } from '../../ca/x509/pkcs7.js';

/** Content-Type of certs-only responses (/cacerts, /simpleenroll, /simplereenroll). */
export const CERTS_ONLY_CONTENT_TYPE = 'application/pkcs7-mime; smime-type=certs-only';
/** Content-Type of the /csrattrs response. */
export const CSRATTRS_CONTENT_TYPE = 'application/csrattrs';

const CRLF = '\r\n';

/** Base64 in 64-character lines joined by CRLF, without a trailing CRLF. */
function base64Lines(der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  return (b64.match(/.{1,64}/g) ?? []).join(CRLF);
}

/** Base64 body: 64-character lines, CRLF after every line (the last one too). */
function base64Body(der: Uint8Array): string {
  return base64Lines(der) + CRLF;
}

/**
 * Body of /cacerts and /simpleenroll responses: base64 of a certs-only PKCS#7 (see
 * `certsOnlyPkcs7`: DER-sorted, so the input order is not preserved). The caller sends it
 * with `Content-Type: application/pkcs7-mime; smime-type=certs-only` and
 * `Content-Transfer-Encoding: base64`.
 */
export function estCertsOnly(certs: Uint8Array[]): string {
  return base64Body(certsOnlyPkcs7(certs));
}

/**
 * Body of /csrattrs (RFC 7030 section 4.5.2): base64 of DER
 * `CsrAttrs ::= SEQUENCE OF AttrOrOID`, the bare OIDs first (in the given order), then the
 * attributes (`SEQUENCE { type OID, values SET OF ANY }`, each value a complete DER TLV).
 * Example: `csrAttrs({ oids: ['1.2.840.10045.4.3.2', '1.2.840.113549.1.9.14'] })` asks for
 * ecdsa-with-SHA256 and an extensionRequest. Content-Type: `application/csrattrs`,
 * Content-Transfer-Encoding: base64.
 */
export function csrAttrs(attrs: { oids?: string[]; attributes?: { type: string; values: Uint8Array[] }[] }): string {
  const items: Uint8Array[] = (attrs.oids ?? []).map((o) => oid(o));
  for (const a of attrs.attributes ?? []) {
    if (a.values.length === 0) throw new RangeError(`attribute ${a.type} needs at least one value`);
    a.values.forEach((v, i) => {
      if (!isSingleTlv(v)) throw new TypeError(`attribute ${a.type} value #${i} is not a single DER TLV`);
    });
    items.push(sequence(oid(a.type), setOf(a.values)));
  }
  return base64Body(sequenceOf(items));
}

/**
 * Response of /serverkeygen (RFC 7030 section 4.4.2): a multipart/mixed body with
 * (1) `application/pkcs8`, the UNENCRYPTED PKCS#8 private key, base64, and
 * (2) `application/pkcs7-mime; smime-type=certs-only`, the certificate, base64.
 *
 * RFC 7030 allows the unencrypted key only because the EST channel is TLS: the caller must
 * send this only over an authenticated HTTPS connection, never log it, and not cache it.
 * The boundary is random; lines end with CRLF. Send `contentType` as the Content-Type header.
 */
export function serverKeygenMultipart(input: { privateKeyPkcs8: Uint8Array; certificate: Uint8Array }): {
  contentType: string;
  body: string;
} {
  const key = input.privateKeyPkcs8;
  if (!isSingleTlv(key, TAG.SEQUENCE)) throw new TypeError('privateKeyPkcs8 is not a single DER SEQUENCE');
  const pkcs7 = certsOnlyPkcs7([input.certificate]);
  // Base64 lines never contain '-', so a delimiter line ("--est-...") cannot occur inside a part.
  const boundary = `est-${randomBytes(16).toString('hex')}`;
  const part = (contentType: string, der: Uint8Array): string =>
    `--${boundary}${CRLF}Content-Type: ${contentType}${CRLF}Content-Transfer-Encoding: base64${CRLF}${CRLF}${base64Lines(der)}${CRLF}`;
  const body = part('application/pkcs8', key) + part(CERTS_ONLY_CONTENT_TYPE, pkcs7) + `--${boundary}--${CRLF}`;
  return { contentType: `multipart/mixed; boundary=${boundary}`, body };
}

const BASIC_RE = /^basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i;
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

/**
 * RFC 7617 Basic credentials from an Authorization header: `{ user, password }`, split at
 * the first ':' (so the password may contain ':'), decoded as UTF-8. Returns undefined for a
 * missing header, another scheme, malformed base64, invalid UTF-8, no ':' or control
 * characters. An empty user or password is returned as is: the caller decides.
 */
export function parseBasicAuth(header: string | undefined): { user: string; password: string } | undefined {
  if (header === undefined) return undefined;
  const m = BASIC_RE.exec(header.trim());
  const token = m?.[1];
  if (token === undefined || token.length % 4 !== 0) return undefined;
  let decoded: string;
  try {
    decoded = utf8Strict.decode(Buffer.from(token, 'base64'));
  } catch {
    return undefined;
  }
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(decoded)) return undefined;
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
