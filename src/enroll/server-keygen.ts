import { generateKey, signatureAlgorithmFor, type KeyAlgorithm } from '../ca/keys.js';
import { encodeCertificationRequest, encodeCertificationRequestInfo, nodeSignHash } from '../ca/x509/encode.js';
import { encodeName } from '../ca/x509/names.js';
import { fromPemAll } from '../ca/x509/pem.js';
import { pkcs12, encryptedPkcs8Pem } from '../ca/x509/pkcs12.js';
import { sign } from 'node:crypto';
import { badRequest } from '../shared/errors.js';
import type { Enrollment, EnrollResult } from './enrollment.js';
import type { Credential, EnrollmentContext } from './methods.js';

export const SERVER_KEY_ALGORITHMS: readonly KeyAlgorithm[] = ['EC-P256', 'EC-P384', 'Ed25519', 'RSA-2048', 'RSA-3072'];

export interface ServerKeygenInput {
  credential: Credential | undefined;
  /** The device the key is for (a lot token needs it; a device token already names it). */
  deviceId?: string | undefined;
  keyAlgorithm?: KeyAlgorithm | undefined;
  ctx: EnrollmentContext;
  expectedProfile?: 'device' | 'broker' | undefined;
}

/** A fresh key pair and a CSR for it, for `deviceId`. */
export async function keyAndCsr(alg: KeyAlgorithm, deviceId: string | undefined): Promise<{ privateKeyPkcs8: Buffer; csr: Buffer }> {
  const { privateKey, publicKey } = await generateKey(alg);
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  const info = encodeCertificationRequestInfo(encodeName(deviceId ? [{ type: 'CN', value: deviceId }] : []), spki);
  const sigAlg = signatureAlgorithmFor(alg);
  const csr = Buffer.from(
    encodeCertificationRequest(info, sigAlg, sign(nodeSignHash(sigAlg), info, { key: privateKey, dsaEncoding: 'der' })),
  );
  return { privateKeyPkcs8: privateKey.export({ format: 'der', type: 'pkcs8' }), csr };
}

/**
 * Server-side key generation for devices that cannot make a key: the key pair is generated here,
 * a CSR for it goes through the same enrollment flow as any other (so the same credential checks
 * and policy apply), and the private key is returned once and never stored.
 */
export class ServerKeygen {
  constructor(
    private readonly enrollment: Enrollment,
    /** Records that a certificate's key was generated here (after it committed: a crash between leaves it treated as device-made, renewed by notice). */
    private readonly markServerKey: (serial: Buffer) => Promise<void> = async () => undefined,
  ) {}

  async generate(input: ServerKeygenInput): Promise<{ result: EnrollResult; privateKeyPkcs8: Buffer }> {
    const alg = input.keyAlgorithm ?? 'EC-P256';
    if (!SERVER_KEY_ALGORITHMS.includes(alg)) throw badRequest(`keyAlgorithm must be one of ${SERVER_KEY_ALGORITHMS.join(', ')}`);
    const { privateKeyPkcs8, csr } = await keyAndCsr(alg, input.deviceId);
    const { result } = await this.enrollment.enroll({
      credential: input.credential,
      csr,
      ctx: input.ctx,
      expectedProfile: input.expectedProfile,
    });
    // Its renewals are staged here too: the device cannot make the next key either.
    await this.markServerKey(Buffer.from(result.serial, 'hex'));
    return { result, privateKeyPkcs8 };
  }

  /** The key and its certificate as PKCS#12 (or encrypted PKCS#8 PEM) under the caller's password. */
  static package(out: { result: EnrollResult; privateKeyPkcs8: Buffer }, format: 'pkcs12' | 'pkcs8', password: string) {
    if (format === 'pkcs8') return { privateKey: encryptedPkcs8Pem(out.privateKeyPkcs8, password) };
    const [certificate] = fromPemAll(out.result.certificate);
    const chain = out.result.chain.flatMap((p) => fromPemAll(p));
    return {
      pkcs12: pkcs12({
        privateKeyPkcs8: out.privateKeyPkcs8,
        certificate: certificate!,
        chain,
        password,
        friendlyName: 'mqtt-ca',
      }).toString('base64'),
    };
  }
}
