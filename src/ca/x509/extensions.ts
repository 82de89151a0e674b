// Certificate and CRL extensions, and the key identifiers they carry.
import { createHash } from 'node:crypto';
import { TAG, bitString, boolean, NULL, octetString, oid, readTlv, sequence, sequenceOf, smallInt, tlv, tlvOf, type Bytes } from './der.js';
import { encodeGeneralName, uriName, type GeneralName } from './names.js';
import { OID } from './oids.js';

export type KeyUsageFlag =
  'digitalSignature' | 'nonRepudiation' | 'keyEncipherment' | 'dataEncipherment' | 'keyAgreement' | 'keyCertSign' | 'cRLSign';

/** The subjectPublicKey BIT STRING contents of a DER SPKI, without the unused-bits octet. */
export function subjectPublicKeyBits(spki: Uint8Array): Uint8Array {
  const outer = readTlv(spki, 0);
  if (outer.tag !== TAG.SEQUENCE) throw new TypeError('SubjectPublicKeyInfo must be a SEQUENCE');
  const alg = readTlv(spki, outer.start);
  if (alg.tag !== TAG.SEQUENCE) throw new TypeError('SubjectPublicKeyInfo.algorithm must be a SEQUENCE');
  const key = readTlv(spki, alg.end);
  if (key.tag !== TAG.BIT_STRING || key.end - key.start < 1)
    throw new TypeError('SubjectPublicKeyInfo.subjectPublicKey must be a BIT STRING');
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

/** TLS extension numbers a TLS Feature extension may name (RFC 7633 4.2; IANA TLS ExtensionType). */
export const TLS_FEATURE = { statusRequest: 5, statusRequestV2: 17 } as const;

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

  /**
   * TLS Feature (RFC 7633): Features ::= SEQUENCE OF INTEGER, the TLS extensions a server
   * presenting this certificate must use; [status_request] is "must-staple" (the client refuses a
   * handshake without a stapled OCSP response). Not critical (RFC 7633 4.2: SHOULD NOT be).
   */
  tlsFeature(features: number[]): Uint8Array {
    if (features.length === 0) throw new TypeError('tlsFeature needs at least one feature');
    return extension(OID.tlsFeature, false, sequenceOf(features.map(smallInt)));
  },

  /** id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): NULL value, not critical. */
  ocspNoCheck(): Uint8Array {
    return OCSP_NOCHECK;
  },
};
