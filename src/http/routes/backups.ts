import { Router } from 'express';
import { createReadStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Backups } from '../../respond/backups.js';
import { allow } from '../auth.js';
import { ctxOf } from '../context.js';

/** Backups: made and downloaded by an admin, listed by an auditor too. */
export function backupRoutes(backups: Backups): Router {
  const r = Router();
  r.post('/v1/backups', allow(), async (_req, res) => {
    const b = await backups.create(ctxOf(res));
    res.status(201).location(`/v1/backups/${b.id}`).json(b);
  });
  r.get('/v1/backups', allow('auditor'), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    res.json(await backups.list({ cursor: q.cursor, limit: Number(q.limit ?? 100) }));
  });
  r.get('/v1/backups/:id', allow('auditor'), async (req, res) => {
    res.json(await backups.get(req.params.id as string));
  });
  r.get('/v1/backups/:id/file', allow(), async (req, res) => {
    const f = await backups.file(req.params.id as string);
    res.status(200).set({
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(f.sizeBytes),
      'Content-Disposition': `attachment; filename="${f.fileName}"`,
      'Cache-Control': 'no-store',
    });
    await pipeline(createReadStream(f.path), res);
  });
  return r;
}
