import { Router } from 'express';
import type { AuditLog } from '../../audit/audit-log.js';
import type { AuditVerification } from '../../respond/audit-verification.js';
import { SingleFlight } from '../../shared/single-flight.js';
import { allow } from '../auth.js';

/** The API's view of `mqtt-ca audit verify`'s result (GET /v1/audit/verification). */
function verificationView(v: AuditVerification & { at: Date }) {
  const c = v.chain;
  return {
    verifiedAt: v.at.toISOString(),
    ok: c.ok && (v.anchor?.findings.length ?? 0) === 0,
    chain: {
      ok: c.ok,
      checked: c.entries,
      head: c.ok ? c.head : null,
      firstBad: c.ok ? null : c.firstBad,
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

export function auditRoutes(audit: AuditLog, verify: () => Promise<AuditVerification & { at: Date }>): Router {
  const r = Router();
  // The whole chain is read (in pages) on each verification: callers that ask while one runs share it.
  const verifying = new SingleFlight<'chain', ReturnType<typeof verificationView>>();
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
  r.get('/v1/audit/verification', allow('auditor'), async (_req, res) => {
    res.set('Cache-Control', 'no-store');
    res.json(await verifying.run('chain', async () => verificationView(await verify())));
  });
  return r;
}
