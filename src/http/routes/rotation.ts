import { Router } from 'express';
import type { RotationPolicies, RotationPolicyInput, PolicyScope } from '../../rotate/policies.js';
import type { Renewals } from '../../rotate/renewals.js';
import { notFound } from '../../shared/errors.js';
import { serialFromBytes, serialToBytes, type Serial } from '../../shared/ids.js';
import type { JobRunner } from '../../jobs/runner.js';
import { allow } from '../auth.js';
import { ctxOf } from '../context.js';

const READERS = ['operator', 'auditor'] as const;

export function rotationRoutes(policies: RotationPolicies, renewals: Renewals, jobs: JobRunner): Router {
  const r = Router();
  r.get('/v1/rotation-policies', allow(...READERS), async (_req, res) => {
    res.json({ policies: await policies.list(), sinks: policies.sinks });
  });
  r.get('/v1/rotation-policies/effective', allow(...READERS), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    res.json(await policies.effective(q.profile!, q.lot ?? null));
  });
  r.get('/v1/rotation-policies/:scope/:name', allow(...READERS), async (req, res) => {
    res.json(await policies.get(req.params.scope as PolicyScope, req.params.name as string));
  });
  r.put('/v1/rotation-policies/:scope/:name', allow('operator'), async (req, res) => {
    const { policy, created } = await policies.put(
      req.params.scope as PolicyScope,
      req.params.name as string,
      req.body as RotationPolicyInput,
      ctxOf(res),
    );
    res.status(created ? 201 : 200).json(policy);
  });
  r.delete('/v1/rotation-policies/:scope/:name', allow('operator'), async (req, res) => {
    await policies.delete(req.params.scope as PolicyScope, req.params.name as string, ctxOf(res));
    res.status(204).end();
  });
  r.get('/v1/renewal-notices/:serial', allow(...READERS), async (req, res) => {
    const serial = req.params.serial as Serial;
    const n = await renewals.noticeFor(serial);
    if (!n) throw notFound(`no renewal notice for certificate ${serial}`);
    const iso = (d: Date | null) => (d ? d.toISOString() : null);
    res.json({
      serial: serialFromBytes(serialToBytes(serial)),
      deviceId: n.deviceId,
      state: n.state,
      dueAt: n.dueAt.toISOString(),
      deadline: n.deadline.toISOString(),
      notify: n.notify,
      mqttSentAt: iso(n.mqttSentAt),
      webhookSentAt: iso(n.webhookSentAt),
      attempts: n.attempts,
      lastError: n.lastError,
      plannedAt: n.plannedAt.toISOString(),
      sentAt: iso(n.sentAt),
      reason: n.reason,
    });
  });
  r.get('/v1/jobs', allow(...READERS), async (req, res) => {
    const limit = Number((req.query as Record<string, string | undefined>).limit ?? 20);
    res.json(await jobs.overview({ limit }));
  });
  return r;
}
