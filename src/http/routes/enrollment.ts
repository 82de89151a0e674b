import { Router } from 'express';
import { ServerKeygen } from '../../enroll/server-keygen.js';
import type { KeyAlgorithm } from '../../ca/keys.js';
import { badRequest } from '../../shared/errors.js';
import { DEVICE_CREDENTIAL_ROLES } from '../../access/api-keys.js';
import type { EnrollmentTokens, TokenInput } from '../../enroll/tokens.js';
import type { StagedCredentials } from '../../rotate/staged-credentials.js';
import { allow, READ_ROLES } from '../auth.js';
import { ctxOf } from '../context.js';
import { credentialOf, sourceOf } from '../request-context.js';

/**
 * Server-side key generation: authenticated by an enrollment token, not an API key. (Enrollment
 * and renewal, the factory line's hot path, are served in front of Express: see enroll-handler.ts.)
 */
export function serverKeygenRoutes(keygen: ServerKeygen, staged: StagedCredentials): Router {
  const r = Router();
  r.post('/v1/enroll/serverkeygen', async (req, res) => {
    if (req.header('idempotency-key'))
      throw badRequest('server-side key generation cannot replay a response (the key is not kept): send no Idempotency-Key');
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
  // A staged successor of a server-generated key, fetched once with the certificate it renews.
  r.post('/v1/renew/staged', async (req, res) => {
    const b = req.body as { format?: 'pkcs12' | 'pkcs8'; password: string };
    const out = await staged.pickup(credentialOf(req), b.password, b.format ?? 'pkcs12', { requestId: res.locals.requestId as string });
    res.setHeader('Cache-Control', 'no-store');
    res.json(out);
  });
  return r;
}

export function tokenRoutes(tokens: EnrollmentTokens): Router {
  const r = Router();
  r.post('/v1/enrollment-tokens', allow(...DEVICE_CREDENTIAL_ROLES), async (req, res) => {
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
