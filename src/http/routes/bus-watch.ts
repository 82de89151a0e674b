import { Router } from 'express';
import type { BusWatch } from '../../detect/bus-watch.js';
import type { WatchGap } from '../../detect/bus-watch-gaps.js';
import { allow } from '../auth.js';

const gapView = (g: WatchGap) => ({ ...g, from: g.from.toISOString(), to: g.to ? g.to.toISOString() : null });

/** GET /v1/bus/watch: the bus watch's sources, what each sees and cannot see, and its gaps of the last 24 h. */
export function busWatchRoutes(watch: Pick<BusWatch, 'status'>): Router {
  const r = Router();
  r.get('/v1/bus/watch', allow('operator', 'auditor'), async (_req, res) => {
    const s = await watch.status();
    res.json({
      ...s,
      sources: s.sources.map((src) => ({ ...src, since: src.since.toISOString(), gaps: src.gaps.map(gapView) })),
    });
  });
  return r;
}
