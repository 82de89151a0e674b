/**
 * What the services tell the metrics as they work: counts and durations only, never a name or a
 * secret. Domain code sees this port, not prom-client; the composition root hands it the
 * Prometheus-backed one (metrics.ts), and code built without one gets NO_TELEMETRY.
 */
export interface Telemetry {
  /** Certificates committed as issued, by profile. */
  issued(profile: string, count: number): void;
  /** Certificates newly revoked (or put on hold), by reason. */
  revoked(reason: string, count: number): void;
  /** From a revocation's request to this process's OCSP answering revoked and the CRL published. */
  revocationVisible(seconds: number): void;
  /** One OCSP response: its status (a certificate status, or the OCSP error status) and where it came from. */
  ocspAnswered(status: OcspOutcome, source: OcspSource): void;
  /** One security event recorded. */
  securityEvent(kind: string, severity: string): void;
  /** One request refused by a rate limit (api-source, api-key, enroll-source) or by the bound on PKI work in flight (pki). */
  rateLimited(scope: string): void;
  /** One HTTP request answered: its route template (never the raw path), method and status. */
  httpRequest(route: string, method: string, status: number, seconds: number): void;
}

export type OcspOutcome =
  'good' | 'revoked' | 'unknown' | 'several' | 'malformedRequest' | 'internalError' | 'tryLater' | 'sigRequired' | 'unauthorized';

/**
 * memory: this process's cache; stored: the pre-signed store shared by replicas; signed: signed
 * for this request (or for the concurrent one whose fill it joined); none: an error status.
 */
export type OcspSource = 'memory' | 'stored' | 'signed' | 'none';

const noop = () => undefined;

export const NO_TELEMETRY: Telemetry = {
  issued: noop,
  revoked: noop,
  revocationVisible: noop,
  ocspAnswered: noop,
  securityEvent: noop,
  rateLimited: noop,
  httpRequest: noop,
};
