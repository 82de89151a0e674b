import type { ActorContext } from '../shared/actor.js';
import type { LeafProfileName } from '../ca/profiles.js';
import type { Enrollment, EnrollResult } from './enrollment.js';

export interface CsrIssueInput {
  profile: LeafProfileName;
  csr: string;
  caId?: string | undefined;
  deviceId?: string | undefined;
  commonName?: string | undefined;
  dnsNames?: string[] | undefined;
  ipAddresses?: string[] | undefined;
  validityDays?: number | undefined;
  /** broker only: the TLS Feature status_request extension (RFC 7633, must-staple). */
  mustStaple?: boolean | undefined;
}

/**
 * Issuance by an operator or provisioner holding an API key (`POST /v1/certificates`): the
 * operator-direct enrollment method, through the same flow as every other.
 */
export class OperatorIssuance {
  constructor(private readonly enrollment: Enrollment) {}

  async issueFromCsr(input: CsrIssueInput, ctx: ActorContext): Promise<EnrollResult> {
    const { csr, ...request } = input;
    const { result } = await this.enrollment.enroll({
      credential: { kind: 'operator', actor: ctx.actor, request },
      csr,
      // Refusals are throttled per API key, not per address: operators share gateways.
      ctx: { source: ctx.actor, requestId: ctx.requestId ?? 'internal' },
      methods: ['operator'],
    });
    return result;
  }
}
