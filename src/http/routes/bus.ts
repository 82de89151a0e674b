import { Router } from 'express';
import type { BusMapView } from '../../shared/api-views.js';
import { allow, READ_ROLES } from '../auth.js';

/** The bus as the watch sees it: GET /v1/bus/map (the roles that read devices: the map is their presence, counted). */
export function busRoutes(presence: { map(): Promise<BusMapView> }): Router {
  const r = Router();
  r.get('/v1/bus/map', allow(...READ_ROLES), async (_req, res) => {
    res.json(await presence.map());
  });
  return r;
}
