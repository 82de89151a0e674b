import { Router } from 'express';
import type { RevocationHealthReport } from '../../revoke/revocation-health.js';
import { allow } from '../auth.js';

/** GET /v1/revocation-health: the console's Revocation page (those who read the posture and the metrics). */
export function revocationHealthRoutes(report: RevocationHealthReport): Router {
  const r = Router();
  r.get('/v1/revocation-health', allow('operator', 'auditor'), async (_req, res) => {
    res.json(await report.read());
  });
  return r;
}
