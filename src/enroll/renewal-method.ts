import type { ParsedCsr } from '../ca/x509/csr.js';
import { PROFILES, isLeafProfile } from '../ca/profiles.js';
import type { Db } from '../store/db.js';
import type { Clock } from '../shared/clock.js';
import { DomainError } from '../shared/errors.js';
import {
  type Authorization,
  type Credential,
  type DeviceDirectory,
  type EnrollmentContext,
  type EnrollmentMethod,
  type PolicyStep,
} from './methods.js';
import { brokerIdentity, deviceIdentity, deviceStanding, noSmuggledExtensions } from './policy.js';
import { deviceProofOf, renewalSigningInput, type DeviceCertificateAuthenticator, type DeviceProof } from './device-certificate-auth.js';

const unauthenticated = (msg: string) => new DomainError('Unauthenticated', msg);
const forbidden = (msg: string) => new DomainError('Forbidden', msg);

/** The service's own staged renewal (a key it generated) is taken as a TLS client certificate. */
const proofOf = (c: Credential): DeviceProof | undefined =>
  c.kind === 'staged-renewal' ? { kind: 'client-certificate', der: c.certificateDer } : deviceProofOf(c);

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
    private readonly auth: DeviceCertificateAuthenticator,
    private readonly devices: DeviceDirectory,
    private readonly clock: Clock,
    /** Days after expiry a certificate of this profile, held by a device of this lot, may still renew (the rotation policy). */
    private readonly graceDays: (profile: string, lot: string | null) => Promise<number> = async (profile) =>
      PROFILES[profile as keyof typeof PROFILES].renewalGraceDays,
  ) {}

  accepts(c: Credential): boolean {
    return this.name === 'mtls-renewal'
      ? c.kind === 'client-certificate'
      : this.name === 'signed-renewal'
        ? c.kind === 'signed-renewal'
        : c.kind === 'staged-renewal';
  }

  async authorize(c: Credential, csr: ParsedCsr, _ctx: EnrollmentContext): Promise<Authorization> {
    const proof = proofOf(c);
    if (!proof) throw unauthenticated('a current certificate is required');
    const { row, presented, serial, name } = await this.auth.authenticate(proof, (signedAt) => renewalSigningInput(signedAt, csr.der));
    if (!isLeafProfile(row.profile)) throw forbidden(`certificate ${name} cannot be renewed this way`);
    const now = this.clock.now();
    const device = await this.devices.deviceFacts(this.db, row.deviceId);
    if (row.notAfter.getTime() < now.getTime()) {
      const grace = await this.graceDays(row.profile, device?.lot ?? null);
      if (row.notAfter.getTime() + grace * 86_400_000 < now.getTime()) {
        throw forbidden(`certificate ${name} expired at ${row.notAfter.toISOString()}, beyond the ${grace}-day renewal grace`);
      }
    }
    // A device gone from the inventory renews nothing either.
    const steps: PolicyStep[] = [noSmuggledExtensions, deviceStanding(row.deviceId, device, row.profile)];
    if (row.profile === 'broker') {
      const names = presented.sans;
      steps.push(
        brokerIdentity({
          dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value),
          ipAddresses: names.filter((n) => n.type === 'ip').map((n) => n.value),
        }),
      );
    } else {
      steps.push(deviceIdentity);
    }
    return {
      method: this.name,
      scope: `renewal:${name}`,
      actor: `certificate:${name}`,
      subject: row.deviceId,
      // A must-staple broker stays must-staple: its relying parties may be refusing handshakes without a staple.
      draft: { profile: row.profile, deviceId: row.deviceId, renews: serial, ...(presented.mustStaple ? { mustStaple: true } : {}) },
      steps,
      spend: async () => (device ? { deviceStatus: device.status } : {}),
      refund: async () => undefined,
    };
  }
}
