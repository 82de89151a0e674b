import { Router } from 'express';
import type { ActionParams, IncidentInput, Incidents } from '../../respond/incidents.js';
import { allow } from '../auth.js';
import { approverOf, ctxOf } from '../context.js';

const ACTORS = ['operator'] as const;
const READERS = ['operator', 'auditor'] as const;

/** Incidents: opened, acted in and closed by operators (and admins), read by auditors. */
export function incidentRoutes(incidents: Incidents): Router {
  const r = Router();
  r.post('/v1/incidents', allow(...ACTORS), async (req, res) => {
    const incident = await incidents.open(req.body as IncidentInput, ctxOf(res));
    res.status(201).location(`/v1/incidents/${incident.id}`).json(incident);
  });
  r.get('/v1/incidents', allow(...READERS), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    res.json(await incidents.list({ status: q.status, kind: q.kind, cursor: q.cursor, limit: Number(q.limit ?? 100) }));
  });
  r.get('/v1/incidents/:incidentId', allow(...READERS), async (req, res) => {
    res.json(await incidents.get(req.params.incidentId as string));
  });
  r.post('/v1/incidents/:incidentId/actions', allow(...ACTORS), async (req, res) => {
    const body = req.body as { action: string; params?: ActionParams; dryRun?: boolean };
    res
      .status(201)
      .json(await incidents.act(req.params.incidentId as string, body.action, body.params ?? {}, body.dryRun ?? false, approverOf(res)));
  });
  r.post('/v1/incidents/:incidentId/steps/:stepId/retry', allow(...ACTORS), async (req, res) => {
    res.status(201).json(await incidents.retry(req.params.incidentId as string, req.params.stepId as string, approverOf(res)));
  });
  r.post('/v1/incidents/:incidentId/close', allow(...ACTORS), async (req, res) => {
    const body = req.body as { summary: string; force?: boolean };
    res.json(await incidents.close(req.params.incidentId as string, body.summary, ctxOf(res), body.force ?? false));
  });
  return r;
}
