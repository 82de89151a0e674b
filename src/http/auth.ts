import type { RequestHandler } from 'express';
import { issuedKeyId, type ApiKeyService, type Role } from '../access/api-keys.js';
import type { ApiKeyWatch } from '../detect/api-key-watch.js';
import { sourceOf } from './request-context.js';
import { DomainError } from '../shared/errors.js';

export interface Principal {
  keyId: string;
  name: string;
  role: Role;
}

/** The actor name written to the audit log. */
export const actorOf = (p: Principal) => `api-key:${p.keyId}`;

/**
 * Bearer API key → res.locals.principal, or 401. A wrong key is told to the watch (a security
 * event the failing-source rule counts); from an address that rule blocked, a wrong key gets 429
 * and is not recorded again. A valid key passes even from a blocked address: an operator behind
 * the same gateway as a failing device keeps the API to answer the incident with.
 */
export function authenticate(apiKeys: ApiKeyService, watch: ApiKeyWatch): RequestHandler {
  return async (req, res, next) => {
    const header = req.headers.authorization;
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!match) return next(new DomainError('Unauthenticated', 'an API key is required: Authorization: Bearer <key>'));
    const source = sourceOf(req);
    const requestId = String(res.locals.requestId ?? '');
    const key = await apiKeys.authenticate(match[1]!);
    if (!key) {
      const wait = watch.retryAfter(source);
      if (wait > 0)
        return next(
          new DomainError('RateLimited', `this address is blocked after repeated failures; retry in ${wait} s`, {
            retryAfterSeconds: wait,
          }),
        );
      await watch.failed(source, requestId, issuedKeyId(match[1]!));
      return next(new DomainError('Unauthenticated', 'the API key is not valid'));
    }
    await watch.used(key.id, source, requestId);
    res.locals.principal = { keyId: key.id, name: key.name, role: key.role } satisfies Principal;
    next();
  };
}

/** 403 unless the caller's role is one of these (admin may do everything). */
export function allow(...roles: Role[]): RequestHandler {
  return (_req, res, next) => {
    const p = res.locals.principal as Principal | undefined;
    if (!p) return next(new DomainError('Unauthenticated', 'an API key is required'));
    if (p.role === 'admin' || roles.includes(p.role)) return next();
    next(new DomainError('Forbidden', `the ${p.role} role may not do this`));
  };
}

export const READ_ROLES: Role[] = ['operator', 'provisioner', 'auditor'];
