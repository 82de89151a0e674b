import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer, type ServerOptions as HttpsServerOptions } from 'node:https';
import type { Logger } from 'pino';
import type { ListenerTimeouts } from '../config/config.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * A listener for the service's handler, HTTP or (with TLS options) HTTPS, with the same client
 * timeouts on both: a slow or idle client is dropped the same way whichever port it came to.
 * On TLS the handshake must also be done within the header timeout.
 */
export function createListener(handler: Handler, t: ListenerTimeouts): Server;
export function createListener(handler: Handler, t: ListenerTimeouts, tls: HttpsServerOptions): HttpsServer;
export function createListener(handler: Handler, t: ListenerTimeouts, tls?: HttpsServerOptions): Server | HttpsServer {
  const options = {
    headersTimeout: t.headersMs,
    requestTimeout: t.requestMs,
    keepAliveTimeout: t.keepAliveMs,
    // Node looks for expired headers and requests only this often (default every 30 s).
    connectionsCheckingInterval: Math.min(5_000, Math.ceil(t.headersMs / 2)),
  };
  const server = tls ? createHttpsServer({ ...tls, ...options, handshakeTimeout: t.headersMs }, handler) : createServer(options, handler);
  server.headersTimeout = t.headersMs;
  server.requestTimeout = t.requestMs;
  server.keepAliveTimeout = t.keepAliveMs;
  return server;
}

/** What a TLS listener serves: the service's own certificate, its chain, and the CA certificates it asks clients for. */
export interface TlsContextIdentity {
  serial: string;
  key: string;
  cert: string;
  ca: string[];
  notAfter: Date;
}

/**
 * Keeps a TLS listener's certificate current: looks at the stored identity every `refreshMs`
 * (another process may have renewed it) and at once when `onIssued` says this process did, and
 * swaps a changed one in with setSecureContext. No restart; open connections keep theirs.
 * Stops when the server closes.
 */
export function keepTlsContextFresh(
  server: HttpsServer,
  inUse: TlsContextIdentity,
  source: { current(): Promise<TlsContextIdentity | undefined>; onIssued(listener: () => void): () => void },
  opts: { refreshMs: number; logger: Logger },
): void {
  let key = contextKey(inUse);
  let refreshing = false;
  const refresh = async () => {
    if (refreshing) return;
    refreshing = true;
    try {
      const next = await source.current();
      if (!next || contextKey(next) === key) return;
      server.setSecureContext({ key: next.key, cert: next.cert, ca: next.ca });
      key = contextKey(next);
      opts.logger.info({ serial: next.serial, notAfter: next.notAfter }, 'TLS listener: now serving the renewed certificate');
    } catch (e) {
      opts.logger.warn({ err: e }, 'TLS listener: could not refresh its certificate; serving the one it has');
    } finally {
      refreshing = false;
    }
  };
  const timer = setInterval(() => void refresh(), opts.refreshMs);
  timer.unref();
  const unsubscribe = source.onIssued(() => void refresh());
  server.once('close', () => {
    clearInterval(timer);
    unsubscribe();
  });
}

const contextKey = (id: TlsContextIdentity) => `${id.serial}|${id.ca.join('')}`;
