import { Router } from 'express';
import type { AuditLog } from '../../audit/audit-log.js';
import type { AuditVerification, ChainScope } from '../../respond/audit-verification.js';
import { SingleFlight } from '../../shared/single-flight.js';
import { allow } from '../auth.js';

/** GET /v1/audit/verification's work: the chain (with `full`, all of it), then its head against the checkpoints. */
export type AuditVerify = (opts: { full?: boolean }) => Promise<AuditVerification & { at: Date; scope: ChainScope }>;

/** The API's view of `mqtt-ca audit verify`'s result (GET /v1/audit/verification). */
function verificationView(v: AuditVerification & { at: Date; scope: ChainScope }) {
  const c = v.chain;
  return {
    verifiedAt: v.at.toISOString(),
    ok: c.ok && (v.anchor?.findings.length ?? 0) === 0,
    chain: {
      ok: c.ok,
      checked: c.entries,
      head: c.ok ? c.head : null,
      firstBad: c.ok ? null : c.firstBad,
      mode: v.scope.mode,
      from: v.scope.from,
      fullVerifiedAt: v.scope.fullAt.toISOString(),
    },
    anchor: v.anchor
      ? {
          ok: v.anchor.findings.length === 0,
          newest: v.anchor.newest ? { seq: v.anchor.newest.seq, at: v.anchor.newest.at, source: v.anchor.newest.source } : null,
          unanchored: v.anchor.unanchored,
          findings: v.anchor.findings,
        }
      : null,
    skipped: v.skipped,
  };
}

export function auditRoutes(audit: AuditLog, verify: AuditVerify): Router {
  const r = Router();
  // Callers that ask while a verification of the same kind runs share it (a whole walk reads the whole log).
  const verifying = new SingleFlight<'full' | 'latest', ReturnType<typeof verificationView>>();
  r.get('/v1/audit', allow('auditor'), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    res.json(
      await audit.list({
        cursor: q.cursor,
        limit: Number(q.limit ?? 100),
        action: q.action,
        targetType: q.targetType,
        targetId: q.targetId,
        actor: q.actor,
        since: q.since ? new Date(q.since) : undefined,
        until: q.until ? new Date(q.until) : undefined,
      }),
    );
  });
  r.get('/v1/audit/verification', allow('auditor'), async (req, res) => {
    res.set('Cache-Control', 'no-store');
    const full = String(req.query.full) === 'true';
    res.json(await verifying.run(full ? 'full' : 'latest', async () => verificationView(await verify({ full }))));
  });
  return r;
}
