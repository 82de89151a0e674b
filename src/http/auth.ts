import type { RequestHandler } from 'express';
import type { ApiKeyService, Role } from '../access/api-keys.js';
import { DomainError } from '../shared/errors.js';

export interface Principal {
  keyId: string;
  name: string;
  role: Role;
}

/** The actor name written to the audit log. */
export const actorOf = (p: Principal) => `api-key:${p.keyId}`;

/** Bearer API key → res.locals.principal, or 401. */
export function authenticate(apiKeys: ApiKeyService): RequestHandler {
  return async (req, res, next) => {
    const header = req.headers.authorization;
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!match) return next(new DomainError('Unauthenticated', 'an API key is required: Authorization: Bearer <key>'));
    const key = await apiKeys.authenticate(match[1]!);
    if (!key) return next(new DomainError('Unauthenticated', 'the API key is not valid'));
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
