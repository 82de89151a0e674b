import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { encodeCertificationRequest, encodeCertificationRequestInfo, nodeSignHash } from '../../src/ca/x509/encode.js';
import { ext } from '../../src/ca/x509/extensions.js';
import { encodeName, type GeneralName } from '../../src/ca/x509/names.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { renewalSigningInput } from '../../src/enroll/device-certificate-auth.js';

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
  const der = Buffer.from(
    encodeCertificationRequest(
      info,
      'ecdsa-with-SHA256',
      sign(nodeSignHash('ecdsa-with-SHA256'), info, { key: privateKey, dsaEncoding: 'der' }),
    ),
  );
  return { der, pem: toPem(der, 'CERTIFICATE REQUEST'), privateKey, keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

/** The Authorization header of a signed renewal (POST /v1/renew behind a TLS-terminating proxy). */
export function signedRenewalAuth(certificatePem: string, key: KeyObject, signedAt: string, csrDer: Buffer): string {
  const der = Buffer.from(certificatePem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const signature = sign('sha256', renewalSigningInput(signedAt, csrDer), key);
  return `MQTT-CA-Renewal cert="${der.toString('base64')}", signed-at="${signedAt}", signature="${signature.toString('base64')}"`;
}

/** The order of P-256's base point: an ECDSA signature (r, s) also verifies as (r, n − s). */
const P256_N = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551');

function derInteger(n: bigint): Buffer {
  let hex = n.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  let bytes = Buffer.from(hex, 'hex');
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return Buffer.concat([Buffer.from([0x02, bytes.length]), bytes]);
}

/** The same P-256 ECDSA signature (DER) with s replaced by n − s: different bytes, still valid for the same message and key. */
export function malleateP256(signature: Buffer): Buffer {
  let at = signature[1]! & 0x80 ? 2 + (signature[1]! & 0x7f) : 2;
  const read = (): bigint => {
    if (signature[at] !== 0x02) throw new Error('not an ECDSA DER signature');
    const len = signature[at + 1]!;
    const v = BigInt(`0x${signature.subarray(at + 2, at + 2 + len).toString('hex')}`);
    at += 2 + len;
    return v;
  };
  const r = read();
  const s = read();
  const body = Buffer.concat([derInteger(r), derInteger(P256_N - s)]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}
