import type { Clock } from '../shared/clock.js';
import type { CrlHeader } from '../store/crl-store.js';
import type { OcspOutcome, OcspSource } from '../shared/telemetry.js';

/** What the health report reads: the published CRLs, the CRL watch's stale rule, the process's telemetry. */
export interface RevocationHealthSources {
  clock: Clock;
  /** The signing CAs (id and name) whose partitions are listed. */
  cas(): Promise<{ id: string; name: string }[]>;
  /** Every partition of every signing CA with its newest full and delta CRL, building nothing. */
  published(): Promise<{ caId: string; shard: number; full: CrlHeader | undefined; delta: CrlHeader | undefined }[]>;
  /** The CRL watch's rule (CrlWatch.isStale): the one behind the crl-stale alarm and mqttca_crl_stale. */
  isStale(crl: CrlHeader | undefined, now: Date): boolean;
  /** When the telemetry's counters started. */
  since: Date;
  ocspAnswers(): Promise<{ status: OcspOutcome; source: OcspSource; count: number }[]>;
  /** The last revocations' time to visibility (null before the first). */
  visibleSummary(): { count: number; p50Seconds: number; p99Seconds: number } | null;
  visibleHistogram(): Promise<{ count: number; sumSeconds: number; buckets: { le: number; count: number }[] }>;
}

export interface CrlPartitionHealth {
  caId: string;
  caName: string;
  /** 0: the CA's one CRL; 1..n: a CRL shard. */
  shard: number;
  full: {
    crlNumber: string;
    thisUpdate: string;
    nextUpdate: string;
    ageSeconds: number;
    secondsToNextUpdate: number;
    entries: number;
  } | null;
  delta: { crlNumber: string; baseNumber: string | null; thisUpdate: string; nextUpdate: string; entries: number } | null;
  stale: boolean;
}

export interface RevocationHealth {
  at: string;
  crls: CrlPartitionHealth[];
  ocsp: { since: string; total: number; answers: { status: OcspOutcome; source: OcspSource; count: number }[] };
  revocationVisible: {
    since: string;
    count: number;
    sumSeconds: number;
    buckets: { le: number; count: number }[];
    /** Over the last (up to 1024) revocations of this process. */
    recent: { count: number; p50Seconds: number; p99Seconds: number } | null;
  };
}

const seconds = (ms: number) => Math.round(ms / 1000);

/**
 * Revocation health (issue #25): each signing CA's CRLs as published (number, age, next update,
 * entries, its newest delta) with the stale flag of the CRL watch's own rule, and this process's
 * OCSP answers and revoke-to-visible latency from the telemetry that /metrics exports. Reads only:
 * a stale CRL is reported, not rebuilt (the watch and the publisher do that).
 */
export class RevocationHealthReport {
  constructor(private readonly src: RevocationHealthSources) {}

  async read(): Promise<RevocationHealth> {
    const now = this.src.clock.now();
    const [cas, published, answers, histogram] = await Promise.all([
      this.src.cas(),
      this.src.published(),
      this.src.ocspAnswers(),
      this.src.visibleHistogram(),
    ]);
    const names = new Map(cas.map((c) => [c.id, c.name]));
    const crls = published
      .map(({ caId, shard, full, delta }): CrlPartitionHealth => ({
        caId,
        caName: names.get(caId) ?? caId,
        shard,
        full: full
          ? {
              crlNumber: full.crlNumber.toString(),
              thisUpdate: full.thisUpdate.toISOString(),
              nextUpdate: full.nextUpdate.toISOString(),
              ageSeconds: seconds(now.getTime() - full.thisUpdate.getTime()),
              secondsToNextUpdate: seconds(full.nextUpdate.getTime() - now.getTime()),
              entries: full.entries,
            }
          : null,
        delta: delta
          ? {
              crlNumber: delta.crlNumber.toString(),
              baseNumber: delta.baseNumber?.toString() ?? null,
              thisUpdate: delta.thisUpdate.toISOString(),
              nextUpdate: delta.nextUpdate.toISOString(),
              entries: delta.entries,
            }
          : null,
        stale: this.src.isStale(full, now),
      }))
      .sort((a, b) => a.caName.localeCompare(b.caName) || a.caId.localeCompare(b.caId) || a.shard - b.shard);
    const since = this.src.since.toISOString();
    return {
      at: now.toISOString(),
      crls,
      ocsp: {
        since,
        total: answers.reduce((n, a) => n + a.count, 0),
        answers: [...answers].sort((a, b) => a.status.localeCompare(b.status) || a.source.localeCompare(b.source)),
      },
      revocationVisible: { since, ...histogram, recent: this.src.visibleSummary() },
    };
  }
}
