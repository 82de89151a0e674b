import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { DomainError, badRequest } from '../shared/errors.js';
import { natsUsersFile } from './setup/nats.js';
import type { BrokerConnector, BrokerEffect, BrokerEvent, BrokerResult } from './connector.js';

/** How the NATS server is told to reread its configuration. */
export type NatsReload = { pidFile: string } | { command: string };

export interface NatsConnectorOptions {
  /** The users file nats.conf includes (broker-setup's nats-users.conf): this connector rewrites it whole. */
  usersFile: string;
  /** The block list, JSON, kept beside the users file (default `<usersFile>.blocked.json`) so it survives restarts. */
  blockFile?: string | undefined;
  /** SIGHUP to the PID in the file (what `nats-server --signal reload=<pid>` sends), or a shell command. */
  reload: NatsReload;
  /** The server's monitoring endpoint (http://host:8222): /varz shows the reload, /connz?auth=true the sessions. */
  monitorUrl: string;
  /** The user NATS maps a device's certificate to: its SAN URI (deviceUri of src/ca/profiles.ts). */
  identity: (deviceId: string) => string;
  /** The devices that hold an active certificate now (CertificateStore.activeDeviceIds). */
  activeDevices: () => Promise<string[]>;
  /** Rewrites the allowlist this often (new enrollments, expiries, anything missed); 0: only on revocations and actions. */
  syncMs?: number | undefined;
  /** How long a monitor request, a reload command, and the wait for a reload or a session's end may take. */
  timeoutMs?: number | undefined;
  /** A failed periodic sync, or a reload that failed after a revocation (the file is written: NATS reads it on its next start). */
  onError?: ((e: unknown) => void) | undefined;
}

/** One session of an identity as /connz?auth=true shows it. */
interface NatsSession {
  cid: number;
  mqttClient?: string | undefined;
}

interface ConnzConnection {
  cid: number;
  authorized_user?: string;
  mqtt_client?: string;
}

/** What a write of the users file did. */
interface Synced {
  /** Whether the file changed (and a reload was asked for). */
  changed: boolean;
  /** The server reread it (config_load_time moved on), or why that is not known. */
  reloaded: { confirmed: boolean; detail?: string } | undefined;
  allowed: Set<string>;
}

/**
 * NATS 2.9 through the only levers it has: its users file and a reload. NATS checks no revocation
 * of client certificates and has no kick API, so the users file (verify_and_map users, by the
 * device's SAN URI) is an allowlist: the devices with an active certificate, minus the blocked
 * ones. A reload closes the sessions of every identity it no longer lists and refuses their next
 * connection; the monitoring endpoint shows whether the server reloaded (/varz config_load_time)
 * and whether an identity still has sessions (/connz?auth=true: `authorized_user`, `mqtt_client`).
 *
 * - block: onto the block list (a file beside the users file), out of the users file, reload,
 *   confirmed once the identity has no session left. unblock: the reverse, confirmed by the reload.
 * - disconnect: out of the users file, reload, wait for its sessions to end, back in, reload: the
 *   device may reconnect at once (NATS 2.9 cannot end a session any other way).
 * - notify: not applied: this connector has no NATS identity to publish with.
 * - A revocation (onRevocationChanged) rewrites the allowlist at once; new enrollments arrive with
 *   the periodic sync (syncMs). NATS maps identities, not certificates: a device that still holds
 *   another active certificate keeps its identity when one certificate is revoked.
 */
