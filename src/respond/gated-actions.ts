import type { CaHierarchy } from '../ca/hierarchy.js';
import type { RevocationSelectorJson } from '../shared/revocation-selector.js';
import { isRevocationReason, type RevocationReason } from '../revoke/reasons.js';
import type { BulkRevokeInput, BulkRevokeResult, Revocations } from '../revoke/revocation.js';
import type { Clock } from '../shared/clock.js';
import { badRequest } from '../shared/errors.js';
import { serialFromBytes } from '../shared/ids.js';
import type { ApprovalActor, ApprovalExecutor, Approvals, ApprovalView } from './approvals.js';

/** The dangerous operations of the service itself that take a second person's approval. */
export const CA_REVOKE = 'ca.revoke';
export const BULK_REVOKE = 'revocation.bulk';

export interface CaRevocationParams {
  caId: string;
  reason: RevocationReason;
}

/** How many serials a proposal shows its approver (the count is always exact). */
const TARGET_SAMPLE = 100;

function checkCaReason(reason: unknown): RevocationReason {
  if (!isRevocationReason(reason)) throw badRequest(`unknown revocation reason ${String(reason)}`);
  if (reason === 'certificateHold')
    throw badRequest('a CA is not put on hold: revoke it for good (e.g. cACompromise, keyCompromise, superseded, cessationOfOperation)');
  return reason;
}

/** ca.revoke: an intermediate's certificate on its parent's CRL and OCSP, the CA marked revoked. Admins only. */
export function caRevocationExecutor(
  revocations: Revocations,
  hierarchy: CaHierarchy,
): ApprovalExecutor<
  CaRevocationParams,
  { caId: string; serial: string; reason: string; revokedAt: string | null; wasDefaultIssuer: boolean }
> {
  return {
    roles: ['admin'],
    async describe(p) {
      const reason = checkCaReason(p.reason);
      const t = await hierarchy.revocationTarget(p.caId);
      const isDefaultIssuer = (await hierarchy.defaultIssuerId()) === p.caId;
      const serial = serialFromBytes(t.serial);
      return {
        summary: `revoke CA ${t.name} (${p.caId}) for ${reason}: its certificate ${serial} goes on the CRL and OCSP of ${t.parentId}, and it issues nothing more${isDefaultIssuer ? ' (it is the default issuer: new issuance stops until another CA is made default)' : ''}`,
        targets: { caId: p.caId, name: t.name, parentId: t.parentId, serial, status: t.status, isDefaultIssuer },
      };
    },
    async execute(p, ctx) {
      const out = await revocations.revokeCa(p.caId, { reason: checkCaReason(p.reason) }, ctx.approvedBy);
      return {
        caId: out.caId,
        serial: serialFromBytes(out.certificate.serial),
        reason: out.certificate.revocationReason ?? p.reason,
        revokedAt: out.certificate.revokedAt?.toISOString() ?? null,
        wasDefaultIssuer: out.wasDefaultIssuer,
      };
    },
  };
}

/** A bulk revocation as a proposal stores it: the API's JSON form, and the moment it was proposed. */
export interface BulkRevocationParams {
  selector: RevocationSelectorJson;
  reason: RevocationReason;
  invalidityDate?: string;
  /**
   * Only certificates issued up to this time (the proposal) are taken: what the approver saw,
   * not what was issued while the proposal waited. Those revoked meanwhile count as already revoked.
   */
  issuedUpTo: string;
}

function toParams(input: BulkRevokeInput, issuedUpTo: Date): BulkRevocationParams {
  const s = input.selector;
  const iso = (d: Date | undefined) => d?.toISOString();
  const selector: BulkRevocationParams['selector'] = JSON.parse(
    JSON.stringify({
      serials: s.serials?.map(serialFromBytes),
      deviceIds: s.deviceIds,
      lot: s.lot,
      caId: s.caId,
      issuedAfter: iso(s.issuedAfter),
      issuedBefore: iso(s.issuedBefore),
      lineageOf: s.lineageOf === undefined ? undefined : serialFromBytes(s.lineageOf),
    }),
  ) as BulkRevocationParams['selector'];
  return {
    selector,
    reason: input.reason,
    ...(input.invalidityDate ? { invalidityDate: input.invalidityDate.toISOString() } : {}),
    issuedUpTo: issuedUpTo.toISOString(),
  };
}

function toInput(p: BulkRevocationParams): BulkRevokeInput {
  const s = p.selector;
  const date = (v: string | undefined) => (v === undefined ? undefined : new Date(v));
  // issued_at < issuedUpTo + 1 ms: issued at or before the proposal.
  const upTo = new Date(new Date(p.issuedUpTo).getTime() + 1);
  const before = date(s.issuedBefore);
  return {
    selector: {
      serials: s.serials?.map((x) => Buffer.from(x, 'hex')),
      deviceIds: s.deviceIds,
      lot: s.lot,
      caId: s.caId,
      issuedAfter: date(s.issuedAfter),
      issuedBefore: before && before < upTo ? before : upTo,
      lineageOf: s.lineageOf === undefined ? undefined : Buffer.from(s.lineageOf, 'hex'),
    },
    reason: p.reason,
    invalidityDate: date(p.invalidityDate),
  };
}

const LOOK: ApprovalActor = { actor: 'system:approvals', keyId: '-', name: 'system', role: 'auditor' };

/** revocation.bulk: a bulk revocation larger than the threshold. Operators and admins. */
export function bulkRevocationExecutor(revocations: Revocations): ApprovalExecutor<BulkRevocationParams, BulkRevokeResult> {
  return {
    roles: ['admin', 'operator'],
    async describe(p) {
      const preview = await revocations.revokeMany({ ...toInput(p), dryRun: true }, LOOK);
      return {
        summary: `revoke ${preview.revoked} certificate${preview.revoked === 1 ? '' : 's'} for ${p.reason}${preview.alreadyRevoked ? ` (${preview.alreadyRevoked} more of the selection revoked already)` : ''}`,
        targets: {
          revocable: preview.revoked,
          alreadyRevoked: preview.alreadyRevoked,
          serials: preview.serials.slice(0, TARGET_SAMPLE),
          truncated: preview.revoked > TARGET_SAMPLE,
        },
      };
    },
    async execute(p, ctx) {
      return revocations.revokeMany(toInput(p), ctx.approvedBy);
    },
  };
}

/**
 * POST /v1/revocations with the two-person rule: a bulk revocation that would revoke more than
 * `threshold` certificates (BULK_REVOKE_APPROVAL_THRESHOLD; 0: never) becomes a proposal; smaller
 * ones and dry runs go through as before. The threshold holds even against a racing issuance: a
 * direct revocation that would take more than it is refused (nothing changes) and can be repeated.
 */
export class BulkRevocationGate {
  constructor(
    private readonly revocations: Revocations,
    private readonly approvals: Approvals,
    private readonly clock: Clock,
    private readonly threshold: number,
  ) {}

  async revokeMany(input: BulkRevokeInput, ctx: ApprovalActor): Promise<{ result: BulkRevokeResult } | { proposal: ApprovalView }> {
    if (input.dryRun || this.threshold === 0) return { result: await this.revocations.revokeMany(input, ctx) };
    const proposedAt = this.clock.now();
    const preview = await this.revocations.revokeMany({ ...input, dryRun: true }, ctx);
    if (preview.revoked > this.threshold) return { proposal: await this.approvals.propose(BULK_REVOKE, toParams(input, proposedAt), ctx) };
    return { result: await this.revocations.revokeMany({ ...input, atMost: this.threshold }, ctx) };
  }
}
