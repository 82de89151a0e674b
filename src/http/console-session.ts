import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { DomainError } from '../shared/errors.js';

/** The web console's session cookie (HttpOnly: page scripts never see it). */
export const SESSION_COOKIE = 'mqca_session';

/** Methods that change nothing: no CSRF token needed. Everything else is state-changing. */
export const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The session id in the request's Cookie header, or undefined. Only the first mqca_session counts. */
export function sessionIdOf(req: IncomingMessage): string | undefined {
  const header = req.headers.cookie;
  if (typeof header !== 'string' || header.length > 8192) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === SESSION_COOKIE) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Whether the request reached us over TLS (the cookie is then marked Secure). */
const overTls = (req: IncomingMessage) => Boolean((req.socket as TLSSocket).encrypted);

/** Sets the session cookie: HttpOnly, SameSite=Strict, Path=/, Secure over TLS, for the session's absolute lifetime. */
export function setSessionCookie(req: IncomingMessage, res: ServerResponse, sessionId: string, maxAgeSeconds: number): void {
  const attrs = [
    `${SESSION_COOKIE}=${sessionId}`,
    'Path=/',
    'HttpOnly',
    'SameSite=Strict',
    `Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}`,
  ];
  if (overTls(req)) attrs.push('Secure');
  res.setHeader('Set-Cookie', attrs.join('; '));
}

/** Clears the session cookie in the browser. */
export function clearSessionCookie(req: IncomingMessage, res: ServerResponse): void {
  const attrs = [`${SESSION_COOKIE}=`, 'Path=/', 'HttpOnly', 'SameSite=Strict', 'Max-Age=0'];
  if (overTls(req)) attrs.push('Secure');
  res.setHeader('Set-Cookie', attrs.join('; '));
}

/**
 * A 403 for a request a browser sent from another site, or undefined: `Sec-Fetch-Site`, when the
 * browser sends it, must be `same-origin`; `Origin`, when sent, must name this host. Browsers
 * without either header are left to SameSite=Strict and the CSRF token.
 */
export function checkSameOrigin(req: IncomingMessage): DomainError | undefined {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin')
    return new DomainError('Forbidden', `a console request must come from the console itself (Sec-Fetch-Site: ${String(site)})`);
  const origin = req.headers.origin;
  if (origin !== undefined) {
    let host: string | undefined;
    try {
      host = new URL(origin).host;
    } catch {
      host = undefined;
    }
    if (host === undefined || host !== req.headers.host)
      return new DomainError('Forbidden', 'a console request must come from the console itself (Origin does not match Host)');
  }
  return undefined;
}