export class NatsConnector implements BrokerConnector {
  readonly name = 'nats';
  private readonly blockFile: string;
  private readonly timeoutMs: number;
  /** One change at a time: each reads, writes and reloads the whole file. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Identities held out only while disconnect() waits for their sessions to end. */
  private readonly kicking = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: NatsConnectorOptions) {
    this.blockFile = opts.blockFile ?? join(dirname(opts.usersFile), `${basename(opts.usersFile)}.blocked.json`);
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    if (opts.syncMs) {
      const tick = () => {
        if (this.closed) return;
        this.sync().catch((e: unknown) => opts.onError?.(e));
        this.timer = setTimeout(tick, opts.syncMs);
        this.timer.unref();
      };
      this.timer = setTimeout(tick, 0);
      this.timer.unref();
    }
  }

  /** Rewrites the allowlist from the store (reloading the server only when it changed). */
  sync(): Promise<Synced> {
    return this.serial(() => this.write());
  }

  /**
   * After a revocation (a RevocationListener's onRevocationChanged, wired in main.ts): the revoked
   * devices leave the allowlist now. A failed reload is reported, not thrown: the file is written.
   */
  async onRevocationChanged(): Promise<void> {
    try {
      const s = await this.sync();
      if (s.reloaded && !s.reloaded.confirmed)
        this.opts.onError?.(new Error(`NATS allowlist written, reload not seen: ${s.reloaded.detail}`));
    } catch (e) {
      // The file is written: a server that could not be told reads it at its next start.
      if (e instanceof NatsReloadError) this.opts.onError?.(e);
      else throw e;
    }
  }

  block(clientIds: string[], reason: string): Promise<BrokerResult> {
    void reason;
    return this.serial(async () => {
      const ids = checkIds(clientIds);
      const blocked = await this.blockedSet();
      for (const id of ids) blocked.add(id);
      await this.saveBlocked(blocked);
      const before = await this.sessionsOf(ids);
      const synced = await this.write();
      const gone = await this.sessionsGone(ids);
      return this.result(
        ids.map((id): BrokerEffect => {
          const ended = (before.get(id) ?? []).map(sessionName);
          const base = { clientId: id, action: 'block' as const, applied: true, sessionsEnded: ended };
          if (synced.reloaded && !synced.reloaded.confirmed)
            return { ...base, sessionsEnded: [], confirmed: false, detail: synced.reloaded.detail };
          if (!gone.has(id))
            return {
              ...base,
              sessionsEnded: [],
              confirmed: false,
              detail: `${this.opts.identity(id)} still has a session ${this.timeoutMs} ms after the reload`,
            };
          return {
            ...base,
            confirmed: true,
            detail: `${this.opts.identity(id)} is out of the users file and the server reloaded; it has no session (${ended.length} ended)`,
          };
        }),
      );
    });
  }

  unblock(clientIds: string[], reason: string): Promise<BrokerResult> {
    void reason;
    return this.serial(async () => {
      const ids = checkIds(clientIds);
      const blocked = await this.blockedSet();
      const was = new Set(ids.filter((id) => blocked.has(id)));
      for (const id of ids) blocked.delete(id);
      if (was.size) await this.saveBlocked(blocked);
      const synced = await this.write();
      return this.result(
        ids.map((id): BrokerEffect => {
          const base = { clientId: id, action: 'unblock' as const, applied: true };
          if (!synced.allowed.has(id))
            return {
              ...base,
              confirmed: true,
              detail: `${was.has(id) ? 'unblocked' : 'was not blocked'}; not in the users file: the device holds no active certificate`,
            };
          if (synced.reloaded && !synced.reloaded.confirmed) return { ...base, confirmed: false, detail: synced.reloaded.detail };
          return {
            ...base,
            confirmed: true,
            detail: was.has(id)
              ? `${this.opts.identity(id)} is back in the users file and the server reloaded`
              : `was not blocked; ${this.opts.identity(id)} is in the users file`,
          };
        }),
      );
    });
  }

  disconnect(clientIds: string[], reason: string): Promise<BrokerResult> {
    void reason;
    return this.serial(async () => {
      const ids = checkIds(clientIds);
      const before = await this.sessionsOf(ids);
      const withSessions = ids.filter((id) => (before.get(id) ?? []).length > 0);
      if (withSessions.length === 0)
        return this.result(
          ids.map((id) => ({
            clientId: id,
            action: 'disconnect' as const,
            applied: true,
            confirmed: true,
            sessionsEnded: [],
            detail: 'no session',
          })),
        );
      for (const id of withSessions) this.kicking.add(id);
      let out: Synced;
      let gone: Set<string>;
      try {
        out = await this.write();
        gone = await this.sessionsGone(withSessions);
      } finally {
        for (const id of withSessions) this.kicking.delete(id);
      }
      const back = await this.write();
      return this.result(
        ids.map((id): BrokerEffect => {
          const ended = (before.get(id) ?? []).map(sessionName);
          const base = { clientId: id, action: 'disconnect' as const, applied: true, sessionsEnded: ended };
          if (ended.length === 0) return { ...base, confirmed: true, detail: 'no session' };
          if (out.reloaded && !out.reloaded.confirmed) return { ...base, sessionsEnded: [], confirmed: false, detail: out.reloaded.detail };
          if (!gone.has(id))
            return {
              ...base,
              sessionsEnded: [],
              confirmed: false,
              detail: `${this.opts.identity(id)} still has a session ${this.timeoutMs} ms after the reload`,
            };
          const readmitted = back.reloaded && !back.reloaded.confirmed ? ` (re-admission not seen: ${back.reloaded.detail})` : '';
          return {
            ...base,
            confirmed: true,
            detail: `NATS 2.9 has no kick: ${this.opts.identity(id)} left the users file until its sessions ended, then came back${readmitted}`,
          };
        }),
      );
    });
  }

  async notify(event: BrokerEvent): Promise<BrokerResult> {
    if (!event.kind) throw badRequest('an event needs a kind');
    return this.result([
      {
        clientId: event.subject,
        action: 'notify',
        applied: false,
        confirmed: false,
        detail:
          'the NATS connector has no NATS or MQTT identity of its own to publish with (fleet notices: BROKER_MQTT_URL or BROKER_WEBHOOK_URL)',
      },
    ]);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await this.queue.catch(() => undefined);
  }

  private result(effects: BrokerEffect[]): BrokerResult {
    return { connector: this.name, effects };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Writes the allowlist (atomically) if it differs from the file, and reloads the server then. */
  private async write(): Promise<Synced> {
    const blocked = await this.blockedSet();
    const allowed = new Set((await this.opts.activeDevices()).filter((id) => !blocked.has(id) && !this.kicking.has(id)));
    const content = natsUsersFile([...allowed].sort().map((id) => this.opts.identity(id)));
    const current = await readFile(this.opts.usersFile, 'utf8').catch(() => undefined);
    if (current === content) return { changed: false, reloaded: undefined, allowed };
    await atomicWrite(this.opts.usersFile, content, 0o644);
    return { changed: true, reloaded: await this.reload(), allowed };
  }

  /** Asks the server to reread its configuration and waits until /varz shows it did. */
  private async reload(): Promise<{ confirmed: boolean; detail?: string }> {
    const before = await this.loadTime().catch(() => undefined);
    try {
      await this.signal();
    } catch (e) {
      throw new NatsReloadError(`broker connector nats: could not reload the server: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (before === undefined)
      return { confirmed: false, detail: `the monitoring endpoint ${this.opts.monitorUrl} did not answer: the reload is not confirmed` };
    const end = Date.now() + this.timeoutMs;
    for (;;) {
      const now = await this.loadTime().catch(() => undefined);
      if (now !== undefined && now !== before) return { confirmed: true };
      if (Date.now() > end)
        return {
          confirmed: false,
          detail: `the server did not reload within ${this.timeoutMs} ms (/varz config_load_time unchanged; see its log)`,
        };
      await sleep(50);
    }
  }

  private async signal(): Promise<void> {
    const r = this.opts.reload;
    if ('pidFile' in r) {
      const pid = Number((await readFile(r.pidFile, 'utf8')).trim());
      if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no process id in ${r.pidFile}`);
      process.kill(pid, 'SIGHUP');
      return;
    }
    await new Promise<void>((resolve, reject) =>
      execFile('/bin/sh', ['-c', r.command], { timeout: this.timeoutMs }, (e, _out, err) =>
        e ? reject(new Error(`${r.command}: ${err.trim() || e.message}`)) : resolve(),
      ),
    );
  }

  private async loadTime(): Promise<string> {
    const v = (await this.monitor('/varz')) as { config_load_time?: unknown };
    if (typeof v.config_load_time !== 'string') throw new Error('no config_load_time in /varz');
    return v.config_load_time;
  }

  /** Each identity's live sessions, by device id. */
  private async sessionsOf(ids: string[]): Promise<Map<string, NatsSession[]>> {
    const want = new Map(ids.map((id) => [this.opts.identity(id), id]));
    const out = new Map<string, NatsSession[]>(ids.map((id) => [id, []]));
    for (let offset = 0; ;) {
      const page = (await this.monitor(`/connz?auth=true&limit=1024&offset=${offset}`)) as {
        connections?: ConnzConnection[];
        total?: number;
      };
      const conns = page.connections ?? [];
      for (const c of conns) {
        const id = c.authorized_user ? want.get(c.authorized_user) : undefined;
        if (id) out.get(id)!.push({ cid: c.cid, mqttClient: c.mqtt_client });
      }
      offset += conns.length;
      if (conns.length === 0 || offset >= (page.total ?? 0)) return out;
    }
  }

  /** The identities without a session, once all are gone or after timeoutMs. */
  private async sessionsGone(ids: string[]): Promise<Set<string>> {
    const end = Date.now() + this.timeoutMs;
    for (;;) {
      const s = await this.sessionsOf(ids);
      const gone = new Set(ids.filter((id) => s.get(id)!.length === 0));
      if (gone.size === ids.length || Date.now() > end) return gone;
      await sleep(100);
    }
  }

  private async monitor(path: string): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(new URL(path, this.opts.monitorUrl), { signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (e) {
      throw unavailable(`monitoring endpoint ${this.opts.monitorUrl}: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!res.ok) throw unavailable(`monitoring endpoint ${path}: HTTP ${res.status}`);
    return res.json();
  }

  /** Read anew each time: another process of the service (SERVE_PROCESSES) may have changed it. */
  private async blockedSet(): Promise<Set<string>> {
    let text: string | undefined;
    try {
      text = await readFile(this.blockFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const list = text === undefined ? [] : ((JSON.parse(text) as { blocked?: unknown }).blocked ?? []);
    if (!Array.isArray(list) || list.some((x) => typeof x !== 'string')) throw new Error(`${this.blockFile}: not a block list`);
    return new Set(list as string[]);
  }

  private async saveBlocked(blocked: Set<string>): Promise<void> {
    await atomicWrite(this.blockFile, `${JSON.stringify({ blocked: [...blocked].sort() }, null, 2)}\n`, 0o600);
  }
}

/** The users file is written but the server could not be told to reread it. */
class NatsReloadError extends DomainError {
  constructor(message: string) {
    super('Unavailable', message, { connector: 'nats' });
  }
}

const sessionName = (s: NatsSession) => s.mqttClient ?? `cid:${s.cid}`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function unavailable(message: string): DomainError {
  return new DomainError('Unavailable', `broker connector nats: ${message}`, { connector: 'nats' });
}

/** A temporary file beside the target, renamed over it: NATS never reads half a file. */
async function atomicWrite(path: string, content: string, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, content, { mode });
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** Device ids: the connector names them to NATS by their SAN URI. */
function checkIds(ids: string[]): string[] {
  const uniq = [...new Set(ids)];
  for (const id of uniq) {
    if (typeof id !== 'string' || id.length === 0 || id.length > 256 || /[\0"\\\n]/.test(id))
      throw badRequest(`not a device id: ${JSON.stringify(id)}`);
  }
  return uniq;
}
