/** The one domain error type. Only the HTTP edge turns it into problem+json. */
export type ErrorKind =
  | 'BadRequest'
  | 'BadCsr'
  | 'BadKey'
  | 'PolicyViolation'
  | 'NotFound'
  | 'Conflict'
  | 'AlreadyRevoked'
  | 'Unauthenticated'
  | 'Forbidden'
  | 'PayloadTooLarge'
  | 'RateLimited'
  | 'Unavailable'
  | 'Internal';

export class DomainError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

export const badRequest = (msg: string, details?: Record<string, unknown>) => new DomainError('BadRequest', msg, details);
export const notFound = (msg: string) => new DomainError('NotFound', msg);
export const conflict = (msg: string) => new DomainError('Conflict', msg);
export const forbidden = (msg: string) => new DomainError('Forbidden', msg);
export const policyViolation = (msg: string, details?: Record<string, unknown>) => new DomainError('PolicyViolation', msg, details);
export const badKey = (msg: string) => new DomainError('BadKey', msg);

export function isDomainError(e: unknown): e is DomainError {
  return e instanceof DomainError;
}
