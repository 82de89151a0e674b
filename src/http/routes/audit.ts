import { Router } from 'express';
import type { AuditLog } from '../../audit/audit-log.js';
import { allow } from '../auth.js';

export function auditRoutes(audit: AuditLog): Router {
  const r = Router();
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
  return r;
}
