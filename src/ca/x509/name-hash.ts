// OpenSSL's subject/issuer name hash (X509_NAME_hash, `openssl x509 -hash`, `openssl crl -hash`),
// the name of the files in a hashed directory (`openssl rehash`: <hash>.0 for certificates, <hash>.r0
// for CRLs) that OpenSSL's CApath and Erlang's ssl_crl_hash_dir read.
import { createHash } from 'node:crypto';
import { TAG, readTlv, setOf, tlv, type Bytes } from './der.js';

const UNIVERSAL = {
  UTF8String: 0x0c,
  PrintableString: 0x13,
  T61String: 0x14,
  IA5String: 0x16,
  VisibleString: 0x1a,
  UniversalString: 0x1c,
  BMPString: 0x1e,
} as const;

/** The string types OpenSSL canonicalises (ASN1_MASK_CANON), as UTF-8; every other value is kept as it is. */
function asUtf8(tag: number, content: Buffer): Buffer | undefined {
  switch (tag) {
    case UNIVERSAL.UTF8String:
      return content;
    case UNIVERSAL.PrintableString:
    case UNIVERSAL.T61String:
    case UNIVERSAL.IA5String:
    case UNIVERSAL.VisibleString:
      // One byte per character (OpenSSL reads T61String as Latin-1).
      return Buffer.from(content.toString('latin1'), 'utf8');
    case UNIVERSAL.BMPString: {
      let s = '';
      for (let i = 0; i + 1 < content.length; i += 2) s += String.fromCharCode(content.readUInt16BE(i));
      return Buffer.from(s, 'utf8');
    }
    case UNIVERSAL.UniversalString: {
      let s = '';
      for (let i = 0; i + 3 < content.length; i += 4) s += String.fromCodePoint(content.readUInt32BE(i));
      return Buffer.from(s, 'utf8');
    }
    default:
      return undefined;
  }
}

// ossl_isspace: space, \t, \n, \v, \f, \r (ASCII only: bytes with the high bit set are never space).
const isSpace = (b: number) => b === 0x20 || (b >= 0x09 && b <= 0x0d);

/**
 * asn1_string_canon: leading and trailing white space dropped, each run of inner white space one
 * space, ASCII letters lower-cased, every other byte (UTF-8 beyond ASCII included) kept.
 */
function canonText(utf8: Buffer): Buffer {
  let from = 0;
  let to = utf8.length;
  while (from < to && isSpace(utf8[from]!)) from++;
  while (to > from && isSpace(utf8[to - 1]!)) to--;
  const out: number[] = [];
  for (let i = from; i < to;) {
    const b = utf8[i]!;
    if (b & 0x80) {
      out.push(b);
      i++;
    } else if (isSpace(b)) {
      out.push(0x20);
      while (i < to && isSpace(utf8[i]!)) i++;
    } else {
      out.push(b >= 0x41 && b <= 0x5a ? b + 0x20 : b);
      i++;
    }
  }
  return Buffer.from(out);
}

/**
 * OpenSSL's canonical encoding of a Name (x509_name_canon): each RDN a SET OF its attributes with
 * their string values canonicalised and re-tagged UTF8String, the SETs concatenated without the
 * outer SEQUENCE. An empty name encodes as nothing.
 */
export function canonicalNameEncoding(nameDer: Uint8Array): Buffer {
  const buf = Buffer.from(nameDer.buffer, nameDer.byteOffset, nameDer.byteLength);
  const outer = readTlv(buf, 0);
  if (outer.tag !== TAG.SEQUENCE || outer.end !== buf.length) throw new RangeError('a Name is one SEQUENCE');
  const rdns: Bytes[] = [];
  for (let pos = outer.start; pos < outer.end;) {
    const set = readTlv(buf, pos, outer.end);
    if (set.tag !== TAG.SET) throw new RangeError('an RDN is a SET');
    const entries: Bytes[] = [];
    for (let p = set.start; p < set.end;) {
      const atv = readTlv(buf, p, set.end);
      if (atv.tag !== TAG.SEQUENCE) throw new RangeError('an attribute is a SEQUENCE');
      const type = readTlv(buf, atv.start, atv.end);
      const value = readTlv(buf, type.end, atv.end);
      const typeDer = buf.subarray(atv.start, type.end);
      const utf8 = asUtf8(value.tag, buf.subarray(value.start, value.end));
      const valueDer = utf8 ? tlv(UNIVERSAL.UTF8String, canonText(utf8)) : buf.subarray(type.end, value.end);
      entries.push(tlv(TAG.SEQUENCE, typeDer, valueDer));
      p = atv.end;
    }
    rdns.push(setOf(entries)); // DER order within a multi-valued RDN
    pos = set.end;
  }
  return Buffer.concat(rdns);
}

/**
 * X509_NAME_hash (OpenSSL 1.0 and later): the first four bytes of the SHA-1 of the canonical
 * encoding, read little-endian, as 8 lowercase hex digits.
 */
export function opensslNameHash(nameDer: Uint8Array): string {
  const md = createHash('sha1').update(canonicalNameEncoding(nameDer)).digest();
  return md.readUInt32LE(0).toString(16).padStart(8, '0');
}
