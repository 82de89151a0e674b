import { Router } from 'express';
import type { CsfFunction, Posture } from '../../detect/posture.js';
import { allow } from '../auth.js';
import { ctxOf } from '../context.js';
import { posturePage } from '../posture-page.js';

/** GET /v1/posture: JSON, or the HTML page for a browser (Accept: text/html); PUT /v1/posture/target sets the Target Profile. */
export function postureRoutes(posture: Posture): Router {
  const r = Router();
  r.get('/v1/posture', allow('operator', 'auditor'), async (req, res) => {
    const report = await posture.report({ fresh: String(req.query.fresh) === 'true' });
    if (req.accepts(['application/json', 'text/html']) === 'text/html') res.type('text/html; charset=utf-8').send(posturePage(report));
    else res.json(report);
  });
  r.put('/v1/posture/target', allow('admin'), async (req, res) => {
    res.json(await posture.setTarget(req.body as Partial<Record<CsfFunction, number>>, ctxOf(res)));
  });
  return r;
}
