import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Clock } from '../shared/clock.js';
import type { CrlStatus } from '../revoke/crl-watch.js';
import type { JobsOverview } from '../jobs/runner.js';
import type { OcspOutcome, OcspSource, Telemetry } from '../shared/telemetry.js';

/** What the metrics read at scrape time. */
export interface MetricSources {
  clock: Clock;
  /** The CRL watch's last findings. */
  crls(): readonly CrlStatus[];
  /** The job queues' counts by state. */
  jobs(): Promise<JobsOverview>;
}

/** Revocations whose time to visibility the posture report's quantiles are taken over. */
const VISIBLE_SAMPLES = 1024;
const SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The Prometheus registry behind GET /metrics: process metrics, counters and histograms the
 * services feed through the Telemetry port, and gauges read at scrape time from the services'
 * own state (CRLs, job queues). Labels are bounded sets (profiles, reasons, statuses, route
 * templates), never serials, device ids or addresses.
 */
export class ServiceMetrics implements Telemetry {
  readonly registry = new Registry();
  private readonly issuedTotal: Counter<'profile'>;
  private readonly revokedTotal: Counter<'reason'>;
  private readonly revocationVisibleSeconds: Histogram;
  private readonly ocspTotal: Counter<'status' | 'source'>;
  private readonly securityEventsTotal: Counter<'kind' | 'severity'>;
  private readonly httpSeconds: Histogram<'route' | 'method' | 'status'>;
  private readonly rateLimitedTotal: Counter<'scope'>;
  private readonly visibleSamples: number[] = [];
  private statusAnswers = 0;
  /** When the counters started (this process's start): what "since" means for them. */
  readonly startedAt: Date;

