import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { encodeCertificationRequest, encodeCertificationRequestInfo, encodeName, ext, nodeSignHash, type GeneralName } from '../../src/ca/x509/encode.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { renewalSigningInput } from '../../src/enroll/renewal-method.js';

export interface TestCsr {
  der: Buffer;
  pem: string;
  privateKey: KeyObject;
  keyPem: string;
}

/** A P-256 CSR built with the project's encoder (fast; the tests also use openssl and the library). */
export function p256Csr(cn?: string, opts: { sans?: GeneralName[]; extensions?: Uint8Array[] } = {}): TestCsr {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const exts = [...(opts.sans?.length ? [ext.subjectAltName(opts.sans, false)] : []), ...(opts.extensions ?? [])];
  const info = encodeCertificationRequestInfo(encodeName(cn ? [{ type: 'CN', value: cn }] : []), spki, exts.length ? exts : undefined);
  const der = Buffer.from(encodeCertificationRequest(info, 'ecdsa-with-SHA256', sign(nodeSignHash('ecdsa-with-SHA256'), info, { key: privateKey, dsaEncoding: 'der' })));
  return { der, pem: toPem(der, 'CERTIFICATE REQUEST'), privateKey, keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

/** The Authorization header of a signed renewal (POST /v1/renew behind a TLS-terminating proxy). */
export function signedRenewalAuth(certificatePem: string, key: KeyObject, signedAt: string, csrDer: Buffer): string {
  const der = Buffer.from(certificatePem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const signature = sign('sha256', renewalSigningInput(signedAt, csrDer), key);
  return `MQTT-CA-Renewal cert="${der.toString('base64')}", signed-at="${signedAt}", signature="${signature.toString('base64')}"`;
}
