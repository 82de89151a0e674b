import { Router } from 'express';
import type { ApiKeyService, Role } from '../../access/api-keys.js';
import { allow } from '../auth.js';
import { keyCtxOf } from '../context.js';

export function apiKeyRoutes(apiKeys: ApiKeyService): Router {
  const r = Router();
  r.get('/v1/api-keys', allow(), async (_req, res) => {
    const items = await apiKeys.list();
    res.json({
      items: items.map((k) => ({
        id: k.id,
        name: k.name,
        role: k.role,
        createdAt: iso(k.createdAt),
        createdBy: k.createdBy,
        createdByKey: k.createdByKey,
        revokedAt: k.revokedAt ? iso(k.revokedAt) : null,
        lastUsedAt: k.lastUsedAt ? iso(k.lastUsedAt) : null,
      })),
    });
  });
  r.post('/v1/api-keys', allow(), async (req, res) => {
    const b = req.body as { name: string; role: Role };
    const k = await apiKeys.create({ name: b.name, role: b.role }, keyCtxOf(res));
    res.status(201).json({ id: k.id, name: k.name, role: k.role, createdAt: iso(k.createdAt), key: k.key });
  });
  // Never the last active admin key (409): the domain refuses it, whichever route asks.
  r.delete('/v1/api-keys/:keyId', allow(), async (req, res) => {
    await apiKeys.revoke(req.params.keyId as string, keyCtxOf(res));
    res.status(204).end();
  });
  return r;
}

const iso = (d: Date | string) => new Date(d).toISOString();
