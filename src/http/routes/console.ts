import { Router } from 'express';
import type { AuthenticatedSession, ConsoleSessions } from '../../access/console-sessions.js';
import type { ApiKeyWatch } from '../../detect/api-key-watch.js';
import { badRequest, DomainError } from '../../shared/errors.js';
import { refusedKey } from '../auth.js';
import { checkSameOrigin, clearSessionCookie, sessionIdOf, setSessionCookie } from '../console-session.js';
import { sourceOf } from '../request-context.js';

const sessionBody = (s: AuthenticatedSession | Omit<AuthenticatedSession, 'csrfMatches'>) => ({
  keyId: s.keyId,
  name: s.name,
  role: s.role,
  createdAt: s.createdAt,
  idleExpiresAt: s.idleExpiresAt,
  expiresAt: s.expiresAt,
  csrfToken: s.csrfToken,
});

/**
 * The web console's session: POST signs in with an API key (no other credential), GET says who the
 * session acts as (and hands its CSRF token again after a reload), DELETE signs out. GET and DELETE
 * authenticate with the session cookie like any /v1 route (DELETE with the CSRF token too).
 */
export function consoleRoutes(sessions: ConsoleSessions, watch: ApiKeyWatch): Router {
  const r = Router();
  r.post('/v1/console/session', async (req, res) => {
    const crossSite = checkSameOrigin(req);
    if (crossSite) throw crossSite;
    const apiKey = (req.body as { apiKey?: unknown } | undefined)?.apiKey;
    if (typeof apiKey !== 'string') throw badRequest('apiKey is required');
    const requestId = String(res.locals.requestId ?? '');
    const started = await sessions.signIn(apiKey, { requestId, source: sourceOf(req) });
    if (!started) throw await refusedKey(watch, req, requestId, apiKey);
    await watch.used(started.session.keyId, sourceOf(req), requestId);
    setSessionCookie(req, res, started.sessionId, (Date.parse(started.session.expiresAt) - Date.parse(started.session.createdAt)) / 1000);
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json(sessionBody({ ...started.session, csrfToken: started.csrfToken }));
  });
  r.get('/v1/console/session', (_req, res) => {
    const s = res.locals.consoleSession as AuthenticatedSession | undefined;
    if (!s) throw new DomainError('Unauthenticated', 'no console session: this route answers the session cookie only');
    res.setHeader('Cache-Control', 'no-store');
    res.json(sessionBody(s));
  });
  r.delete('/v1/console/session', async (req, res) => {
    const id = sessionIdOf(req);
    if (!res.locals.consoleSession || id === undefined)
      throw new DomainError('Unauthenticated', 'no console session: this route answers the session cookie only');
    await sessions.signOut(id, { requestId: String(res.locals.requestId ?? '') });
    clearSessionCookie(req, res);
    res.status(204).end();
  });
  return r;
}
