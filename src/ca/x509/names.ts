// Distinguished names (RDNSequence) and GeneralNames, as DER.
import { TAG, ia5String, isPrintableString, oid, printableString, sequence, sequenceOf, tlv, utf8String, type Bytes } from './der.js';
import { ipAddressBytes } from './ip-address.js';
import { OID } from './oids.js';

export type NameAttributeType = 'C' | 'ST' | 'L' | 'O' | 'OU' | 'CN' | 'serialNumber';
export interface NameAttribute {
  type: NameAttributeType;
  value: string;
}

export type GeneralName =
  { type: 'dns'; value: string } | { type: 'ip'; value: string } | { type: 'uri'; value: string } | { type: 'email'; value: string };

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
      if (a.value.length !== 2 || !isPrintableString(a.value))
        throw new TypeError(`C must be a two-letter country code, got ${JSON.stringify(a.value)}`);
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

export function uriName(uri: string): Bytes {
  return tlv(TAG.CONTEXT | 6, ia5Contents(uri, 'URI'));
}
