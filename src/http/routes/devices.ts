import express, { Router } from 'express';
import type { ApiKeyService } from '../../access/api-keys.js';
import type { DeviceInput, DeviceInventory, DeviceKind, DevicePatch, DeviceStatus } from '../../enroll/devices.js';
import { badRequest } from '../../shared/errors.js';
import { allow, authenticate, READ_ROLES } from '../auth.js';
import { ctxOf } from '../context.js';

/** Manifests are larger than ordinary requests: 10,000 devices as JSON are about 1.5 MB. */
export const IMPORT_BODY_LIMIT = '5mb';

/**
 * The body parsers of POST /v1/devices/import, mounted in app.ts BEFORE the global JSON parser (whose
 * BODY_LIMIT is too small for a manifest): the caller is authenticated and its role checked first,
 * so nobody without the right key makes the service read a large body. A body read here is not read
 * again by the global parser. Other methods and paths pass through untouched.
 */
export function deviceImportParsers(apiKeys: ApiKeyService, limit: string = IMPORT_BODY_LIMIT): Router {
  const r = Router();
  r.post(
    '/v1/devices/import',
    authenticate(apiKeys),
    allow('provisioner'),
    express.text({ type: 'text/csv', limit }),
    express.json({ type: ['application/json', 'application/*+json'], limit }),
    (_req, _res, next) => next(),
  );
  return r;
}

export function deviceRoutes(devices: DeviceInventory): Router {
  const r = Router();
  r.post('/v1/devices', allow('provisioner'), async (req, res) => {
    res.status(201).json(await devices.register(req.body as DeviceInput, ctxOf(res)));
  });
  r.post('/v1/devices/import', allow('provisioner'), async (req, res) => {
    const body: unknown = req.body;
    if (body === undefined || body === null || (typeof body !== 'string' && typeof body !== 'object')) throw badRequest('the manifest is empty');
    const manifest = devices.parseManifest(body as string | object, req.headers['content-type']);
    const queryLot = (req.query as Record<string, string | undefined>).lot;
    if (queryLot !== undefined && manifest.lot !== undefined && queryLot !== manifest.lot) {
      throw badRequest(`the lot in the query (${queryLot}) and in the manifest (${manifest.lot}) differ`);
    }
    const result = await devices.importManifest(manifest.devices, ctxOf(res), { lot: queryLot ?? manifest.lot, parseErrors: manifest.errors });
    res.status(201).json(result);
  });
  r.get('/v1/devices', allow(...READ_ROLES), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    res.json(
      await devices.list(
        {
          status: q.status as DeviceStatus | undefined,
          kind: q.kind as DeviceKind | undefined,
          lot: q.lot,
          model: q.model,
          firmwareVersion: q.firmwareVersion,
          site: q.site,
          expiringBefore: q.expiringBefore ? new Date(q.expiringBefore) : undefined,
        },
        { cursor: q.cursor, limit: Number(q.limit ?? 100) },
      ),
    );
  });
  r.get('/v1/devices/:deviceId', allow(...READ_ROLES), async (req, res) => {
    res.json(await devices.get(req.params.deviceId as string));
  });
  r.patch('/v1/devices/:deviceId', allow('provisioner', 'operator'), async (req, res) => {
    res.json(await devices.update(req.params.deviceId as string, req.body as DevicePatch, ctxOf(res)));
  });
  r.post('/v1/devices/:deviceId/decommission', allow('operator'), async (req, res) => {
    res.json(await devices.decommission(req.params.deviceId as string, ctxOf(res)));
  });
  return r;
}
