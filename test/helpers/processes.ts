import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer as createNetServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';

const CLI = join(import.meta.dirname, '../../src/cli.ts');

export interface Child {
  proc: ChildProcess;
  output(): string;
  /** SIGTERM, then SIGKILL after a grace; resolves when it exited. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Runs a command until `ready` appears on its stdout or stderr. */
export function startChild(
  cmd: string,
  args: string[],
  env: Record<string, string>,
  ready: RegExp,
  timeoutMs = 60_000,
  as?: { uid: number; gid: number },
): Promise<Child> {
  const proc = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], ...as });
  return childReady(proc, ready, timeoutMs, `${cmd} ${args.join(' ')}`);
}

async function childReady(proc: ChildProcess, ready: RegExp, timeoutMs: number, name: string): Promise<Child> {
  let out = '';
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not print ${ready} within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code}) before it was ready:\n${out}`));
    });
  });
  return {
    proc,
    output: () => out,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** `mqtt-ca worker` in a process of its own. */
export const startWorker = (env: Record<string, string>) =>
  startChild(process.execPath, ['--import', 'tsx', CLI, 'worker'], env, /mqtt-ca worker running/);

/** A free TCP port on 127.0.0.1 (closed again; good enough for a test's own server). */
export async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`; throws after `ms`. */
export async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1', () => (c.end(), resolve(true)));
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on ${port}`);
}

/**
 * A command run to its end without blocking this process (a service it talks to may run here,
 * which spawnSync would starve); killed after `timeoutMs`.
 */
export function runAsync(
  cmd: string,
  args: string[],
  timeoutMs = 30_000,
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args);
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d));
    c.stderr.on('data', (d: Buffer) => (stderr += d));
    const timer = setTimeout(() => c.kill(), timeoutMs);
    c.on('close', (status) => (clearTimeout(timer), resolve({ status, stdout, stderr })));
  });
}

/** A redis-server of the test's own (no persistence), so stopping it disturbs nobody else. */
export const startRedis = (port: number) =>
  startChild(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    {},
    /Ready to accept connections/,
  );

/**
 * A TCP proxy to an MQTT broker that passes the client's bytes on but stops answering after the
 * broker's first reply (CONNACK): the client is connected, and then waits forever for its PUBACKs.
 */
export async function stallingProxy(targetPort: number): Promise<{ port: number; published: () => number; close(): Promise<void> }> {
  let bytesAfterConnect = 0;
  const sockets = new Set<Socket>();
  const server: Server = createNetServer((client) => {
    sockets.add(client);
    let repliedOnce = false;
    let first = true;
    const upstream = connect(targetPort, '127.0.0.1');
    sockets.add(upstream);
    client.on('data', (d) => {
      if (!first) bytesAfterConnect += d.length;
      first = false;
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (!repliedOnce) client.write(d);
      repliedOnce = true;
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    published: () => bytesAfterConnect,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Polls `probe` every 200 ms until it returns something truthy (returned), or fails after `timeoutMs`. */
export async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface Served extends Child {
  /** http://127.0.0.1:<port> */
  url: string;
  /** The admin key the first start wrote to DATA_DIR/admin-api-key. */
  adminKey: string;
}

/**
 * `mqtt-ca serve` in a process of its own, on a port of its choosing. `env` needs at least
 * MQTT_CA_KEK and DATA_DIR (and DATABASE_URL for PostgreSQL); REDIS_URL is not inherited unless given.
 */
export async function startServe(env: Record<string, string>): Promise<Served> {
  const inherited = { ...process.env } as Record<string, string>;
  delete inherited.DATABASE_URL;
  delete inherited.REDIS_URL;
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve'], {
    // One process unless a test asks for more (SERVE_PROCESSES defaults to every core on PostgreSQL).
    env: { ...inherited, PORT: '0', LOG_LEVEL: 'warn', SERVE_PROCESSES: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const child = await childReady(proc, /listening on http:\/\/[\d.]+:\d+/, 120_000, 'mqtt-ca serve');
  const url = /listening on (http:\/\/[\d.]+:\d+)/.exec(child.output())![1]!;
  return { ...child, url, adminKey: readFileSync(join(env.DATA_DIR!, 'admin-api-key'), 'utf8').trim() };
}

export interface OwnPostgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  url: string;
  /** Stops it the way a crash does (immediate shutdown: no checkpoint, recovery from WAL on start), then starts it again. */
  crashAndRestart(downMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A PostgreSQL server of the test's own, in a temporary directory, so that restarting it
 * disturbs nobody else. As root it runs as the `postgres` user (PostgreSQL refuses root).
 */
export async function startPostgres(): Promise<OwnPostgres> {
  const version = readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a))[0];
  const bin = `/usr/lib/postgresql/${version}/bin`;
  const dir = mkdtempSync(join(tmpdir(), 'mqttca-pg-'));
  let as: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    as = { uid: Number(execFileSync('id', ['-u', 'postgres'])), gid: Number(execFileSync('id', ['-g', 'postgres'])) };
    chownSync(dir, as.uid, as.gid);
  }
  execFileSync(`${bin}/initdb`, ['-D', join(dir, 'data'), '-U', 'postgres', '-A', 'trust', '--no-sync', '--no-instructions'], {
    stdio: 'ignore',
    ...as,
  });
  const port = await freePort();
  const start = () =>
    startChild(
      `${bin}/postgres`,
      ['-D', join(dir, 'data'), '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200'],
      {},
      /database system is ready to accept connections/,
      60_000,
      as,
    );
  let server = await start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async crashAndRestart(downMs = 1000) {
      await server.stop('SIGQUIT');
      await new Promise((r) => setTimeout(r, downMs));
      server = await start();
    },
    stop: () => server.stop('SIGQUIT'),
  };
}

/**
 * A TCP proxy to a server (PostgreSQL) whose answers can be held back (`delay`: a slow or distant
 * link) or cut (`cut(true)`: every connection dropped and new ones refused, as when the network
 * to the database is lost), to show what one process does when its link alone is bad.
 */
export async function faultyLink(
  targetPort: number,
): Promise<{ port: number; delay(ms: number): void; cut(on: boolean): void; close(): Promise<void> }> {
  let delayMs = 0;
  let cut = false;
  const sockets = new Set<Socket>();
  const server: Server = createNetServer((client) => {
    if (cut) {
      client.destroy();
      return;
    }
    const upstream = connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.on('data', (d) => upstream.write(d));
    // Same delay for every chunk of a connection, so timers keep their order.
    upstream.on('data', (d) => (delayMs === 0 ? client.write(d) : setTimeout(() => client.writable && client.write(d), delayMs)));
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    delay: (ms) => {
      delayMs = ms;
    },
    cut: (on) => {
      cut = on;
      if (on) for (const s of sockets) s.destroy();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

export interface Haproxy extends Child {
  url: string;
}

/**
 * Debian's HAProxy (/usr/sbin/haproxy) of the test's own, in the foreground with its own config
 * file: a TCP proxy on a free port spreading connections over `backends` (host:port), each checked
 * on GET /readyz, a connection that cannot reach one sent to another.
 */
export async function startHaproxy(backends: string[], port?: number): Promise<Haproxy> {
  const listenPort = port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'mqttca-haproxy-'));
  const config = [
    'global',
    '  maxconn 2000',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    '  timeout client 60s',
    '  timeout server 60s',
    '  retries 3',
    '  option redispatch',
    'listen mqtt-ca',
    `  bind 127.0.0.1:${listenPort}`,
    '  balance roundrobin',
    '  option httpchk GET /readyz',
    '  http-check expect status 200',
    // A server taken out drops its connections too: in TCP mode a connection stays on the server it began on.
    ...backends.map((b, i) => `  server r${i} ${b} check inter 500 fall 2 rise 2 on-marked-down shutdown-sessions`),
    '',
  ].join('\n');
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, config);
  const proc = spawn('/usr/sbin/haproxy', ['-db', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${listenPort}`;
  await until(
    `HAProxy on ${url}`,
    async () => {
      if (proc.exitCode !== null) throw new Error(`haproxy exited (${proc.exitCode}):\n${out}`);
      return fetch(`${url}/readyz`).then(
        (r) => r.ok,
        () => false,
      );
    },
    30_000,
  );
  return {
    proc,
    url,
    output: () => out,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill(signal);
      await exited;
    },
  };
}
