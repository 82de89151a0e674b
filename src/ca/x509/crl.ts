/**
 * The DER encoder for CRLs (RFC 5280 §5). Entries are encoded in runs (encodeCrlEntries), each
 * into one buffer sized first, and the TBSCertList is assembled from those runs in one more
 * allocation: linear in the number of entries (the library's generator is quadratic), and a
 * publisher can encode a million entries page by page without holding a million row objects.
 */
import {
  TAG,
  alloc,
  generalizedTime,
  integer,
  integerSize,
  sequence,
  sequenceOf,
  smallInt,
  tlv,
  tlvSize,
  time,
  timeSize,
  writeHeader,
  writeInteger,
  writeTime,
  type Bytes,
} from './der.js';
import { algorithmIdentifier, type SignatureAlgorithm } from './encode.js';
import { distributionPoints, ext, extension } from './extensions.js';
import { encodeGeneralName } from './names.js';

export interface CrlEntry {
  /** Unsigned big-endian serial. */
  serial: Uint8Array;
  revokedAt: Date;
  /** RFC 5280 §5.3.1 code; 0 (unspecified) is left out, as the RFC asks. */
  reasonCode: number;
  invalidityDate?: Date | null | undefined;
}

export interface TbsCertListInput {
  signatureAlgorithm: SignatureAlgorithm;
  /** The issuer's subject Name, DER. */
  issuer: Uint8Array;
  thisUpdate: Date;
  nextUpdate: Date;
  /** revokedCertificates' contents: chunks from {@link encodeCrlEntries}, in order (none: an empty CRL). */
  revoked: readonly Uint8Array[];
  /** The issuer's subject key identifier. */
  authorityKeyId: Uint8Array;
  crlNumber: bigint;
  /** The URL the certificates' CRL distribution point names: the Issuing Distribution Point must match it. */
  distributionPoint: string;
  /** What the CA issues: end-entity certificates only (onlyContainsUserCerts) or CA certificates only (onlyContainsCACerts). */
  scope: 'user' | 'ca';
  /** A delta CRL (RFC 5280 §5.2.4): the CRL number of the complete CRL it updates (critical Delta CRL Indicator). */
  baseCrlNumber?: bigint | undefined;
  /** A complete CRL: where its delta CRLs are published (Freshest CRL, §5.2.6; never in a delta). */
  freshestCrl?: string | undefined;
}

const OID_CRL_NUMBER = '2.5.29.20';
const OID_REASON_CODE = '2.5.29.21';
const OID_INVALIDITY_DATE = '2.5.29.24';
const OID_ISSUING_DISTRIBUTION_POINT = '2.5.29.28';
const OID_DELTA_CRL_INDICATOR = '2.5.29.27';
const OID_FRESHEST_CRL = '2.5.29.46';
/** CRLReason removeFromCRL: only in delta CRLs, for a certificate released from hold. */
export const REMOVE_FROM_CRL = 8;
const V2 = smallInt(1);
const ENUMERATED = 0x0a;
const REASON_EXTENSIONS = new Map<number, Bytes>();

function reasonExtension(code: number): Bytes {
  let e = REASON_EXTENSIONS.get(code);
  if (!e) {
    e = extension(OID_REASON_CODE, false, tlv(ENUMERATED, Uint8Array.of(code)));
    REASON_EXTENSIONS.set(code, e);
  }
  return e;
}

function entryExtensions(e: CrlEntry): Bytes | null {
  const parts: Bytes[] = [];
  if (e.reasonCode !== 0) parts.push(reasonExtension(e.reasonCode));
  if (e.invalidityDate) parts.push(extension(OID_INVALIDITY_DATE, false, generalizedTime(e.invalidityDate)));
  return parts.length ? sequenceOf(parts) : null;
}

/** CRLNumber is a non-negative INTEGER of up to 20 octets. */
function crlNumberBytes(n: bigint): Uint8Array {
  if (n < 0n) throw new RangeError('a CRL number is not negative');
  const hex = n.toString(16);
  const bytes = Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  if (bytes.length > 20) throw new RangeError('a CRL number has at most 20 octets');
  return bytes;
}

