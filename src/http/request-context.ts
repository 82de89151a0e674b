import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import type { Credential } from '../enroll/methods.js';
import { parseBasicAuth } from '../enroll/est/formats.js';
import type { Telemetry } from '../shared/telemetry.js';
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
    if (log)
      observers.logger.info({ requestId, method: req.method, path: (req.url ?? '').split('?')[0], status: res.statusCode, ms }, 'request');
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

const SIGNED_REQUEST_RE =
  /^(MQTT-CA-Renewal|MQTT-CA-SessionKeys)\s+cert="([A-Za-z0-9+/=_-]+)",\s*signed-at="([^"]{1,40})",\s*signature="([A-Za-z0-9+/=_-]+)"\s*$/;

/**
 * A device's signed request behind a TLS-terminating proxy: `Authorization: <scheme> cert="<base64
 * DER>", signed-at="<time>", signature="<base64>"` (MQTT-CA-Renewal for renewals and staged
 * pickups, MQTT-CA-SessionKeys for session-key fetches); what it signs is the domain's
 * (enroll/device-certificate-auth.ts).
 */
export function signedRequestOf(
  header: string,
  scheme: 'MQTT-CA-Renewal' | 'MQTT-CA-SessionKeys',
): { certificateDer: Buffer; signedAt: string; signature: Buffer } | undefined {
  const m = SIGNED_REQUEST_RE.exec(header);
  return m && m[1] === scheme
    ? { certificateDer: Buffer.from(m[2]!, 'base64'), signedAt: m[3]!, signature: Buffer.from(m[4]!, 'base64') }
    : undefined;
}

/** The TLS client certificate the peer presented (the TLS listener asks every client for one), if any. */
export function clientCertificateOf(req: IncomingMessage): Buffer | undefined {
  const socket = req.socket as TLSSocket;
  if (!socket.encrypted) return undefined;
  const peer = socket.getPeerCertificate();
  return peer && Buffer.isBuffer(peer.raw) ? peer.raw : undefined;
}

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
    const signed = signedRequestOf(h, 'MQTT-CA-Renewal');
    if (signed) return { kind: 'signed-renewal', ...signed };
    const basic = parseBasicAuth(h);
    return basic ? { kind: 'basic', ...basic, overTls: (req.socket as TLSSocket).encrypted === true } : undefined;
  }
  const der = clientCertificateOf(req);
  return der ? { kind: 'client-certificate', der } : undefined;
}
