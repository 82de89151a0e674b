import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Credential } from '../enroll/methods.js';
import { parseBasicAuth } from '../enroll/est/formats.js';
import type { Telemetry } from '../detect/telemetry.js';
import type { TrustedProxies } from '../shared/trusted-proxies.js';

const REQUEST_ID_RE = /^[A-Za-z0-9._-]{8,128}$/;

/** The request's id: the caller's X-Request-Id when it is sane, else a new one; echoed in the response. */
export function assignRequestId(req: IncomingMessage, res: ServerResponse): string {
  const given = req.headers['x-request-id'];
  const id = typeof given === 'string' && REQUEST_ID_RE.test(given) ? given : randomUUID();
  res.setHeader('X-Request-Id', id);
  return id;
}

/**
 * When the response is finished: one access-log line (method, path and status only, as headers
 * and bodies may carry keys and tokens) and the request's latency under its route template.
 */
export function recordWhenFinished(
  observers: { logger: Logger; telemetry: Telemetry },
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
  route: () => string,
): void {
  const start = process.hrtime.bigint();
  const log = observers.logger.isLevelEnabled('info');
  res.on('finish', () => {
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    observers.telemetry.httpRequest(route(), req.method ?? 'GET', res.statusCode, ms / 1000);
    if (log) observers.logger.info({ requestId, method: req.method, path: (req.url ?? '').split('?')[0], status: res.statusCode, ms }, 'request');
  });
}

/** Client addresses read from X-Forwarded-For, by request (only when the peer is a trusted proxy). */
const forwardedClients = new WeakMap<IncomingMessage, string>();

/**
 * Settles the request's client address once, as it arrives (both listeners' handler does it):
 * the peer, or behind a trusted proxy the client it forwarded for (TrustedProxies.clientOf).
 */
export function resolveClientAddress(req: IncomingMessage, proxies: TrustedProxies): void {
  if (!proxies.any) return;
  const peer = req.socket.remoteAddress ?? 'unknown';
  const forwarded = req.headers['x-forwarded-for'];
  const client = proxies.clientOf(peer, Array.isArray(forwarded) ? forwarded.join(',') : forwarded);
  if (client !== peer) forwardedClients.set(req, client);
}

/** The client address every rate limit, source block and security event goes by. */
export const sourceOf = (req: IncomingMessage) => forwardedClients.get(req) ?? req.socket.remoteAddress ?? 'unknown';

const SIGNED_RENEWAL_RE = /^MQTT-CA-Renewal\s+cert="([A-Za-z0-9+/=_-]+)",\s*signed-at="([^"]{1,40})",\s*signature="([A-Za-z0-9+/=_-]+)"\s*$/;

/**
 * The enrollment credential a request carries: an enrollment token (Bearer), HTTP Basic (EST:
 * the token as password), a signed renewal (MQTT-CA-Renewal: the current certificate and a
 * signature by its key, for clients behind a TLS-terminating proxy), or else the TLS client certificate.
 */
export function credentialOf(req: IncomingMessage): Credential | undefined {
  const h = req.headers.authorization;
  if (h) {
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(h);
    if (bearer) return { kind: 'bearer', value: bearer[1]! };
    const signed = SIGNED_RENEWAL_RE.exec(h);
    if (signed) return { kind: 'signed-renewal', certificateDer: Buffer.from(signed[1]!, 'base64'), signedAt: signed[2]!, signature: Buffer.from(signed[3]!, 'base64') };
    const basic = parseBasicAuth(h);
    return basic ? { kind: 'basic', ...basic } : undefined;
  }
  const socket = req.socket as TLSSocket;
  if (socket.encrypted) {
    const peer = socket.getPeerCertificate();
    if (peer && Buffer.isBuffer(peer.raw)) return { kind: 'client-certificate', der: peer.raw };
  }
  return undefined;
}
