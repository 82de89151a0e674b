import { Router } from 'express';
import type { CaHierarchy } from '../../ca/hierarchy.js';
import type { KeyAlgorithm } from '../../ca/keys.js';
import { badRequest } from '../../shared/errors.js';
import { allow, READ_ROLES } from '../auth.js';
import { ctxOf } from '../context.js';

interface CreateCaBody {
  kind: 'root' | 'intermediate';
  name: string;
  subject?: { commonName: string; organization?: string; organizationalUnit?: string; country?: string };
  keyAlgorithm?: KeyAlgorithm;
  parentId?: string;
  external?: boolean;
  validityDays?: number;
  pathLen?: number;
}

export function casRoutes(hierarchy: CaHierarchy): Router {
  const r = Router();
  r.get('/v1/cas', allow(...READ_ROLES), async (_req, res) => {
    res.json({ items: await hierarchy.list() });
  });
  r.post('/v1/cas', allow(), async (req, res) => {
    const b = req.body as CreateCaBody;
    const ctx = ctxOf(res);
    const common = { name: b.name, subject: b.subject, validityDays: b.validityDays, pathLen: b.pathLen };
    let ca;
    if (b.kind === 'root') {
      if (b.parentId || b.external) throw badRequest('a root has no parentId and is not external');
      ca = await hierarchy.createRoot({ ...common, keyAlgorithm: b.keyAlgorithm ?? 'EC-P384' }, ctx);
    } else if (b.external) {
      if (b.parentId) throw badRequest('an external intermediate has no parentId: an outside CA signs it');
      ca = await hierarchy.createExternalIntermediate({ name: b.name, subject: b.subject, keyAlgorithm: b.keyAlgorithm ?? 'EC-P256' }, ctx);
    } else {
      if (!b.parentId) throw badRequest('an intermediate needs a parentId (or external: true)');
      ca = await hierarchy.createIntermediate({ ...common, parentId: b.parentId, keyAlgorithm: b.keyAlgorithm ?? 'EC-P256' }, ctx);
    }
    res.status(201).json(ca);
  });
  r.get('/v1/cas/:caId', allow(...READ_ROLES), async (req, res) => {
    res.json(await hierarchy.get(req.params.caId as string));
  });
  r.post('/v1/cas/:caId/certificate', allow(), async (req, res) => {
    res.json(await hierarchy.importCertificate(req.params.caId as string, (req.body as { certificate: string }).certificate, ctxOf(res)));
  });
  r.post('/v1/cas/:caId/default-issuer', allow(), async (req, res) => {
    const caId = req.params.caId as string;
    await hierarchy.setDefaultIssuer(caId, ctxOf(res));
    res.json(await hierarchy.get(caId));
  });
  return r;
}
