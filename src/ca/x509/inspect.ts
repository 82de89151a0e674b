import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { DomainError } from '../../shared/errors.js';
import { OID } from './oids.js';

// The library is used off the hot path (parsing what arrives from outside, verifying chains);
// Node's own WebCrypto is its provider.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export interface ParsedCertificate {
  der: Buffer;
  subject: string;
  subjectDer: Buffer;
  issuerDer: Buffer;
  spki: Buffer;
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  isCa: boolean;
  pathLen: number | null;
  canSignCertificates: boolean;
  selfIssued: boolean;
  /** DNS, IP and URI subject alternative names. */
  sans: { type: 'dns' | 'ip' | 'uri'; value: string }[];
  /** Whether it carries a TLS Feature extension (RFC 7633, must-staple). */
  mustStaple: boolean;
  /** Verifies this certificate's signature with the issuer's SPKI. */
  verifiedBy(issuerSpki: Uint8Array): Promise<boolean>;
}

export function parseCertificate(der: Uint8Array, what = 'certificate'): ParsedCertificate {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(Buffer.from(der));
  } catch {
    throw new DomainError('BadRequest', `the ${what} cannot be parsed as an X.509 certificate`);
  }
  const bc = cert.getExtension(x509.BasicConstraintsExtension);
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const sans: ParsedCertificate['sans'] = [];
  for (const n of san?.names.items ?? []) {
    if (n.type === 'dns' || n.type === 'ip') sans.push({ type: n.type, value: n.value });
    else if (n.type === 'url') sans.push({ type: 'uri', value: n.value });
  }
  const subjectDer = Buffer.from(cert.subjectName.toArrayBuffer());
  const issuerDer = Buffer.from(cert.issuerName.toArrayBuffer());
  return {
    der: Buffer.from(cert.rawData),
    subject: cert.subject,
    subjectDer,
    issuerDer,
    spki: Buffer.from(cert.publicKey.rawData),
    serialHex: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    isCa: bc?.ca === true,
    pathLen: bc?.pathLength ?? null,
    canSignCertificates: ku ? (ku.usages & x509.KeyUsageFlags.keyCertSign) !== 0 : true,
    selfIssued: subjectDer.equals(issuerDer),
    sans,
    mustStaple: cert.getExtension(OID.tlsFeature) !== null,
    async verifiedBy(issuerSpki: Uint8Array) {
      try {
        const publicKey = new x509.PublicKey(Buffer.from(issuerSpki));
        return await cert.verify({ publicKey, signatureOnly: true });
      } catch {
        return false;
      }
    },
  };
}

/** What a relying party needs to know of each CRL in a PEM bundle. */
export interface CrlSummary {
  issuer: string;
  /** The issuer Name, DER (its OpenSSL hash names the CRL in a hashed directory). */
  issuerDer: Buffer;
  /** The CRL itself, DER. */
  der: Buffer;
  thisUpdate: Date;
  nextUpdate: Date | undefined;
  entries: number;
}

/**
 * Parses every CRL of a PEM bundle; with `trustedPem` (CA certificates), each CRL's signature must
 * verify with the certificate of its issuer. Throws DomainError when there is no CRL, one does not
 * parse, or one is not signed by a trusted CA.
 */
export async function summarizeCrlBundle(pem: string, trustedPem?: string): Promise<CrlSummary[]> {
  const blocks = pem.match(/-----BEGIN X509 CRL-----[\s\S]+?-----END X509 CRL-----/g) ?? [];
  if (blocks.length === 0) throw new DomainError('BadRequest', 'the bundle holds no CRL');
  const trusted = trustedPem
    ? (trustedPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((c) => new x509.X509Certificate(c))
    : undefined;
  if (trusted && trusted.length === 0) throw new DomainError('BadRequest', 'the trusted CA file holds no certificate');
  const out: CrlSummary[] = [];
  for (const [i, b] of blocks.entries()) {
    let crl: x509.X509Crl;
    try {
      crl = new x509.X509Crl(b);
    } catch {
      throw new DomainError('BadRequest', `CRL ${i + 1} of the bundle cannot be parsed`);
    }
    if (trusted) {
      let ok = false;
      for (const ca of trusted.filter((c) => c.subject === crl.issuer)) {
        ok = await crl.verify({ publicKey: ca.publicKey }).catch(() => false);
        if (ok) break;
      }
      if (!ok) throw new DomainError('BadRequest', `the CRL of ${crl.issuer} is not signed by a trusted CA`);
    }
    out.push({
      issuer: crl.issuer,
      issuerDer: Buffer.from(crl.issuerName.toArrayBuffer()),
      der: Buffer.from(crl.rawData),
      thisUpdate: crl.thisUpdate,
      nextUpdate: crl.nextUpdate,
      entries: crl.entries.length,
    });
  }
  return out;
}

/** The CN, O, OU and C of a DER Name (the first value of each), for a name built again with a change. */
export function nameFields(nameDer: Uint8Array): {
  commonName?: string;
  organization?: string;
  organizationalUnit?: string;
  country?: string;
} {
  const name = new x509.Name(Buffer.from(nameDer));
  const first = (f: string) => name.getField(f)[0];
  const out: { commonName?: string; organization?: string; organizationalUnit?: string; country?: string } = {};
  const cn = first('CN');
  const o = first('O');
  const ou = first('OU');
  const c = first('C');
  if (cn !== undefined) out.commonName = cn;
  if (o !== undefined) out.organization = o;
  if (ou !== undefined) out.organizationalUnit = ou;
  if (c !== undefined) out.country = c;
  return out;
}
