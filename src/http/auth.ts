import type { Request, RequestHandler } from 'express';
import { issuedKeyId, type ApiKeyService, type Role } from '../access/api-keys.js';
import type { ConsoleSessions } from '../access/console-sessions.js';
import type { ApiKeyWatch } from '../detect/api-key-watch.js';
import { sourceOf } from './request-context.js';
import { DomainError } from '../shared/errors.js';
import { checkSameOrigin, SAFE_METHODS, sessionIdOf } from './console-session.js';

export interface Principal {
  keyId: string;
  name: string;
  role: Role;
  /** Set when the request came with a web console session cookie instead of a Bearer key. */
  via?: 'session';
}

/**
 * A wrong API key: told to the watch (a security event the failing-source rule counts) and
 * answered 401; from an address that rule blocked, 429 and not recorded again.
 */
export async function refusedKey(watch: ApiKeyWatch, req: Request, requestId: string, presented: string): Promise<DomainError> {
  const source = sourceOf(req);
  const wait = watch.retryAfter(source);
  if (wait > 0)
    return new DomainError('RateLimited', `this address is blocked after repeated failures; retry in ${wait} s`, {
      retryAfterSeconds: wait,
    });
  await watch.failed(source, requestId, issuedKeyId(presented));
  return new DomainError('Unauthenticated', 'the API key is not valid');
}

/** The actor name written to the audit log. */
export const actorOf = (p: Principal) => `api-key:${p.keyId}`;

/**
 * Bearer API key → res.locals.principal, or 401. A wrong key is told to the watch (a security
 * event the failing-source rule counts); from an address that rule blocked, a wrong key gets 429
 * and is not recorded again. A valid key passes even from a blocked address: an operator behind
 * the same gateway as a failing device keeps the API to answer the incident with.
 */
export function authenticate(apiKeys: ApiKeyService, watch: ApiKeyWatch, sessions?: ConsoleSessions): RequestHandler {
  return async (req, res, next) => {
    const header = req.headers.authorization;
    const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    // No Authorization header at all: a web console session cookie may stand in for the key.
    const sessionId = header === undefined && sessions ? sessionIdOf(req) : undefined;
    if (sessionId !== undefined) return next(await sessionPrincipal(sessions!, req, res, sessionId));
    if (!match) return next(new DomainError('Unauthenticated', 'an API key is required: Authorization: Bearer <key>'));
    const source = sourceOf(req);
    const requestId = String(res.locals.requestId ?? '');
    const key = await apiKeys.authenticate(match[1]!);
    if (!key) return next(await refusedKey(watch, req, requestId, match[1]!));
    await watch.used(key.id, source, requestId);
    res.locals.principal = { keyId: key.id, name: key.name, role: key.role } satisfies Principal;
    next();
  };
}

/**
 * A console session → res.locals.principal (acting as its API key, with its role), or the error to
 * answer: 401 when the session is unknown, ended or its key revoked; 403 for a state-changing
 * request without the session's CSRF token in X-CSRF-Token, or sent from another site.
 */
async function sessionPrincipal(
  sessions: ConsoleSessions,
  req: Request,
  res: Parameters<RequestHandler>[1],
  sessionId: string,
): Promise<DomainError | undefined> {
  const session = await sessions.authenticate(sessionId);
  if (!session) return new DomainError('Unauthenticated', 'the console session has ended or is not valid: sign in again');
  if (!SAFE_METHODS.has(req.method)) {
    const crossSite = checkSameOrigin(req);
    if (crossSite) return crossSite;
    const token = req.headers['x-csrf-token'];
    if (!session.csrfMatches(typeof token === 'string' ? token : undefined))
      return new DomainError('Forbidden', 'a state-changing request with a console session needs its CSRF token in X-CSRF-Token');
  }
  res.locals.principal = { keyId: session.keyId, name: session.name, role: session.role, via: 'session' } satisfies Principal;
  res.locals.consoleSession = session;
  return undefined;
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
