import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { DomainError } from '../../shared/errors.js';

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
