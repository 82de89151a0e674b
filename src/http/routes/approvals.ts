import { Router } from 'express';
import type { Approvals } from '../../respond/approvals.js';
import { CA_REVOKE } from '../../respond/gated-actions.js';
import type { ApprovalStatus } from '../../store/approval-store.js';
import type { RevocationReason } from '../../revoke/reasons.js';
import { allow } from '../auth.js';
import { approverOf } from '../context.js';

/**
 * The two-person rule: proposals are read by admins, operators and auditors; approving and
 * rejecting are open to every role here because each action says which roles may decide it (the
 * domain answers 403 for the others, and for the proposer approving their own proposal).
 */
export function approvalRoutes(approvals: Approvals): Router {
  const r = Router();
  r.get('/v1/approvals', allow('operator', 'auditor'), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    res.json(
      await approvals.list({
        status: q.status as ApprovalStatus | undefined,
        action: q.action,
        cursor: q.cursor,
        limit: Number(q.limit ?? 100),
      }),
    );
  });
  r.get('/v1/approvals/:approvalId', allow('operator', 'auditor'), async (req, res) => {
    res.json(await approvals.get(req.params.approvalId as string));
  });
  r.post('/v1/approvals/:approvalId/approve', allow('operator', 'provisioner', 'auditor'), async (req, res) => {
    res.json(await approvals.approve(req.params.approvalId as string, approverOf(res)));
  });
  r.post('/v1/approvals/:approvalId/reject', allow('operator', 'provisioner', 'auditor'), async (req, res) => {
    const body = (req.body ?? {}) as { reason?: string };
    res.json(await approvals.reject(req.params.approvalId as string, approverOf(res), body.reason));
  });
  // Revoking a CA only proposes it: a second admin approves (POST /v1/approvals/{id}/approve).
  r.post('/v1/cas/:caId/revoke', allow(), async (req, res) => {
    const body = req.body as { reason: RevocationReason; note?: string };
    const proposal = await approvals.propose(
      CA_REVOKE,
      { caId: req.params.caId as string, reason: body.reason },
      approverOf(res),
      body.note,
    );
    res.status(202).location(`/v1/approvals/${proposal.id}`).json(proposal);
  });
  return r;
}
