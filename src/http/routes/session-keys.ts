import { Router, type Request } from 'express';
import type { DeviceCredential } from '../../rotate/device-auth.js';
import type { ChannelInput } from '../../rotate/session-channels.js';
import type { SessionKeys } from '../../rotate/session-keys.js';
import { allow } from '../auth.js';
import { ctxOf } from '../context.js';
import { clientCertificateOf, signedRequestOf } from '../request-context.js';

/**
 * The device credential of a session-key fetch: `Authorization: MQTT-CA-SessionKeys cert=...,
 * signed-at=..., signature=...` (behind a TLS-terminating proxy), or else the TLS client
 * certificate. Any other Authorization header is no device credential.
 */
export function deviceCredentialOf(req: Request): DeviceCredential | undefined {
  const h = req.headers.authorization;
  if (h) {
    const signed = signedRequestOf(h, 'MQTT-CA-SessionKeys');
    return signed ? { kind: 'signed', ...signed } : undefined;
  }
  const der = clientCertificateOf(req);
  return der ? { kind: 'client-certificate', der } : undefined;
}

const READ = ['operator', 'auditor'] as const;
const page = (req: Request) => {
  const q = req.query as Record<string, string | undefined>;
  return { cursor: q.cursor, limit: Number(q.limit ?? 100) };
};

export function sessionKeyRoutes(keys: SessionKeys): Router {
  const r = Router();
  // Authenticated by the device's certificate, not an API key (OWN_AUTH_PATHS in app.ts).
  r.get('/v1/session-keys', async (req, res) => {
    const out = await keys.fetch(deviceCredentialOf(req));
    res.set('Cache-Control', 'no-store').json(out);
  });
  r.get('/v1/channels', allow(...READ), async (req, res) => {
    res.json(await keys.listChannels(page(req)));
  });
  r.post('/v1/channels', allow('operator'), async (req, res) => {
    res.status(201).json(await keys.createChannel(req.body as ChannelInput, ctxOf(res)));
  });
  r.get('/v1/channels/:channelName', allow(...READ), async (req, res) => {
    res.json(await keys.getChannel(req.params.channelName as string));
  });
  r.get('/v1/channels/:channelName/members', allow(...READ), async (req, res) => {
    res.json(await keys.listMembers(req.params.channelName as string, page(req)));
  });
  r.post('/v1/channels/:channelName/members', allow('operator'), async (req, res) => {
    res.json(await keys.addMembers(req.params.channelName as string, (req.body as { deviceIds: string[] }).deviceIds, ctxOf(res)));
  });
  r.delete('/v1/channels/:channelName/members/:deviceId', allow('operator'), async (req, res) => {
    res.json(await keys.removeMember(req.params.channelName as string, req.params.deviceId as string, ctxOf(res)));
  });
  r.post('/v1/channels/:channelName/rotate', allow('operator'), async (req, res) => {
    const body = (req.body ?? {}) as { immediate?: boolean };
    res.status(201).json(await keys.rotateChannel(req.params.channelName as string, { immediate: body.immediate === true }, ctxOf(res)));
  });
  r.get('/v1/channels/:channelName/keys', allow(...READ), async (req, res) => {
    res.json(await keys.channelKeys(req.params.channelName as string, page(req)));
  });
  r.get('/v1/devices/:deviceId/session-keys', allow(...READ), async (req, res) => {
    res.json(await keys.deviceKeys(req.params.deviceId as string, page(req)));
  });
  return r;
}