/**
 * IssuingDistributionPoint (critical). An issuing CA's CRL names its distribution point (EMQX
 * matches it against the certificate's) and onlyContainsUserCerts [1]. A root's CRL covers CA
 * certificates (onlyContainsCACerts [2]) and names no distribution point: a root certificate has
 * none, and OpenSSL's -crl_check_all looks for a CRL covering the root itself, which a CRL with a
 * distribution point name never does for a certificate without one ("different CRL scope").
 */
function issuingDistributionPoint(url: string, scope: 'user' | 'ca'): Bytes {
  const parts: Bytes[] =
    scope === 'user'
      ? [
          tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 0, tlv(TAG.CONTEXT | TAG.CONSTRUCTED | 0, encodeGeneralName({ type: 'uri', value: url }))),
          tlv(TAG.CONTEXT | 1, Uint8Array.of(0xff)),
        ]
      : [tlv(TAG.CONTEXT | 2, Uint8Array.of(0xff))];
  return extension(OID_ISSUING_DISTRIBUTION_POINT, true, sequenceOf(parts));
}

/**
 * A run of revokedCertificates entries, concatenated: sizes first, then one buffer written in
 * place. A large CRL is encoded page by page as its rows are read, so only the encoded bytes
 * are ever held for the whole list.
 */
export function encodeCrlEntries(entries: readonly CrlEntry[]): Uint8Array {
  const n = entries.length;
  const extsOf: (Bytes | null)[] = new Array(n);
  const bodySizes = new Uint32Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    const x = entryExtensions(e);
    extsOf[i] = x;
    const body = integerSize(e.serial) + timeSize(e.revokedAt) + (x ? x.length : 0);
    bodySizes[i] = body;
    total += tlvSize(body);
  }
  const out = alloc(total);
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    pos = writeHeader(out, pos, TAG.SEQUENCE, bodySizes[i]!);
    pos = writeInteger(out, pos, e.serial);
    pos = writeTime(out, pos, e.revokedAt);
    const x = extsOf[i];
    if (x) {
      out.set(x, pos);
      pos += x.length;
    }
  }
  return out;
}

export function encodeTbsCertList(input: TbsCertListInput): Uint8Array {
  if (input.nextUpdate.getTime() <= input.thisUpdate.getTime()) throw new RangeError('nextUpdate must be after thisUpdate');
  const delta = input.baseCrlNumber !== undefined;
  if (delta && input.freshestCrl) throw new RangeError('a delta CRL carries no Freshest CRL extension');
  if (delta && input.baseCrlNumber! >= input.crlNumber) throw new RangeError("a delta CRL's base has a lower CRL number");
  const head = [V2, algorithmIdentifier(input.signatureAlgorithm), input.issuer, time(input.thisUpdate), time(input.nextUpdate)];
  const extensions = tlv(
    TAG.CONTEXT | TAG.CONSTRUCTED | 0,
    sequence(
      ext.authorityKeyIdentifier(input.authorityKeyId),
      extension(OID_CRL_NUMBER, false, integer(crlNumberBytes(input.crlNumber))),
      ...(delta ? [extension(OID_DELTA_CRL_INDICATOR, true, integer(crlNumberBytes(input.baseCrlNumber!)))] : []),
      // A delta's IDP is the complete CRL's, byte for byte: OpenSSL combines the two only then.
      issuingDistributionPoint(input.distributionPoint, input.scope),
      ...(input.freshestCrl ? [extension(OID_FRESHEST_CRL, false, distributionPoints([input.freshestCrl]))] : []),
    ),
  );

  let listContent = 0;
  for (const chunk of input.revoked) listContent += chunk.length;
  const listSize = listContent ? tlvSize(listContent) : 0;
  let content = listSize + extensions.length;
  for (const h of head) content += h.length;
  const out = alloc(tlvSize(content));
  let pos = writeHeader(out, 0, TAG.SEQUENCE, content);
  for (const h of head) {
    out.set(h, pos);
    pos += h.length;
  }
  if (listContent) {
    pos = writeHeader(out, pos, TAG.SEQUENCE, listContent);
    for (const chunk of input.revoked) {
      out.set(chunk, pos);
      pos += chunk.length;
    }
  }
  out.set(extensions, pos);
  pos += extensions.length;
  if (pos !== out.length) throw new Error(`CRL encoder wrote ${pos} of ${out.length} bytes`);
  return out;
}
