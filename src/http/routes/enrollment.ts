import { Router, type Request, type Response } from 'express';
import type { TLSSocket } from 'node:tls';
import type { Enrollment } from '../../enroll/enrollment.js';
import { ServerKeygen } from '../../enroll/server-keygen.js';
import type { KeyAlgorithm } from '../../ca/keys.js';
import { badRequest } from '../../shared/errors.js';
import type { Credential } from '../../enroll/methods.js';
import type { EnrollmentTokens, TokenInput } from '../../enroll/tokens.js';
import { parseBasicAuth } from '../../enroll/est/formats.js';
import { allow, READ_ROLES } from '../auth.js';
import { ctxOf } from '../context.js';

const SIGNED_RENEWAL_RE = /^MQTT-CA-Renewal\s+cert="([A-Za-z0-9+/=_-]+)",\s*signed-at="([^"]{1,40})",\s*signature="([A-Za-z0-9+/=_-]+)"\s*$/;

/**
 * The credential a request carries: an enrollment token (Bearer), HTTP Basic (EST: the token as
 * password), a signed renewal (MQTT-CA-Renewal: the current certificate and a signature by its
 * key, for clients behind a TLS-terminating proxy), or else the TLS client certificate.
 */
export function credentialOf(req: Request): Credential | undefined {
  const h = req.headers.authorization;
  if (h) {
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(h);
    if (bearer) return { kind: 'bearer', value: bearer[1]! };
    const signed = SIGNED_RENEWAL_RE.exec(h);
    if (signed) return { kind: 'signed-renewal', certificateDer: Buffer.from(signed[1]!, 'base64'), signedAt: signed[2]!, signature: Buffer.from(signed[3]!, 'base64') };
    const basic = parseBasicAuth(h);
    return basic ? { kind: 'basic', ...basic } : undefined;
  }
  const socket = req.socket as TLSSocket;
  if (socket.encrypted) {
    const peer = socket.getPeerCertificate();
    if (peer && Buffer.isBuffer(peer.raw)) return { kind: 'client-certificate', der: peer.raw };
  }
  return undefined;
}

export const sourceOf = (req: Request) => req.socket.remoteAddress ?? 'unknown';

/** Enrollment, renewal and server-side key generation: authenticated by their own credentials, not API keys. */
export function enrollRoutes(enrollment: Enrollment, keygen: ServerKeygen): Router {
  const r = Router();
  const enrollWith = (methods?: string[]) => async (req: Request, res: Response) => {
    const csr = Buffer.isBuffer(req.body) ? req.body : (req.body as { csr: string }).csr;
    const out = await enrollment.enroll({
      credential: credentialOf(req),
      csr,
      idempotencyKey: req.header('idempotency-key'),
      ctx: { source: sourceOf(req), requestId: res.locals.requestId as string },
      methods,
    });
    if (out.replayed) res.setHeader('Idempotent-Replayed', 'true');
    res.status(201).json(out.result);
  };
  r.post('/v1/enroll', enrollWith());
  r.post('/v1/renew', enrollWith(['mtls-renewal', 'signed-renewal']));
  r.post('/v1/enroll/serverkeygen', async (req, res) => {
    if (req.header('idempotency-key')) throw badRequest('server-side key generation cannot replay a response (the key is not kept): send no Idempotency-Key');
    const b = req.body as { deviceId?: string; keyAlgorithm?: KeyAlgorithm; format?: 'pkcs12' | 'pkcs8'; password: string };
    const out = await keygen.generate({
      credential: credentialOf(req),
      deviceId: b.deviceId,
      keyAlgorithm: b.keyAlgorithm,
      ctx: { source: sourceOf(req), requestId: res.locals.requestId as string },
    });
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json({ ...out.result, ...ServerKeygen.package(out, b.format ?? 'pkcs12', b.password) });
  });
  return r;
}

export function tokenRoutes(tokens: EnrollmentTokens): Router {
  const r = Router();
  r.post('/v1/enrollment-tokens', allow('provisioner'), async (req, res) => {
    res.status(201).json(await tokens.create(req.body as TokenInput, ctxOf(res)));
  });
  r.get('/v1/enrollment-tokens', allow(...READ_ROLES), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    res.json(await tokens.list({ deviceId: q.deviceId, lot: q.lot, cursor: q.cursor, limit: Number(q.limit ?? 100) }));
  });
  r.get('/v1/enrollment-tokens/:tokenId', allow(...READ_ROLES), async (req, res) => {
    res.json(await tokens.get(req.params.tokenId as string));
  });
  r.delete('/v1/enrollment-tokens/:tokenId', allow('provisioner', 'operator'), async (req, res) => {
    res.json(await tokens.revoke(req.params.tokenId as string, ctxOf(res)));
  });
  return r;
}
