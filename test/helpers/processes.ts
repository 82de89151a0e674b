import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs';
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
    env: { ...inherited, PORT: '0', LOG_LEVEL: 'warn', ...env },
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
