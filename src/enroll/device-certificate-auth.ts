import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { nodeSignHash } from '../ca/x509/encode.js';
import { parseCertificate, type ParsedCertificate } from '../ca/x509/inspect.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, isDomainError } from '../shared/errors.js';
import { serialFromBytes } from '../shared/ids.js';
import type { CertificateRow } from '../store/certificate-store.js';
import type { Db, Executor } from '../store/db.js';
import type { Credential } from './methods.js';

const unauthenticated = (msg: string) => new DomainError('Unauthenticated', msg);
const forbidden = (msg: string) => new DomainError('Forbidden', msg);

/** How a device proves it holds its certificate's key. */
export type DeviceProof =
  /** The TLS client certificate: the handshake proved the key (also the service itself, renewing a key it generated). */
  | { kind: 'client-certificate'; der: Buffer }
  /** Behind a TLS-terminating proxy: the certificate, a time, and a signature by its key over the request's signing input. */
  | { kind: 'signed'; certificateDer: Buffer; signedAt: string; signature: Buffer };

/** The device proof a request's credential carries: its TLS client certificate or its MQTT-CA-Renewal signature. */
export function deviceProofOf(c: Credential | undefined): DeviceProof | undefined {
  if (c?.kind === 'client-certificate') return { kind: 'client-certificate', der: c.der };
  if (c?.kind === 'signed-renewal')
    return { kind: 'signed', certificateDer: c.certificateDer, signedAt: c.signedAt, signature: c.signature };
  return undefined;
}

/** How far a signed request's time may be from ours. */
export const SIGNED_REQUEST_SKEW_MS = 5 * 60_000;

const sha256Hex = (data: Uint8Array | string) => createHash('sha256').update(data).digest('hex');

/*
 * What a device signs, one text per purpose, each with its own first line: a signature made for
 * one purpose never verifies for another. Each covers what the request asks for (the CSR, the
 * pickup's password and format), so a signature cannot be moved to another body.
 */

/** A renewal: the time and the SHA-256 of the CSR (DER). */
export function renewalSigningInput(signedAt: string, csrDer: Uint8Array): Buffer {
  return Buffer.from(`mqtt-ca-renewal\n${signedAt}\n${sha256Hex(csrDer)}`);
}

/** A session-key fetch: the method and path, and the time. */
export function sessionKeysSigningInput(signedAt: string): Buffer {
  return Buffer.from(`mqtt-ca-session-keys\nGET /v1/session-keys\n${signedAt}`);
}

/** A staged-credential pickup: the time, the format asked for, and the SHA-256 of the password (UTF-8) the key will be sealed under. */
export function pickupSigningInput(signedAt: string, body: { password: string; format: 'pkcs12' | 'pkcs8' }): Buffer {
  return Buffer.from(`mqtt-ca-staged-pickup\n${signedAt}\n${body.format}\n${sha256Hex(body.password)}`);
}

/** The stored certificates, by serial (CertificateStore). */
export interface IssuedCertificates {
  get(db: Executor, serial: Buffer): Promise<CertificateRow | undefined>;
}

/** One-time proofs: a digest is accepted once until it expires (ReplayStore). */
export interface OneTimeProofs {
  useOnce(db: Executor, digest: Buffer, expiresAt: Date): Promise<boolean>;
}

export interface AuthenticatedCertificate {
  /** The stored row: issued (not revoked or on hold), with its DER and device. */
  row: CertificateRow & { der: Buffer; deviceId: string };
  presented: ParsedCertificate;
  serial: Buffer;
  /** The serial as the API writes it. */
  name: string;
  publicKey: KeyObject;
}

