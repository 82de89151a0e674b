import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { once } from 'node:events';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { randomBytes, X509Certificate } from 'node:crypto';
import { pino } from 'pino';
import { bootstrap } from '../../src/bootstrap.js';
import { buildService, listen, listenTls, type Service } from '../../src/main.js';
import { HOUSEKEEPING } from '../../src/jobs/queues.js';
import type { Clock } from '../../src/shared/clock.js';

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
    svc = await makeService(target, {
      env: { PORT: '0', HTTP_HEADERS_TIMEOUT_SECONDS: '1', HTTP_REQUEST_TIMEOUT_SECONDS: '2', HTTP_KEEPALIVE_TIMEOUT_SECONDS: '1' },
    });
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

/** The serial of the certificate a TLS listener presents now (a new connection each time). */
async function presentedSerial(server: HttpsServer): Promise<string> {
  const socket = tlsConnect({ port: portOf(server), host: '127.0.0.1', servername: 'localhost', rejectUnauthorized: false });
  try {
    await once(socket, 'secureConnect');
    return socket.getPeerX509Certificate()!.serialNumber.toLowerCase();
  } finally {
    socket.destroy();
  }
}

/** Polls until `f` holds or the test's own bound passes. */
async function eventually(f: () => Promise<boolean>, boundMs = 30_000): Promise<boolean> {
  const until = Date.now() + boundMs;
  while (Date.now() < until) {
    if (await f()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

for (const target of dbTargets) {
  // PostgreSQL runs the jobs on BullMQ (when Redis is there), PGlite in-process: the renewal is a job like the others on either.
  const redisUrl = target.name === 'postgres' ? process.env.REDIS_URL : undefined;
  describe(
    `the TLS listener's own certificate renews without a restart (${target.name}, ${redisUrl ? 'BullMQ' : 'in-process'} jobs)`,
    { skip: target.skip },
    () => {
      it('the renewal job replaces it at a third of its life left; this process and another one serving TLS present the new one; the old one stays good', async () => {
        let now = new Date();
        const clock: Clock = { now: () => now };
        const env: Record<string, string> = redisUrl ? { REDIS_URL: redisUrl, JOBS_PREFIX: `t-${randomBytes(6).toString('hex')}` } : {};
        const svc = await makeService(target, { clock, env });
        // Another process on the same database that serves TLS but runs no jobs.
        const other = await buildService({ ...svc.config, redisUrl: undefined }, { db: svc.db, logger: pino({ level: 'silent' }), clock });
        const servers: HttpsServer[] = [];
        try {
          await bootstrap(svc);
          servers.push(await listenTls(svc, 0, { refreshMs: 200 }), await listenTls(other, 0, { refreshMs: 200 }));
          const [mine, theirs] = servers as [HttpsServer, HttpsServer];
          const first = await presentedSerial(mine);
          assert.equal(await presentedSerial(theirs), first);
          const old = await svc.certificates.get(first as never);

          await svc.jobs.start();
          // One run of the scheduled job, through the queue, waited for until it completed.
          let runs = 0;
          const renew = async () => {
            const jobId = `identity-renewal-${++runs}-${randomBytes(4).toString('hex')}`;
            await svc.jobs.enqueue(HOUSEKEEPING, [{ name: 'service-identity-renewal', payload: {}, jobId }]);
            const done = async () => {
              const q = (await svc.jobs.overview({ limit: 100 })).queues.find((x) => x.name === HOUSEKEEPING)!;
              assert.equal(
                q.failed.find((j) => j.id === jobId),
                undefined,
                'the renewal job failed',
              );
              return q.recent.some((j) => j.id === jobId && j.state === 'completed');
            };
            assert.equal(await eventually(done), true, 'the renewal job completed');
          };
          await renew();
          assert.equal(await presentedSerial(mine), first, 'not due yet: the same certificate');

          now = new Date(Date.parse(old.notAfter) - 29 * 86_400_000); // 90 days, under a third left
          await renew();
          assert.equal(
            await eventually(async () => (await presentedSerial(mine)) !== first),
            true,
            'this listener serves the renewed certificate',
          );
          assert.equal(
            await eventually(async () => (await presentedSerial(theirs)) !== first),
            true,
            "the other process's listener serves it too",
          );
          const renewed = await presentedSerial(mine);
          assert.equal(await presentedSerial(theirs), renewed);
          const cert = (await svc.certificates.get(renewed as never)).certificate!;
          assert.ok(
            new X509Certificate(cert).checkIssued(
              new X509Certificate((await svc.hierarchy.list()).find((c) => c.id === old.caId)!.certificate!),
            ),
          );
          const audit = await svc.db('audit_log').select('details').where({ action: 'tls-identity.issued', target_id: renewed });
          assert.equal(audit.length, 1);
          assert.equal((typeof audit[0].details === 'string' ? JSON.parse(audit[0].details) : audit[0].details).replaces, first);

          // The old certificate is not revoked: connections made with it stay good until it expires.
          const before = await svc.certificates.get(first as never);
          assert.equal(before.revocation, null);
          assert.ok(Date.parse(before.notAfter) > now.getTime());
          // Renewed once: the job run again changes nothing.
          await renew();
          assert.equal(await presentedSerial(mine), renewed);
        } finally {
          for (const s of servers) {
            s.closeAllConnections();
            s.close();
          }
          await other.stop();
          await svc.dispose();
        }
      });
    },
  );
}
