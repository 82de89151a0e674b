import type { ParsedCsr } from '../ca/x509/csr.js';
import type { Db } from '../store/db.js';
import type { Authorization, Credential, DeviceDirectory, EnrollmentContext, EnrollmentMethod, PolicyStep } from './methods.js';
import { deviceStanding } from './policy.js';

/**
 * Operator-direct issuance: a caller already authenticated by an API key (admin or provisioner)
 * names the certificate in the request; the CSR proves possession of the key and nothing else
 * is taken from it (its names and extensions are ignored, not refused: the profile decides).
 * A certificate for a device (profile device, or a broker naming its deviceId) obeys the device's
 * state like any enrollment.
 */
export class OperatorEnrollment implements EnrollmentMethod {
  readonly name = 'operator';

  constructor(
    private readonly db: Db,
    private readonly devices: DeviceDirectory,
  ) {}

  accepts(c: Credential): boolean {
    return c.kind === 'operator';
  }

  async authorize(c: Credential, _csr: ParsedCsr, _ctx: EnrollmentContext): Promise<Authorization> {
    if (c.kind !== 'operator') throw new Error('unreachable: accepts() admits operators only');
    const r = c.request;
    const steps: PolicyStep[] = [];
    let deviceStatus: string | undefined;
    // A device certificate without a deviceId is refused by the profile (issuance names it).
    if (r.deviceId !== undefined) {
      const device = await this.devices.deviceFacts(this.db, r.deviceId);
      deviceStatus = device?.status;
      steps.push(deviceStanding(r.deviceId, device, r.profile));
    }
    return {
      method: this.name,
      scope: c.actor,
      actor: c.actor,
      subject: r.deviceId ?? r.commonName ?? r.dnsNames?.[0] ?? r.ipAddresses?.[0] ?? 'unnamed',
      draft: { ...r },
      steps,
      // The device's commit is planned on the status read here, and refused if it changed since.
      spend: async () => (deviceStatus ? { deviceStatus } : {}),
      refund: async () => undefined,
    };
  }
}
