import { createHash, createPublicKey, verify } from 'node:crypto';
import type { ParsedCsr } from '../ca/x509/csr.js';
import { parseCertificate } from '../ca/x509/inspect.js';
import { PROFILES, isLeafProfile } from '../ca/profiles.js';
import type { CertificateStore } from '../store/certificate-store.js';
import type { ReplayStore } from '../store/replay-store.js';
import type { Db } from '../store/db.js';
import type { Clock } from '../shared/clock.js';
import { DomainError } from '../shared/errors.js';
import { serialFromBytes } from '../shared/ids.js';
import { nodeSignHash } from '../ca/x509/encode.js';
import {
  type Authorization,
  type Credential,
  type DeviceDirectory,
  type EnrollmentContext,
  type EnrollmentMethod,
  type PolicyStep,
} from './methods.js';
import { brokerIdentity, deviceIdentity, deviceStanding, noSmuggledExtensions } from './policy.js';

const unauthenticated = (msg: string) => new DomainError('Unauthenticated', msg);
const forbidden = (msg: string) => new DomainError('Forbidden', msg);

/** How far a signed renewal request's time may be from ours. */
export const SIGNED_RENEWAL_SKEW_MS = 5 * 60_000;

/** The text a device signs with its current key to renew behind a TLS-terminating proxy. */
export function renewalSigningInput(signedAt: string, csrDer: Uint8Array): Buffer {
  return Buffer.from(`mqtt-ca-renewal\n${signedAt}\n${createHash('sha256').update(csrDer).digest('hex')}`);
}

/**
 * Whether `signature` over `input` verifies with a certificate's key (SPKI DER): ECDSA in DER with
 * SHA-256 (SHA-384 for P-384), Ed25519, RSA PKCS#1 v1.5 with SHA-256 — what a device signs
 * requests with when a TLS-terminating proxy hides its client certificate.
 */
export function verifiesWithCertificateKey(spki: Buffer, input: Buffer, signature: Buffer): boolean {
  try {
    const key = createPublicKey({ key: spki, format: 'der', type: 'spki' });
    const hash = key.asymmetricKeyType === 'ed25519' ? null : key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? nodeSignHash('ecdsa-with-SHA384') : 'sha256';
    return verify(hash, input, { key, dsaEncoding: 'der' }, signature);
  } catch {
    return false;
  }
}

/**
 * Renewal by a device that holds a current certificate: presented as the TLS client certificate
 * (`mtls`), or, behind a TLS-terminating proxy, with a request signed by the current key
 * (`signed`). The certificate must be one we issued (byte for byte), not revoked, and current —
 * or expired by no more than the profile's renewal grace. The new certificate has the same
 * identity and records which one it renewed.
 */
export class RenewalEnrollment implements EnrollmentMethod {
  constructor(
    readonly name: 'mtls-renewal' | 'signed-renewal' | 'staged-renewal',
    private readonly db: Db,
    private readonly certificates: CertificateStore,
    private readonly devices: DeviceDirectory,
    private readonly replay: ReplayStore,
    private readonly clock: Clock,
    /** Days after expiry a certificate of this profile, held by a device of this lot, may still renew (the rotation policy). */
    private readonly graceDays: (profile: string, lot: string | null) => Promise<number> = async (profile) => PROFILES[profile as keyof typeof PROFILES].renewalGraceDays,
  ) {}

  accepts(c: Credential): boolean {
    return this.name === 'mtls-renewal' ? c.kind === 'client-certificate' : this.name === 'signed-renewal' ? c.kind === 'signed-renewal' : c.kind === 'staged-renewal';
  }

  async authorize(c: Credential, csr: ParsedCsr, _ctx: EnrollmentContext): Promise<Authorization> {
    const der = c.kind === 'client-certificate' ? c.der : c.kind === 'signed-renewal' || c.kind === 'staged-renewal' ? c.certificateDer : undefined;
    if (!der) throw unauthenticated('a current certificate is required');
    const presented = parseCertificate(der, 'client certificate');
    const serial = Buffer.from(presented.serialHex, 'hex');
    const row = await this.certificates.get(this.db, serial);
    if (!row || !row.der || !row.der.equals(presented.der)) throw unauthenticated('the certificate was not issued by this CA');
    if (row.status === 'revoked') throw forbidden(`certificate ${serialFromBytes(serial)} is revoked`);
    if (row.status !== 'issued' || !row.deviceId || !isLeafProfile(row.profile)) {
      throw forbidden(`certificate ${serialFromBytes(serial)} cannot be renewed this way`);
    }
    const now = this.clock.now();
    const device = await this.devices.deviceFacts(this.db, row.deviceId);
    if (row.notAfter.getTime() < now.getTime()) {
      const grace = await this.graceDays(row.profile, device?.lot ?? null);
      if (row.notAfter.getTime() + grace * 86_400_000 < now.getTime()) {
        throw forbidden(`certificate ${serialFromBytes(serial)} expired at ${row.notAfter.toISOString()}, beyond the ${grace}-day renewal grace`);
      }
    }
    if (c.kind === 'signed-renewal') await this.checkSignature(c, presented.spki, csr);

    // A device gone from the inventory renews nothing either.
    const steps: PolicyStep[] = [noSmuggledExtensions, deviceStanding(row.deviceId, device, row.profile)];
    if (row.profile === 'broker') {
      const names = presented.sans;
      steps.push(brokerIdentity({ dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value), ipAddresses: names.filter((n) => n.type === 'ip').map((n) => n.value) }));
    } else {
      steps.push(deviceIdentity);
    }
    return {
      method: this.name,
      scope: `renewal:${serialFromBytes(serial)}`,
      actor: `certificate:${serialFromBytes(serial)}`,
      subject: row.deviceId,
      draft: { profile: row.profile, deviceId: row.deviceId, renews: serial },
      steps,
      spend: async () => (device ? { deviceStatus: device.status } : {}),
      refund: async () => undefined,
    };
  }

  private async checkSignature(c: Extract<Credential, { kind: 'signed-renewal' }>, spki: Buffer, csr: ParsedCsr): Promise<void> {
    const at = Date.parse(c.signedAt);
    const now = this.clock.now().getTime();
    if (Number.isNaN(at) || Math.abs(now - at) > SIGNED_RENEWAL_SKEW_MS) {
      throw unauthenticated('the renewal signature is stale or its time is not ISO-8601 (allowed skew: 5 minutes)');
    }
    if (!verifiesWithCertificateKey(spki, renewalSigningInput(c.signedAt, csr.der), c.signature)) throw unauthenticated('the renewal signature does not verify with the certificate\'s key');
    const digest = createHash('sha256').update(c.signature).digest();
    if (!(await this.replay.useOnce(this.db, digest, new Date(now + 2 * SIGNED_RENEWAL_SKEW_MS)))) {
      throw unauthenticated('this signed renewal request was already used (replay)');
    }
  }
}