  constructor(private readonly src: MetricSources) {
    this.startedAt = src.clock.now();
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'mqttca_' });
    this.issuedTotal = new Counter({
      name: 'mqttca_certificates_issued_total',
      help: 'Certificates issued (committed), by profile.',
      labelNames: ['profile'],
      registers,
    });
    this.revokedTotal = new Counter({
      name: 'mqttca_certificates_revoked_total',
      help: 'Certificates revoked or put on hold, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.revocationVisibleSeconds = new Histogram({
      name: 'mqttca_revocation_visible_seconds',
      help: 'From a revocation request to OCSP answering revoked and the CRL published.',
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.ocspTotal = new Counter({
      name: 'mqttca_ocsp_responses_total',
      help: 'OCSP responses, by certificate status (or OCSP error status) and source: memory (cache hit), stored (pre-signed store), signed (signed for the request), none (error).',
      labelNames: ['status', 'source'],
      registers,
    });
    this.securityEventsTotal = new Counter({
      name: 'mqttca_security_events_total',
      help: 'Security events recorded, by kind and severity.',
      labelNames: ['kind', 'severity'],
      registers,
    });
    this.httpSeconds = new Histogram({
      name: 'mqttca_http_request_duration_seconds',
      help: 'REST and EST request latency, by route template, method and status.',
      labelNames: ['route', 'method', 'status'],
      buckets: SECONDS_BUCKETS,
      registers,
    });
    this.rateLimitedTotal = new Counter({
      name: 'mqttca_rate_limited_total',
      help: 'Requests refused by a rate limit (api-source, api-key, enroll-source) or by the bound on PKI work in flight (pki).',
      labelNames: ['scope'],
      registers,
    });
    this.crlGauges();
    this.jobGauges();
  }

  /** The last revocations' time to visibility in this process (for the posture report); null before the first. */
  revocationVisibleSummary(): { count: number; p50Seconds: number; p99Seconds: number } | null {
    if (this.visibleSamples.length === 0) return null;
    const sorted = [...this.visibleSamples].sort((x, y) => x - y);
    const q = (f: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))]! * 1000) / 1000;
    return { count: sorted.length, p50Seconds: q(0.5), p99Seconds: q(0.99) };
  }

  rateLimited(scope: string): void {
    this.rateLimitedTotal.inc({ scope });
  }

  issued(profile: string, count: number): void {
    this.issuedTotal.inc({ profile }, count);
  }

  revoked(reason: string, count: number): void {
    this.revokedTotal.inc({ reason }, count);
  }

  revocationVisible(seconds: number): void {
    this.revocationVisibleSeconds.observe(seconds);
    this.visibleSamples.push(seconds);
    if (this.visibleSamples.length > VISIBLE_SAMPLES) this.visibleSamples.shift();
  }

  ocspAnswered(status: OcspOutcome, source: OcspSource): void {
    this.ocspTotal.inc({ status, source });
    if (status === 'good' || status === 'revoked' || status === 'unknown' || status === 'several') this.statusAnswers++;
  }

  /** OCSP responses this process gave since it started, by status and source (the counter behind mqttca_ocsp_responses_total). */
  async ocspAnswers(): Promise<{ status: OcspOutcome; source: OcspSource; count: number }[]> {
    return (await this.ocspTotal.get()).values
      .filter((v) => v.value > 0)
      .map((v) => ({ status: v.labels.status as OcspOutcome, source: v.labels.source as OcspSource, count: v.value }));
  }

  /** The revoke-to-visible histogram of this process (mqttca_revocation_visible_seconds): its count, sum and cumulative buckets. */
  async revocationVisibleHistogram(): Promise<{ count: number; sumSeconds: number; buckets: { le: number; count: number }[] }> {
    const values = (await this.revocationVisibleSeconds.get()).values;
    const named = (suffix: string) => values.filter((v) => v.metricName?.endsWith(suffix));
    return {
      count: named('_count')[0]?.value ?? 0,
      sumSeconds: named('_sum')[0]?.value ?? 0,
      buckets: named('_bucket')
        .filter((v) => v.labels.le !== '+Inf')
        .map((v) => ({ le: Number(v.labels.le), count: v.value })),
    };
  }

  /** OCSP answers about a certificate's status (not errors) in this process: brokers checking the certificates presented to them. */
  ocspStatusAnswers(): number {
    return this.statusAnswers;
  }

  securityEvent(kind: string, severity: string): void {
    this.securityEventsTotal.inc({ kind, severity });
  }

  httpRequest(route: string, method: string, status: number, seconds: number): void {
    this.httpSeconds.observe({ route, method, status: String(status) }, seconds);
  }

  private crlGauges(): void {
    const src = this.src;
    const perCa = (name: string, help: string, value: (s: CrlStatus, now: number) => number | undefined) =>
      new Gauge({
        name,
        help,
        labelNames: ['ca_id', 'shard'],
        registers: [this.registry],
        collect() {
          this.reset();
          const now = src.clock.now().getTime();
          for (const s of src.crls()) {
            const v = value(s, now);
            if (v !== undefined) this.set({ ca_id: s.caId, shard: String(s.shard) }, v);
          }
        },
      });
    perCa('mqttca_crl_seconds_to_next_update', "Seconds until the nextUpdate of the CA's current CRL (negative: expired).", (s, now) =>
      s.crl ? (s.crl.nextUpdate.getTime() - now) / 1000 : undefined,
    );
    perCa('mqttca_crl_age_seconds', "Seconds since the thisUpdate of the CA's current CRL.", (s, now) =>
      s.crl ? (now - s.crl.thisUpdate.getTime()) / 1000 : undefined,
    );
    perCa('mqttca_crl_number', "CRL number of the CA's current full CRL.", (s) => (s.crl ? Number(s.crl.crlNumber) : undefined));
    perCa('mqttca_crl_stale', "1 when the CA's CRL came due and could not be replaced (an alarm is raised), else 0.", (s) =>
      s.stale ? 1 : 0,
    );
  }

  /** Queue depth and dead-lettered jobs, read from the runner at scrape time; while the queue (Redis) is down, mqttca_job_queue_up is 0. */
  private jobGauges(): void {
    const src = this.src;
    // The registry collects its metrics concurrently: both gauges read the one overview of a scrape.
    let scrape: Promise<JobsOverview | undefined> | undefined;
    const overview = () =>
      (scrape ??= (async () => {
        try {
          return await src.jobs();
        } catch {
          return undefined;
        } finally {
          setImmediate(() => (scrape = undefined));
        }
      })());
    new Gauge({
      name: 'mqttca_job_queue_up',
      help: '1 when the job queue answered this scrape, else 0.',
      registers: [this.registry],
      async collect() {
        this.set((await overview()) ? 1 : 0);
      },
    });
    new Gauge({
      name: 'mqttca_job_queue_jobs',
      help: 'Jobs per queue and state (waiting, delayed and active: the depth; failed: failed for good after every retry).',
      labelNames: ['queue', 'state'],
      registers: [this.registry],
      async collect() {
        this.reset();
        for (const q of (await overview())?.queues ?? []) {
          for (const [state, n] of Object.entries(q.counts)) this.set({ queue: q.name, state }, n);
        }
      },
    });
  }
}
