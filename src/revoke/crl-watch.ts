import type { Clock } from '../shared/clock.js';
import { partitionKey, type CrlHeader } from '../store/crl-store.js';

/** Where alarms go: the security events (a port, so the revocation room needs nothing of detection). */
export interface AlarmSink {
  record(e: { kind: string; severity: 'warning' | 'critical'; subject: string; details: Record<string, unknown> }): Promise<unknown>;
}

/** What the watch needs of the publisher. */
export interface DueCrls {
  refreshDue(): Promise<{ caId: string; shard: number; crl: CrlHeader | undefined; error?: unknown }[]>;
}

/** One CA's published CRL (or one of its shards') as the last check found it. */
export interface CrlStatus {
  caId: string;
  /** 0: the CA's one CRL; 1..n: a CRL shard. */
  shard: number;
  crl: CrlHeader | undefined;
  /** Past its refresh point and not replaced: the publisher failed. */
  stale: boolean;
}

export interface CrlWatchPolicy {
  /** A CRL with less than this left is due (the publisher's refreshBeforeMs). */
  refreshBeforeMs: number;
  /** A stale CRL with less than this left is a critical alarm, else a warning. */
  criticalBeforeMs: number;
}

/**
 * The scheduled side of the CRL pipeline: replaces every CRL that is due even when nobody fetches
 * it, and raises an alarm (a security event, and `stale` for the metrics) for a CA whose CRL (or a
 * shard of it) came due and could not be replaced — before it expires and Mosquitto starts refusing
 * every client. One alarm per CRL and severity, however often the check runs.
 */
export class CrlWatch {
  private statuses: CrlStatus[] = [];
  private readonly alarmed = new Map<string, string>();

  constructor(
    private readonly crls: DueCrls,
    private readonly alarms: AlarmSink,
    private readonly clock: Clock,
    private readonly policy: CrlWatchPolicy,
  ) {}

  /** The last check's findings (for the metrics). */
  status(): readonly CrlStatus[] {
    return this.statuses;
  }

  /**
   * The stale rule: no CRL, or one past its refresh point (less than refreshBeforeMs left). The
   * check alarms on it after trying to replace the CRL; the revocation health page shows it as is.
   */
  isStale(crl: Pick<CrlHeader, 'nextUpdate'> | undefined, now: Date = this.clock.now()): boolean {
    return !crl || crl.nextUpdate.getTime() - now.getTime() < this.policy.refreshBeforeMs;
  }

  async check(): Promise<readonly CrlStatus[]> {
    const at = this.clock.now();
    const now = at.getTime();
    const stale = (crl: CrlHeader | undefined) => this.isStale(crl, at);
    const results = await this.crls.refreshDue();
    this.statuses = results.map(({ caId, shard, crl }) => ({ caId, shard, crl, stale: stale(crl) }));
    for (const { caId, shard, crl, error } of results) {
      const partition = partitionKey({ caId, shard });
      if (!stale(crl)) {
        this.alarmed.delete(partition);
        continue;
      }
      const left = crl ? crl.nextUpdate.getTime() - now : -Infinity;
      const severity = left < this.policy.criticalBeforeMs ? 'critical' : 'warning';
      const key = `${crl?.crlNumber ?? 'none'}|${severity}`;
      if (this.alarmed.get(partition) === key) continue;
      await this.alarms.record({
        kind: 'crl-stale',
        severity,
        subject: partition,
        details: {
          caId,
          ...(shard === 0 ? {} : { shard }),
          crlNumber: crl ? crl.crlNumber.toString() : null,
          nextUpdate: crl ? crl.nextUpdate.toISOString() : null,
          ...(error ? { error: error instanceof Error ? error.message : String(error) } : {}),
        },
      });
      this.alarmed.set(partition, key);
    }
    return this.statuses;
  }
}
