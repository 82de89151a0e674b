import { Router } from 'express';
import type { CaRollovers, RolloverInput } from '../../rotate/rollover.js';
import { allow } from '../auth.js';
import { ctxOf } from '../context.js';

const READERS = ['operator', 'auditor'] as const;

/** Issuing-CA rollover: started by an admin, steered (pause, resume, cancel) by an operator, watched by an auditor. */
export function rolloverRoutes(rollovers: CaRollovers): Router {
  const r = Router();
  r.post('/v1/cas/:caId/rollover', allow(), async (req, res) => {
    const { rollover, successor } = await rollovers.start(req.params.caId as string, req.body as RolloverInput, ctxOf(res));
    res.status(201).location(`/v1/rollovers/${rollover.id}`).json({ rollover, successor });
  });
  r.get('/v1/cas/:caId/rollover', allow(...READERS), async (req, res) => {
    res.json(await rollovers.ofCa(req.params.caId as string));
  });
  r.get('/v1/rollovers/:id', allow(...READERS), async (req, res) => {
    res.json(await rollovers.get(req.params.id as string));
  });
  r.post('/v1/rollovers/:id/pause', allow('operator'), async (req, res) => {
    res.json(await rollovers.pause(req.params.id as string, ctxOf(res)));
  });
  r.post('/v1/rollovers/:id/resume', allow('operator'), async (req, res) => {
    res.json(await rollovers.resume(req.params.id as string, ctxOf(res)));
  });
  r.post('/v1/rollovers/:id/cancel', allow('operator'), async (req, res) => {
    res.json(await rollovers.cancel(req.params.id as string, ctxOf(res)));
  });
  return r;
}
