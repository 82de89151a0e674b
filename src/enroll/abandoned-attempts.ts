import type { Issuance } from '../ca/issuance.js';
import type { Db } from '../store/db.js';
import type { CertificateRow, CertificateStore } from '../store/certificate-store.js';
import type { Clock } from '../shared/clock.js';
import type { ActorContext } from '../shared/actor.js';

/** Clocks of the replicas that wrote a claim, a use and an intent may differ by this much. */
const CLOCK_SLACK_MS = 60_000;

/**
 * What an enrollment whose process died mid-request leaves behind: an Idempotency-Key claimed
 * "in progress", a token use spent, an intent pending, or a certificate recorded whose answer
 * never left. Anything begun `leaseMs` ago and unfinished is taken to be such a leftover; the
 * lease must outlast any live enrollment (the database pool waits up to 60 s for a connection).
 */
export class AbandonedAttempts {
  constructor(
    private readonly db: Db,
    private readonly certificates: CertificateStore,
    private readonly issuance: Issuance,
    private readonly clock: Clock,
    private readonly leaseMs: number,
  ) {}

  /** Whether something begun at `at` and still unfinished is past its lease. */
  isAbandoned(at: Date): boolean {
    return this.clock.now().getTime() - at.getTime() >= this.leaseMs;
  }

  /** Seconds until something begun at `at` is past its lease (at least 1). */
  secondsLeft(at: Date): number {
    return Math.max(1, Math.ceil((at.getTime() + this.leaseMs - this.clock.now().getTime()) / 1000));
  }

  /** The certificate recorded for the device since an attempt began (of that key when given). */
  recordedSince(deviceId: string, begunAt: Date, spkiSha256?: Buffer): Promise<CertificateRow | undefined> {
    return this.certificates.recordedForDevice(this.db, deviceId, new Date(begunAt.getTime() - CLOCK_SLACK_MS), spkiSha256);
  }

  /**
   * Closes the device's intents that are past their lease as failed (audited): a stalled attempt
   * that wakes up later finds its intent closed and releases nothing.
   */
  async close(deviceId: string, ctx: ActorContext): Promise<void> {
    await this.issuance.failAbandoned(this.leaseMs / 2, ctx, deviceId);
  }
}
