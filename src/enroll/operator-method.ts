import type { ParsedCsr } from '../ca/x509/csr.js';
import type { Db } from '../store/db.js';
import type { Authorization, Credential, DeviceDirectory, EnrollmentContext, EnrollmentMethod } from './methods.js';
import { profileFitsDevice } from './policy.js';

/**
 * Operator-direct issuance: a caller already authenticated by an API key (admin or provisioner;
 * an operator for broker certificates) names the certificate in the request; the CSR proves
 * possession of the key and nothing else is taken from it (its names and extensions are ignored,
 * not refused: the profile decides). A certificate naming a registered device must fit its kind.
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
    const device = r.deviceId ? await this.devices.deviceFacts(this.db, r.deviceId) : undefined;
    return {
      method: this.name,
      scope: c.actor,
      actor: c.actor,
      subject: r.deviceId ?? r.commonName ?? r.dnsNames?.[0] ?? r.ipAddresses?.[0] ?? 'unnamed',
      draft: { ...r },
      steps: device ? [profileFitsDevice(device.kind)] : [],
      spend: async () => ({}),
      refund: async () => undefined,
    };
  }
}
