/**
 * What every daily-work command shares: the connection options, the action wrapper that turns an
 * API problem into a message on stderr and an exit code (src/cli/exit-codes.ts), `--json`, and
 * the typed confirmation of destructive actions.
 */
import { createInterface } from 'node:readline/promises';
import { Command, InvalidArgumentError, type CommanderError } from 'commander';
import { ApiClient, ApiError, ConnectionError, resolveConnection, UsageError, type Problem } from './api-client.js';
import { EXIT } from './exit-codes.js';
import { safe } from './table.js';

export interface Ctx {
  api: ApiClient;
  json: boolean;
  /** One block of output on stdout. */
  out(text: string): void;
  /** The API's JSON, as it answered. */
  printJson(value: unknown): void;
  /** A note on stderr (stdout stays the result, for pipes). */
  note(text: string): void;
}

interface ConnOpts {
  url?: string;
  keyFile?: string;
  json?: boolean;
}

/** --url, --key-file, --json: on the program (before the command) and on every daily-work command (after it). */
export function addConnectionOptions(cmd: Command): Command {
  return cmd
    .option('--url <url>', `the service's base URL (MQTT_CA_URL; default http://127.0.0.1:8080)`)
    .option('--key-file <file>', 'a file holding the API key (MQTT_CA_KEY_FILE, or the key in MQTT_CA_API_KEY); never the key itself')
    .option('--json', "print the API's JSON instead of a table");
}

/** Options of the command and its ancestors, the nearest one winning. */
function connOpts(cmd: Command): ConnOpts {
  const chain: Command[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) chain.push(c);
  const merged: ConnOpts = {};
  for (const c of chain.reverse()) {
    const o = c.opts<ConnOpts>();
    if (o.url !== undefined) merged.url = o.url;
    if (o.keyFile !== undefined) merged.keyFile = o.keyFile;
    if (o.json) merged.json = true;
  }
  return merged;
}

/** The problem on stderr: status, title, detail, and each field or row error. */
export function problemText(status: number, p: Problem): string {
  const head = `mqtt-ca: ${status} ${safe(p.title ?? '')}${p.detail ? `: ${safe(p.detail)}` : ''}`;
  const lines = [head];
  for (const e of p.errors ?? []) {
    const where = [e.row !== undefined ? `row ${e.row}` : '', e.id ? `(id ${safe(e.id)})` : '', e.field ?? e.path ?? '']
      .filter(Boolean)
      .map((s) => safe(s))
      .join(' ');
    lines.push(`  ${where ? `${where}: ` : ''}${safe(e.message ?? '')}`);
  }
  if (p.requestId) lines.push(`  (request ${safe(p.requestId)})`);
  return lines.join('\n');
}

/** Usage errors (commander's) exit 2, help and version 0, on the given command and those added under it later. */
export function exitTwoOnUsage(cmd: Command): Command {
  return cmd.exitOverride((err: CommanderError) => {
    process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage);
  });
}

/**
 * A daily-work action: resolves the connection, runs `fn`, and maps what went wrong to an exit
 * code. `fn` may return an exit code (an incident step that waits for approval).
 */
export function action<A extends unknown[]>(fn: (ctx: Ctx, ...args: A) => Promise<number | void>) {
  return async (...args: unknown[]): Promise<void> => {
    const cmd = args[args.length - 1] as Command;
    const o = connOpts(cmd);
    try {
      const api = new ApiClient(resolveConnection({ url: o.url, keyFile: o.keyFile }));
      const ctx: Ctx = {
        api,
        json: !!o.json,
        out: (t) => {
          process.stdout.write(t.endsWith('\n') ? t : `${t}\n`);
        },
        printJson: (v) => {
          process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
        },
        note: (t) => {
          process.stderr.write(`${t}\n`);
        },
      };
      const code = await fn(ctx, ...(args.slice(0, -1) as A));
      process.exitCode = typeof code === 'number' ? code : EXIT.ok;
    } catch (e) {
      if (e instanceof ApiError) {
        process.stderr.write(`${problemText(e.status, e.problem)}\n`);
        if (e.retryAfter) process.stderr.write(`  (try again in ${e.retryAfter} s)\n`);
        if (o.json && e.body && typeof e.body === 'object') process.stdout.write(`${JSON.stringify(e.body, null, 2)}\n`);
        process.exitCode = e.exitCode;
      } else if (e instanceof UsageError) {
        process.stderr.write(`mqtt-ca: ${e.message}\n`);
        process.exitCode = e.exitCode;
      } else if (e instanceof ConnectionError) {
        process.stderr.write(`mqtt-ca: ${e.message}\n`);
        process.exitCode = EXIT.failure;
      } else {
        process.stderr.write(`mqtt-ca: failed: ${e instanceof Error ? e.message : String(e)}\n`);
        process.exitCode = EXIT.failure;
      }
    }
  };
}

/**
 * A destructive action goes ahead only when the operator types one of `accepted` (the serial, the
 * device id) on a terminal, or gave --yes. Without a terminal and without --yes it is refused
 * (exit 2): a script says --yes, so nothing is destroyed by a stray pipe.
 */
export async function confirm(what: string, accepted: string[], yes: boolean | undefined): Promise<void> {
  if (yes) return;
  if (!process.stdin.isTTY || !process.stderr.isTTY)
    throw new UsageError(`${what}\nnot confirmed: no terminal to ask on; give --yes to do it without asking`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = (await rl.question(`${what}\nType ${accepted.map((a) => `"${safe(a)}"`).join(' or ')} to confirm: `)).trim();
    if (!accepted.includes(answer)) throw new UsageError('not confirmed: nothing was done');
  } finally {
    rl.close();
  }
}

/** A repeatable option's collector. */
export const collect = (v: string, all: string[] = []): string[] => [...all, v];

/** A positive whole number option. */
export function wholeNumber(name: string, min = 1, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max)
      throw new InvalidArgumentError(`${name}: a whole number from ${min} to ${max}`);
    return Number(v);
  };
}
