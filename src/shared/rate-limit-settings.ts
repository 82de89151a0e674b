/** The rate limits as configured (config) and as applied (detect/rate-limits.ts, http/rate-limit.ts). */

/** A sustained rate and the burst allowed above it. */
export interface Limit {
  perSecond: number;
  burst: number;
}

/** api-source and api-key on the API, enroll-source on enrollment. */
export type RateScope = 'api-source' | 'api-key' | 'enroll-source';