/**
 * Authentication by a device's certificate, the one way for renewal, session-key fetches and
 * staged-credential pickups: the certificate must be one this CA issued (byte for byte the stored
 * DER), issued (neither revoked nor on hold) and held by a device. A signed request must be
 * within 5 minutes of our time, verify with the certificate's key (ECDSA in DER with SHA-256, or
 * SHA-384 on P-384; Ed25519; RSA PKCS#1 v1.5 with SHA-256) over the input its purpose defines,
 * and is accepted once: the replay guard is keyed on WHAT WAS SIGNED (the certificate and the
 * signing input), never on the signature's bytes — an ECDSA signature also verifies with s
 * replaced by n − s, and a DER signature can be re-encoded. Validity (with or without a renewal
 * grace) and the device's state are the caller's policy.
 */
export class DeviceCertificateAuthenticator {
  constructor(
    private readonly db: Db,
    private readonly certificates: IssuedCertificates,
    private readonly replay: OneTimeProofs,
    private readonly clock: Clock,
  ) {}

  /** `signingInput` says what a signed request of this purpose must have signed, given its time. */
  async authenticate(proof: DeviceProof, signingInput: (signedAt: string) => Buffer): Promise<AuthenticatedCertificate> {
    const der = proof.kind === 'client-certificate' ? proof.der : proof.certificateDer;
    let presented: ParsedCertificate;
    try {
      presented = parseCertificate(der, 'device certificate');
    } catch (e) {
      if (isDomainError(e)) throw unauthenticated(e.message);
      throw e;
    }
    const serial = Buffer.from(presented.serialHex, 'hex');
    const row = await this.certificates.get(this.db, serial);
    if (!row || !row.der || !row.der.equals(presented.der)) throw unauthenticated('the certificate was not issued by this CA');
    const name = serialFromBytes(serial);
    if (row.status === 'revoked')
      throw forbidden(`certificate ${name} is ${row.revocationReason === 'certificateHold' ? 'on hold' : 'revoked'}`);
    if (row.status !== 'issued' || !row.deviceId) throw forbidden(`certificate ${name} does not authenticate a device`);
    const publicKey = createPublicKey({ key: presented.spki, format: 'der', type: 'spki' });
    if (proof.kind === 'signed') await this.checkSigned(proof, publicKey, signingInput(proof.signedAt));
    return { row: row as AuthenticatedCertificate['row'], presented, serial, name, publicKey };
  }

  private async checkSigned(proof: Extract<DeviceProof, { kind: 'signed' }>, key: KeyObject, input: Buffer): Promise<void> {
    const now = this.clock.now().getTime();
    const at = Date.parse(proof.signedAt);
    if (Number.isNaN(at) || Math.abs(now - at) > SIGNED_REQUEST_SKEW_MS) {
      throw unauthenticated('the request signature is stale or its time is not ISO-8601 (allowed skew: 5 minutes)');
    }
    if (!verifiesWith(key, input, proof.signature))
      throw unauthenticated("the request signature does not verify with the certificate's key");
    // Past twice the skew, the time alone refuses the request: the guard need not remember it longer.
    if (
      !(await this.replay.useOnce(this.db, signedContentDigest(proof.certificateDer, input), new Date(now + 2 * SIGNED_REQUEST_SKEW_MS)))
    ) {
      throw unauthenticated('this signed request was already used (replay)');
    }
  }
}

/** The replay guard's key for a signed request: the certificate and what it signed (which names the purpose and the time). */
export function signedContentDigest(certificateDer: Uint8Array, input: Uint8Array): Buffer {
  return createHash('sha256')
    .update('mqtt-ca-signed-request\n')
    .update(createHash('sha256').update(certificateDer).digest())
    .update(input)
    .digest();
}

function verifiesWith(key: KeyObject, input: Buffer, signature: Buffer): boolean {
  try {
    const hash =
      key.asymmetricKeyType === 'ed25519'
        ? null
        : key.asymmetricKeyDetails?.namedCurve === 'secp384r1'
          ? nodeSignHash('ecdsa-with-SHA384')
          : 'sha256';
    return verify(hash, input, { key, dsaEncoding: 'der' }, signature);
  } catch {
    return false;
  }
}
