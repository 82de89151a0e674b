import { Router } from 'express';
import type { DeviceInput, DevicePatch } from '../../enroll/device-fields.js';
import type { DeviceInventory, DeviceKind, DeviceStatus, DeviceView } from '../../enroll/devices.js';
import type { DeviceRetirement } from '../../revoke/device-retirement.js';
import type { DevicePresenceView } from '../../shared/api-views.js';
import { badRequest } from '../../shared/errors.js';
import { allow, READ_ROLES } from '../auth.js';
import { ctxOf } from '../context.js';

/** A query's boolean: the validator has checked it is one (and may have made it one already). */
const flag = (v: unknown): boolean | undefined => (v === undefined ? undefined : v === true || v === 'true');

export function deviceRoutes(
  devices: DeviceInventory,
  retirement: DeviceRetirement<DeviceView>,
  presence: { ofDevice(deviceId: string): Promise<DevicePresenceView[]> },
): Router {
  const r = Router();
  r.post('/v1/devices', allow('provisioner'), async (req, res) => {
    res.status(201).json(await devices.register(req.body as DeviceInput, ctxOf(res)));
  });
  r.post('/v1/devices/import', allow('provisioner'), async (req, res) => {
    const body: unknown = req.body;
    if (body === undefined || body === null || (typeof body !== 'string' && typeof body !== 'object'))
      throw badRequest('the manifest is empty');
    const manifest = devices.parseManifest(body as string | object, req.headers['content-type']);
    const q = req.query as Record<string, unknown>;
    const queryLot = q.lot as string | undefined;
    if (queryLot !== undefined && manifest.lot !== undefined && queryLot !== manifest.lot) {
      throw badRequest(`the lot in the query (${queryLot}) and in the manifest (${manifest.lot}) differ`);
    }
    const opts = { lot: queryLot ?? manifest.lot, parseErrors: manifest.errors };
    // dryRun: the same checks and the same errors, nothing written (the validator has made it a boolean).
    if (String(q.dryRun) === 'true') res.json(await devices.previewManifest(manifest.devices, opts));
    else res.status(201).json(await devices.importManifest(manifest.devices, ctxOf(res), opts));
  });
  r.get('/v1/devices', allow(...READ_ROLES), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    const connected = flag(q.connected);
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
          connected,
          silentSince: q.silentSince ? new Date(q.silentSince) : undefined,
          broker: q.broker,
        },
        { cursor: q.cursor, limit: Number(q.limit ?? 100) },
      ),
    );
  });
  r.get('/v1/device-counts', allow(...READ_ROLES), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    res.json(
      await devices.countByStatus({
        kind: q.kind as DeviceKind | undefined,
        lot: q.lot,
        model: q.model,
        firmwareVersion: q.firmwareVersion,
        site: q.site,
        expiringBefore: q.expiringBefore ? new Date(q.expiringBefore) : undefined,
      }),
    );
  });
  r.get('/v1/devices/:deviceId', allow(...READ_ROLES), async (req, res) => {
    const id = req.params.deviceId as string;
    const [device, seen] = await Promise.all([devices.get(id), presence.ofDevice(id)]);
    res.json({ ...device, presence: seen });
  });
  r.patch('/v1/devices/:deviceId', allow('provisioner', 'operator'), async (req, res) => {
    res.json(await devices.update(req.params.deviceId as string, req.body as DevicePatch, ctxOf(res)));
  });
  r.post('/v1/devices/:deviceId/readmit', allow('operator'), async (req, res) => {
    res.json(await devices.readmit(req.params.deviceId as string, ctxOf(res)));
  });
  r.post('/v1/devices/:deviceId/decommission', allow('operator'), async (req, res) => {
    res.json(await retirement.decommission(req.params.deviceId as string, ctxOf(res)));
  });
  return r;
}
