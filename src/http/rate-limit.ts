import type { Request, RequestHandler, Response } from 'express';
import type { RateLimits } from '../detect/rate-limits.js';
import type { RateScope } from '../shared/rate-limit-settings.js';
import { DomainError } from '../shared/errors.js';

const WHAT: Record<RateScope, string> = {
  'api-source': 'from this address',
  'api-key': 'with this API key',
  'enroll-source': 'enrollments from this address',
};

/** 429 (problem+json, Retry-After) once the request's bucket in `scope` is empty. */
export function rateLimited(limits: RateLimits, scope: RateScope, keyOf: (req: Request, res: Response) => string): RequestHandler {
  return (req, res, next) => {
    limits
      .check(scope, keyOf(req, res))
      .then(
        (wait) =>
          next(
            wait > 0
              ? new DomainError('RateLimited', `too many requests ${WHAT[scope]}; retry in ${wait} s`, { retryAfterSeconds: wait })
              : undefined,
          ),
        next,
      );
  };
}
