import { Router } from 'express';
import type { CertificateRegistry } from '../../ca/certificates.js';
import type { OperatorIssuance, CsrIssueInput } from '../../enroll/operator-issuance.js';
import type { CertificateStatus } from '../../store/certificate-store.js';
import { badRequest, forbidden } from '../../shared/errors.js';
import { parseSerial } from '../../shared/ids.js';
import { allow, READ_ROLES, type Principal } from '../auth.js';
import { ctxOf } from '../context.js';

export function certificateRoutes(registry: CertificateRegistry, issuance: OperatorIssuance): Router {
  const r = Router();
  r.get('/v1/certificates', allow(...READ_ROLES), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    res.json(
      await registry.list(
        {
          caId: q.caId,
          status: q.status as CertificateStatus | undefined,
          profile: q.profile,
          deviceId: q.deviceId,
          expiringBefore: q.expiringBefore ? new Date(q.expiringBefore) : undefined,
        },
        { cursor: q.cursor, limit: Number(q.limit ?? 100) },
      ),
    );
  });
  r.post('/v1/certificates', allow('provisioner', 'operator'), async (req, res) => {
    const body = req.body as CsrIssueInput;
    // Operators run the brokers: they may issue broker certificates, not device identities.
    if ((res.locals.principal as Principal).role === 'operator' && body.profile !== 'broker') {
      throw forbidden('the operator role issues broker certificates only; device certificates come from provisioning');
    }
    res.status(201).json(await issuance.issueFromCsr(body, ctxOf(res)));
  });
  r.get('/v1/certificates/:serial', allow(...READ_ROLES), async (req, res) => {
    const serial = parseSerial(req.params.serial as string);
    if (!serial) throw badRequest('serial must be lowercase hex without separators');
    res.json(await registry.get(serial));
  });
  return r;
}
