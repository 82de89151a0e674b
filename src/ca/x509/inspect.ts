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

export interface ParsedCsr {
  subject: string;
  subjectDer: Buffer;
  spki: Buffer;
  commonName: string | undefined;
  /** SAN entries the CSR asks for (issuance decides which, if any, it may have). */
  requestedSans: { type: 'dns' | 'ip' | 'uri' | 'email'; value: string }[];
  signatureValid: boolean;
}

export async function parseCsr(der: Uint8Array): Promise<ParsedCsr> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(Buffer.from(der));
  } catch {
    throw new DomainError('BadCsr', 'the CSR cannot be parsed as PKCS#10');
  }
  let signatureValid = false;
  try {
    signatureValid = await csr.verify();
  } catch {
    signatureValid = false;
  }
  const sanExt = csr.getExtension('2.5.29.17');
  const san = sanExt ? new x509.SubjectAlternativeNameExtension(sanExt.rawData) : undefined;
  const requestedSans: ParsedCsr['requestedSans'] = [];
  for (const n of san?.names.items ?? []) {
    if (n.type === 'dns' || n.type === 'ip' || n.type === 'url' || n.type === 'email') {
      requestedSans.push({ type: n.type === 'url' ? 'uri' : n.type, value: n.value });
    }
  }
  const cn = csr.subjectName.getField('CN')[0];
  return {
    subject: csr.subject,
    subjectDer: Buffer.from(csr.subjectName.toArrayBuffer()),
    spki: Buffer.from(csr.publicKey.rawData),
    commonName: cn,
    requestedSans,
    signatureValid,
  };
}
