import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { once } from 'node:events';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { bootstrap } from '../../src/bootstrap.js';
import { listen, listenTls, type Service } from '../../src/main.js';

const portOf = (s: Server | HttpsServer) => (s.address() as { port: number }).port;

/** Whether the server closed the socket before the test's own (generous) bound; no timing is asserted beyond it. */
async function closedByServer(socket: Socket, boundMs = 20_000): Promise<boolean> {
  socket.on('error', () => undefined);
  socket.resume(); // read what the server sends (its 408), so its close is seen
  if (socket.destroyed) return true;
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<false>((r) => (timer = setTimeout(() => r(false), boundMs)));
  try {
    return await Promise.race([once(socket, 'close').then(() => true), bound]);
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
}

const target = dbTargets.find((t) => !t.skip) ?? dbTargets[0]!;

describe(`listener timeouts: the TLS port drops slow clients as the HTTP port does (${target.name})`, { skip: target.skip }, () => {
  let svc: Service & { dispose(): Promise<void> };
  let http: Server;
  let tls: HttpsServer;

  before(async () => {
    svc = await makeService(target, { env: { PORT: '0', HTTP_HEADERS_TIMEOUT_SECONDS: '1', HTTP_REQUEST_TIMEOUT_SECONDS: '2', HTTP_KEEPALIVE_TIMEOUT_SECONDS: '1' } });
    await bootstrap(svc);
    http = await listen(svc);
    tls = await listenTls(svc, 0);
  });
  after(async () => {
    for (const s of [http, tls]) {
      s?.closeAllConnections();
      s?.close();
    }
    await svc?.dispose();
  });

  it('both listeners carry the configured header, request and keep-alive timeouts', () => {
    for (const s of [http, tls]) {
      assert.equal(s.headersTimeout, 1000);
      assert.equal(s.requestTimeout, 2000);
      assert.equal(s.keepAliveTimeout, 1000);
    }
  });

  it('a client that sends half a request header and holds is closed on the HTTP port', async () => {
    const socket = tcpConnect(portOf(http), '127.0.0.1');
    await once(socket, 'connect');
    socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ');
    assert.equal(await closedByServer(socket), true);
  });

  it('a client that sends half a request header over TLS and holds is closed on the TLS port', async () => {
    const socket = tlsConnect({ port: portOf(tls), host: '127.0.0.1', servername: 'localhost', rejectUnauthorized: false });
    await once(socket, 'secureConnect');
    socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ');
    assert.equal(await closedByServer(socket), true);
  });

  it('a client that opens a TCP connection to the TLS port and never starts the handshake is closed', async () => {
    const socket = tcpConnect(portOf(tls), '127.0.0.1');
    await once(socket, 'connect');
    assert.equal(await closedByServer(socket), true);
  });
});
