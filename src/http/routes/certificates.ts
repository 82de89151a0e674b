import { Router } from 'express';
import type { RevocationSelectorJson } from '../../shared/revocation-selector.js';
import { certificateView, type CertificateRegistry } from '../../ca/certificates.js';
import type { Revocations } from '../../revoke/revocation.js';
import type { OperatorIssuance, CsrIssueInput } from '../../enroll/operator-issuance.js';
import type { CertificateStatus } from '../../store/certificate-store.js';
import { badRequest, forbidden } from '../../shared/errors.js';
import { parseSerial, serialToBytes, type Serial } from '../../shared/ids.js';
import type { RevocationReason } from '../../revoke/reasons.js';
import { allow, READ_ROLES, type Principal } from '../auth.js';
import { approverOf, ctxOf } from '../context.js';
import type { BulkRevocationGate } from '../../respond/gated-actions.js';
import type { OcspCheck } from '../../revoke/ocsp-check.js';

export function certificateRoutes(
  registry: CertificateRegistry,
  issuance: OperatorIssuance,
  revocations: Revocations,
  bulk: BulkRevocationGate,
  ocsp: OcspCheck,
): Router {
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
  // Reads as GET /v1/certificates/{serial} does (the same roles); POST only because a PEM is a body.
  r.post('/v1/certificates/lookup', allow(...READ_ROLES), async (req, res) => {
    res.json(await registry.lookupPem((req.body as { pem: string }).pem));
  });
  r.get('/v1/certificates/:serial', allow(...READ_ROLES), async (req, res) => {
    res.json(await registry.get(serialParam(req.params.serial as string)));
  });
  // What the service's own OCSP responder says of it: the roles that read the certificate (OCSP is public anyway).
  r.get('/v1/certificates/:serial/ocsp', allow(...READ_ROLES), async (req, res) => {
    res.json(await ocsp.check(serialParam(req.params.serial as string)));
  });
  r.post('/v1/certificates/:serial/revoke', allow('operator'), async (req, res) => {
    const body = req.body as { reason: RevocationReason; invalidityDate?: string };
    const out = await revocations.revoke(
      serialParam(req.params.serial as string),
      { reason: body.reason, invalidityDate: body.invalidityDate ? new Date(body.invalidityDate) : undefined },
      ctxOf(res),
    );
    res
      .set({ 'Revocation-Changed': String(out.changed), 'Also-Revoked': String(out.alsoRevoked.length) })
      .json(certificateView(out.certificate));
  });
  r.post('/v1/revocations', allow('operator'), async (req, res) => {
    const body = req.body as BulkRevocationBody;
    const sel = body.selector;
    const date = (s: string | undefined) => (s === undefined ? undefined : new Date(s));
    const out = await bulk.revokeMany(
      {
        selector: {
          serials: sel.serials?.map((x) => serialToBytes(serialParam(x))),
          deviceIds: sel.deviceIds,
          lot: sel.lot,
          caId: sel.caId,
          issuedAfter: date(sel.issuedAfter),
          issuedBefore: date(sel.issuedBefore),
          lineageOf: sel.lineageOf === undefined ? undefined : serialToBytes(serialParam(sel.lineageOf)),
        },
        reason: body.reason,
        invalidityDate: date(body.invalidityDate),
        dryRun: body.dryRun,
      },
      approverOf(res),
    );
    // Above BULK_REVOKE_APPROVAL_THRESHOLD: nothing revoked yet, a proposal for a second person.
    if ('proposal' in out) res.status(202).location(`/v1/approvals/${out.proposal.id}`).json(out.proposal);
    else res.json(out.result);
  });
  // Those who may revoke (operators, admins) see the runs' progress.
  r.get('/v1/revocations/:id', allow('operator'), async (req, res) => {
    res.json(await revocations.bulkRun(req.params.id as string));
  });
  r.post('/v1/certificates/:serial/release', allow('operator'), async (req, res) => {
    const out = await revocations.release(serialParam(req.params.serial as string), ctxOf(res));
    res.set('Revocation-Changed', String(out.changed)).json(certificateView(out.certificate));
  });
  return r;
}

/** POST /v1/revocations, as openapi.yaml has already checked it. */
interface BulkRevocationBody {
  selector: RevocationSelectorJson;
  reason: RevocationReason;
  invalidityDate?: string;
  dryRun?: boolean;
}

function serialParam(s: string): Serial {
  const serial = parseSerial(s);
  if (!serial) throw badRequest('serial must be lowercase hex without separators');
  return serial;
}
