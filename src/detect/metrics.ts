import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Clock } from '../shared/clock.js';
import type { CrlStatus } from '../revoke/crl-watch.js';

/** What the metrics read at scrape time. */
export interface MetricSources {
  clock: Clock;
  /** The CRL watch's last findings. */
  crls(): readonly CrlStatus[];
}

/**
 * The Prometheus registry behind GET /metrics: process metrics, and gauges computed at scrape
 * time from the services' own state (no bookkeeping on the hot paths).
 */
export function createMetrics(src: MetricSources): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'mqttca_' });
  const labelNames = ['ca_id'] as const;
  const perCa = (name: string, help: string, value: (s: CrlStatus, now: number) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        const now = src.clock.now().getTime();
        for (const s of src.crls()) {
          const v = value(s, now);
          if (v !== undefined) this.set({ ca_id: s.caId }, v);
        }
      },
    });
  perCa('mqttca_crl_seconds_to_next_update', 'Seconds until the nextUpdate of the CA\'s current CRL (negative: expired).', (s, now) => (s.crl ? (s.crl.nextUpdate.getTime() - now) / 1000 : undefined));
  perCa('mqttca_crl_age_seconds', 'Seconds since the thisUpdate of the CA\'s current CRL.', (s, now) => (s.crl ? (now - s.crl.thisUpdate.getTime()) / 1000 : undefined));
  perCa('mqttca_crl_number', 'CRL number of the CA\'s current full CRL.', (s) => (s.crl ? Number(s.crl.crlNumber) : undefined));
  perCa('mqttca_crl_stale', '1 when the CA\'s CRL came due and could not be replaced (an alarm is raised), else 0.', (s) => (s.stale ? 1 : 0));
  return registry;
}
