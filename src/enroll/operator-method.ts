import type { ParsedCsr } from '../ca/x509/csr.js';
import type { Authorization, Credential, EnrollmentContext, EnrollmentMethod } from './methods.js';

/**
 * Operator-direct issuance: a caller already authenticated by an API key (admin or provisioner)
 * names the certificate in the request; the CSR proves possession of the key and nothing else
 * is taken from it (its names and extensions are ignored, not refused: the profile decides).
 */
export class OperatorEnrollment implements EnrollmentMethod {
  readonly name = 'operator';

  accepts(c: Credential): boolean {
    return c.kind === 'operator';
  }

  async authorize(c: Credential, _csr: ParsedCsr, _ctx: EnrollmentContext): Promise<Authorization> {
    if (c.kind !== 'operator') throw new Error('unreachable: accepts() admits operators only');
    const r = c.request;
    return {
      method: this.name,
      scope: c.actor,
      actor: c.actor,
      subject: r.deviceId ?? r.commonName ?? r.dnsNames?.[0] ?? r.ipAddresses?.[0] ?? 'unnamed',
      draft: { ...r },
      steps: [],
      spend: async () => ({}),
      refund: async () => undefined,
    };
  }
}
