import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer, type ServerOptions as HttpsServerOptions } from 'node:https';
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
