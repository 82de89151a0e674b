import type { Logger } from 'pino';
import type { Issuance } from '../ca/issuance.js';
import type { CrlWatch } from '../revoke/crl-watch.js';
import type { CrlPublisher } from '../revoke/crl-publisher.js';
import type { OcspResponder } from '../revoke/ocsp-responder.js';
import type { OcspResponders } from '../revoke/ocsp-responders.js';
import type { ExpirySweeps } from '../rotate/expiry.js';
import type { Renewals } from '../rotate/renewals.js';
import type { ServiceIdentities } from '../rotate/service-identities.js';
import { serialFromBytes, type Serial } from '../shared/ids.js';
import type { JobPayload, NewJob, QueueDefinition } from './runner.js';

export const HOUSEKEEPING = 'housekeeping';
export const RENEWAL_NOTICES = 'renewal-notices';

/** Intents left pending this long by a process that died mid-issuance are surely orphaned. */
const ABANDONED_INTENT_MS = 5 * 60_000;
const MINUTE = 60_000;

export interface JobServices {
  logger: Logger;
  issuance: Issuance;
  crlWatch: CrlWatch;
  crls: Pick<CrlPublisher, 'pruneSuperseded'>;
  ocsp: OcspResponder;
  ocspResponders: OcspResponders;
  renewals: Renewals;
  sweeps: ExpirySweeps;
  /** The service's own TLS server and broker connector certificates. */
  identities: ServiceIdentities;
  /** Extra scheduled housekeeping (session-key rotation, ...): name → work. */
  extra?: Record<string, { everyMs: number; run(): Promise<unknown> }>;
}

export interface ScheduleOptions {
  renewalPlanEveryMs: number;
  /** The shortest OCSP response validity of any profile: stored responses are re-signed often enough to stay within half of it. */
  ocspShortestValidityMs?: number;
}

/**
 * The queues and what their jobs do. Every processor is thin: it calls one domain service, which
 * re-reads the database, so a job that runs twice does its work once.
 */
export function queueDefinitions(
  s: JobServices,
  enqueue: (queue: string, jobs: NewJob[]) => Promise<void>,
  o: ScheduleOptions,
): QueueDefinition[] {
  const tasks: Record<string, { everyMs: number; run(): Promise<unknown> }> = {
    'plan-renewals': {
      everyMs: o.renewalPlanEveryMs,
      run: async () => {
        const r = await s.renewals.plan();
        // One job per batch. No job ids: a re-driven batch must never be taken for a finished job of the same serials.
        await enqueue(
          RENEWAL_NOTICES,
          r.batches.map((b) => deliverJob(b)),
        );
        return { planned: r.planned, redriven: r.redriven, superseded: r.superseded, jobs: r.batches.length };
      },
    },
    'crl-refresh': {
      everyMs: MINUTE,
      run: async () => {
        const all = await s.crlWatch.check();
        for (const x of all.filter((c) => c.stale))
          s.logger.error(
            { caId: x.caId, crlNumber: x.crl?.crlNumber.toString(), nextUpdate: x.crl?.nextUpdate },
            'CRL is due and could not be replaced',
          );
        const pruned = await s.crls.pruneSuperseded();
        return { crls: all.length, stale: all.filter((c) => c.stale).length, pruned };
      },
    },
    // Every 5 minutes, or a quarter of the shortest validity (a broker's), not less than 15 s:
    // a response is re-signed between half and three quarters of its validity, before any poll.
    'ocsp-refresh': {
      everyMs: Math.max(15_000, Math.min(5 * MINUTE, (o.ocspShortestValidityMs ?? Infinity) / 4)),
      run: async () => ({ resigned: await s.ocsp.refreshDue(20_000) }),
    },
    'responder-renewal': { everyMs: 60 * MINUTE, run: async () => ({ responders: (await s.ocspResponders.renewDue()).length }) },
    // The TLS listeners (each process's own) pick a renewed server certificate up within a minute.
    'service-identity-renewal': {
      everyMs: 60 * MINUTE,
      run: async () => {
        const r = await s.identities.renewDue();
        for (const x of r.renewed) s.logger.info(x, "renewed a certificate of the service's own");
        return { renewed: r.renewed.map((x) => x.name) };
      },
    },
    'intent-sweep': {
      everyMs: MINUTE,
      run: async () => {
        const closed = await s.issuance.failAbandoned(ABANDONED_INTENT_MS, { actor: 'system:recovery' });
        if (closed.length) s.logger.warn({ serials: closed }, 'closed issuance intents abandoned by a stopped process');
        return { closed: closed.length };
      },
    },
    'certificate-expiry': { everyMs: 5 * MINUTE, run: () => s.sweeps.certificates() },
    'token-expiry': { everyMs: 5 * MINUTE, run: () => s.sweeps.tokens() },
    ...s.extra,
  };
  return [
    {
      name: HOUSEKEEPING,
      concurrency: 4,
      attempts: 3,
      backoffMs: 5_000,
      schedules: Object.entries(tasks).map(([name, t]) => ({ name, everyMs: t.everyMs })),
      process: async (name) => {
        const task = tasks[name];
        if (!task) throw new Error(`unknown housekeeping job ${name}`);
        return task.run();
      },
    },
    {
      name: RENEWAL_NOTICES,
      concurrency: 4,
      attempts: 10,
      backoffMs: 2_000,
      process: async (name, payload: JobPayload) => {
        if (name !== 'deliver') throw new Error(`unknown renewal-notices job ${name}`);
        return s.renewals.deliver(serialsOf(payload));
      },
    },
  ];
}

export function deliverJob(batch: Serial[]): NewJob {
  return { name: 'deliver', payload: { serials: batch } };
}

function serialsOf(payload: JobPayload): Serial[] {
  const s = payload.serials;
  if (!Array.isArray(s) || !s.every((x) => typeof x === 'string' && /^[0-9a-f]+$/.test(x)))
    throw new Error('a deliver job carries { serials: hex[] }');
  return s.map((x) => serialFromBytes(Buffer.from(x as string, 'hex')));
}
