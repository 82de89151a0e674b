/**
 * wrk (Debian's wrk 4) as the one HTTP client for servers compared on one core: each server is
 * pinned to CPU 0 with taskset and wrk to CPU 1, so every server gets the same core and the same
 * client. Requests come from a list (path and body), pre-formatted per connection thread and
 * taken in turn; wrk.lua prints one JSON line of figures.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';

export interface WrkRequest {
  path: string;
  body?: Buffer | undefined;
}

export interface WrkResult {
  requests: number;
  rps: number;
  /** Socket errors (connect, read, write, timeout) and non-2xx answers. */
  errors: number;
  non2xx: number;
  p50: number;
  p90: number;
  p99: number;
}

/** CPU the servers run on, and CPU the client runs on. */
export const SERVER_CPU = '0';
export const CLIENT_CPU = '1';

export function commandExists(cmd: string): Promise<boolean> {
  return new Promise((r) => spawn('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).on('close', (c) => r(c === 0)));
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** A server process pinned to SERVER_CPU; its stderr is kept for the error message if it dies. */
export function startPinned(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): ChildProcess & { stderrText: () => string } {
  const child = spawn('taskset', ['-c', SERVER_CPU, cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-4000)));
  return Object.assign(child, { stderrText: () => err });
}

/**
 * Waits until the port accepts connections, or the process dies. With `readyText`, waits for the
 * process to print it on stderr instead of probing (`openssl ocsp` spins forever on a connection
 * that closes without a request).
 */
export async function waitForPort(
  port: number,
  child: ChildProcess & { stderrText: () => string },
  what: string,
  opts: { seconds?: number; readyText?: string } = {},
): Promise<void> {
  const seconds = opts.seconds ?? 60;
  for (let i = 0; i < seconds * 20; i++) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}): ${child.stderrText()}`);
    const ok = opts.readyText
      ? child.stderrText().includes(opts.readyText)
      : await new Promise<boolean>((r) => {
          const s = connect(port, '127.0.0.1', () => {
            s.destroy();
            r(true);
          });
          s.on('error', () => r(false));
        });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on port ${port} within ${seconds}s`);
}

/** Writes the request list where wrk.lua reads it: one line per request, "path<TAB>hex body". */
export function requestFile(dir: string, name: string, requests: WrkRequest[]): string {
  const file = join(dir, `${name}.wrk`);
  writeFileSync(file, requests.map((r) => `${r.path}\t${r.body ? r.body.toString('hex') : ''}`).join('\n') + '\n');
  return file;
}

export interface WrkOptions {
  port: number;
  method: 'GET' | 'POST';
  file: string;
  contentType?: string;
  connections: number;
  seconds: number;
  /** A run of the same requests first, not counted. */
  warmup?: number;
  /** More request headers, "Name: value". */
  headers?: string[];
  /** Pin wrk to CLIENT_CPU (the default); false lets it share the machine with the server it loads. */
  pinned?: boolean;
}

/** A wrk result that saw no errors and made requests (and, given `max`, no more than the `max` prepared); else throws naming `what`. */
export function checked<R extends WrkResult>(what: string, r: R, max?: number): R {
  if (r.errors > 0 || r.requests === 0) throw new Error(`${what}: ${r.errors} errors (${r.non2xx} non-2xx) in ${r.requests} requests`);
  if (max !== undefined && r.requests > max) throw new Error(`${what}: ${r.requests} requests outran the ${max} prepared`);
  return r;
}

/** `connections` keep-alive connections from one wrk thread (on CLIENT_CPU unless unpinned) for `seconds`. */
export async function wrk(o: WrkOptions): Promise<WrkResult> {
  if (o.warmup) await runWrk({ ...o, seconds: o.warmup });
  return runWrk(o);
}

/** Of several runs, the fastest, with every run's rate: this machine's neighbours come and go, and every server gets the same treatment. */
export async function bestOf(rounds: number, run: () => Promise<WrkResult>): Promise<WrkResult & { rates: number[] }> {
  const all: WrkResult[] = [];
  for (let i = 0; i < rounds; i++) all.push(await run());
  const best = all.reduce((a, b) => (b.rps > a.rps ? b : a));
  return { ...best, rates: all.map((r) => r.rps) };
}

function runWrk(o: WrkOptions): Promise<WrkResult> {
  const args = [
    'wrk',
    '-t1',
    `-c${o.connections}`,
    `-d${o.seconds}s`,
    '--timeout',
    '5s',
    '-s',
    join(import.meta.dirname, 'wrk.lua'),
    `http://127.0.0.1:${o.port}/`,
    '--',
    o.method,
    o.file,
    o.contentType ?? '',
    ...(o.headers ?? []),
  ];
  return new Promise((resolve, reject) => {
    const child =
      o.pinned === false
        ? spawn(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawn('taskset', ['-c', CLIENT_CPU, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{"wrk"'));
      if (code !== 0 || !line) return reject(new Error(`wrk exited ${code}: ${err || out}`));
      const r = JSON.parse(line) as {
        requests: number;
        duration_us: number;
        non2xx: number;
        socket: number;
        p50_us: number;
        p90_us: number;
        p99_us: number;
      };
      resolve({
        requests: r.requests,
        rps: r.requests / (r.duration_us / 1e6),
        errors: r.socket + r.non2xx,
        non2xx: r.non2xx,
        p50: r.p50_us / 1000,
        p90: r.p90_us / 1000,
        p99: r.p99_us / 1000,
      });
    });
  });
}
