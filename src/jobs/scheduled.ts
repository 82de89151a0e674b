import type { Backups } from '../respond/backups.js';
import type { Idempotency } from '../enroll/idempotency.js';
import type { Approvals } from '../respond/approvals.js';
import type { Revocations } from '../revoke/revocation.js';
import type { CaRollovers } from '../rotate/rollover.js';
import type { SessionKeys } from '../rotate/session-keys.js';
import { deliverJob, RENEWAL_NOTICES } from './queues.js';
import type { NewJob } from './runner.js';

export interface ScheduledServices {
  sessionKeys: Pick<SessionKeys, 'rotateDue'>;
  approvals: Pick<Approvals, 'expireDue'>;
  rollovers: Pick<CaRollovers, 'tick'>;
  backups: Pick<Backups, 'create' | 'prune'>;
  revocations: Pick<Revocations, 'resumeLapsed'>;
  /** The API's Idempotency-Keys, forgotten once expired. */
  apiIdempotency?: Pick<Idempotency, 'purgeApiKeys'>;
}

export interface ScheduledOptions {
  sessionKeyRotateEveryMs: number;
  rolloverTickMs: number;
  /** How often runs whose lease lapsed are looked for: the lease (JOB_LOCK_SECONDS). */
  bulkRevocationLeaseMs: number;
  /** 0: no scheduled backups. */
  backupEveryMs: number;
  /** How long the API's Idempotency-Keys live (IDEMPOTENCY_KEY_TTL_HOURS). */
  idempotencyKeyTtlMs?: number;
}

/** The housekeeping jobs of rotation, the two-person rule and backups, beside those of queueDefinitions (its `extra`). */
export function scheduledTasks(
  s: ScheduledServices,
  enqueue: (queue: string, jobs: NewJob[]) => Promise<void>,
  o: ScheduledOptions,
): Record<string, { everyMs: number; run(): Promise<unknown> }> {
  return {
    'session-key-rotation': { everyMs: o.sessionKeyRotateEveryMs, run: () => s.sessionKeys.rotateDue() },
    // Proposals nobody approved in APPROVAL_TTL_HOURS expire (each audited).
    'approval-expiry': { everyMs: 60_000, run: () => s.approvals.expireDue() },
    // Bulk revocations left running by a process that died (their lease lapsed) are taken over and finished.
    'bulk-revocation-resume': {
      everyMs: o.bulkRevocationLeaseMs,
      run: async () => ({ resumed: (await s.revocations.resumeLapsed()).length }),
    },
    // The API's Idempotency-Keys past IDEMPOTENCY_KEY_TTL_HOURS are deleted (a claim finds an expired one itself; this keeps the table small).
    ...(s.apiIdempotency && o.idempotencyKeyTtlMs
      ? {
          'idempotency-key-expiry': {
            everyMs: 3_600_000,
            run: async () => ({ deleted: await s.apiIdempotency!.purgeApiKeys(o.idempotencyKeyTtlMs!) }),
          },
        }
      : {}),
    // Waves of issuing-CA rollovers, delivered by the same jobs as planned notices; retires old CAs whose last certificate expired.
    'rollover-waves': {
      everyMs: o.rolloverTickMs,
      run: async () => {
        const r = await s.rollovers.tick();
        await enqueue(
          RENEWAL_NOTICES,
          r.batches.map((b) => deliverJob(b)),
        );
        return {
          waves: r.waves,
          notices: r.batches.reduce((n, b) => n + b.length, 0),
          jobs: r.batches.length,
          done: r.done.length,
          retired: r.retired.length,
        };
      },
    },
    // Scheduled backups (BACKUP_EVERY_HOURS > 0), then the files beyond BACKUP_KEEP pruned.
    ...(o.backupEveryMs > 0
      ? {
          backup: {
            everyMs: o.backupEveryMs,
            run: async () => {
              const b = await s.backups.create({ actor: 'system:schedule' });
              const p = await s.backups.prune({ actor: 'system:schedule' });
              return { id: b.id, sizeBytes: b.sizeBytes, pruned: p.pruned.length };
            },
          },
        }
      : {}),
  };
}
