import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { DomainError, badRequest } from '../shared/errors.js';
import type { BrokerAction, BrokerConnector, BrokerEffect, BrokerEvent, BrokerResult } from './connector.js';

export const DYNSEC_TOPIC = '$CONTROL/dynamic-security/v1';
export const DYNSEC_RESPONSE_TOPIC = '$CONTROL/dynamic-security/v1/response';
export const BROKER_LOG_TOPIC = '$SYS/broker/log/#';
export const DEFAULT_DENY_ROLE = 'mqtt-ca-blocked';
/** The deny role's priority on a client: above any role an operator gives (dynsec checks a client's roles highest first). */
export const DENY_ROLE_PRIORITY = 1_000_000;
/** The ACLs of the deny role: every publish, every delivery, every subscription. */
export const DENY_ACLS = ['publishClientSend', 'publishClientReceive', 'subscribePattern'].map((acltype) => ({
  acltype,
  topic: '#',
  allow: false,
  priority: DENY_ROLE_PRIORITY,
}));
/** What a client entry that block() had to create says of itself: unblock() removes it again. */
export const CREATED_BY_BLOCK = 'created by mqtt-ca block(); removed again by unblock()';
const CREATED_BY_DISCONNECT = 'created by mqtt-ca disconnect() to end its sessions; deleted at once';

export interface TlsCredentials {
  key: string;
  cert: string;
  /** The broker's server trust anchors (PEM). */
  ca: string | string[];
}

export interface MosquittoDynsecOptions {
  /** mqtts://host:port (mqtt:// for plain test brokers, with username and password). */
  url: string;
  /** The MQTT client id of the connector's control connection (default: mqtt-ca-connector-<random>). */
  clientId?: string | undefined;
  username?: string | undefined;
  password?: string | undefined;
  /** The service's own client certificate and the broker's CA; read at each (re)connection, so a reissued certificate is picked up. */
  tls?: (() => Promise<TlsCredentials>) | undefined;
  denyRole?: string | undefined;
  /** Notices go to `${notifyTopic}/${kind}`. */
  notifyTopic: string;
  /** How long to wait for the connection, a PUBACK or a dynsec answer. */
  timeoutMs?: number | undefined;
  /** How long to wait for the broker's log ($SYS/broker/log, `log_dest topic`) to show the effect of a command. */
  confirmMs?: number | undefined;
}

interface DynsecCommand {
  command: string;
  [k: string]: unknown;
}

interface DynsecResponse {
  command: string;
  error?: string;
  data?: Record<string, unknown>;
  correlationData?: string;
}

interface DynsecClient {
  username: string;
  textdescription?: string;
  disabled?: boolean;
  roles?: { rolename: string; priority?: number }[];
  groups?: { groupname: string }[];
}

/** One step of a watched batch: the commands for one client, and whether an error of one is expected. */
interface Step {
  username: string;
  commands: { cmd: DynsecCommand; allowError?: RegExp }[];
}

interface Connection {
  client: MqttClient;
  /** The certificate the connection was made with: a reissued one means reconnecting. */
  cert: string | undefined;
  pending: Map<string, (r: DynsecResponse) => void>;
  log: LogLine[];
  logSeq: number;
  /** Whether the broker lets us read its log at all (SUBACK of $SYS/broker/log/#). */
  logGranted: boolean;
  logWaiters: Set<() => void>;
}

interface LogLine {
  seq: number;
  text: string;
}

const KICK_RE = /Client (\S+) been disconnected by administrative action\./;

/**
 * Mosquitto's dynamic-security plugin over MQTT: JSON commands to `$CONTROL/dynamic-security/v1`,
 * answers on `.../response` matched by correlationData. One control connection, made on first use,
 * authenticated by the service's own client certificate (whose CN the broker's dynsec config
 * grants the admin role: `mqtt-ca broker-setup`).
 *
 * What Mosquitto 2.0.11 does (pinned in test/integration/broker-connectors.test.ts):
 * - With `use_identity_as_username`, certificate logins skip the password check, so
 *   `disableClient` kicks a client but does not keep it out; role ACLs do apply to it. block()
 *   therefore adds a deny role (at the top priority) and kicks; a lasting lock-out is revocation
 *   plus a CRL reload, which does not end connected sessions: the kick does.
 * - `addClientRole`, `removeClientRole`, `disableClient` and `deleteClient` each kick the
 *   username's sessions; `addClientRole` for a role the client has answers "Internal error", so
 *   the roles are read first.
 * - Successful commands are logged ("dynsec: <clientid>/<username> | <command> | ..."), a kick as
 *   "Client <id> been disconnected by administrative action.". With `log_dest topic` these lines
 *   are published on `$SYS/broker/log/#`: the connector reads them to confirm which sessions the
 *   broker ended. Each client's commands sit between two marker commands (listGroups with an
 *   offset unique to the batch, which the log shows), so the kicks between them are that
 *   client's. Without the log, the sessions' end is reported unconfirmed (after confirmMs).
 * - A client without a dynsec entry may neither publish nor subscribe under the default
 *   defaultACLAccess; block() creates one (marked) and unblock() deletes it again.
 */
export class MosquittoDynsecConnector implements BrokerConnector {
  readonly name = 'mosquitto';
  private conn: Connection | undefined;
  private connecting: Promise<Connection> | undefined;
  /** One batch at a time: their log lines must not interleave. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly clientId: string;
  private readonly denyRole: string;
  private readonly timeoutMs: number;
  private readonly confirmMs: number;

  constructor(private readonly opts: MosquittoDynsecOptions) {
    this.clientId = opts.clientId ?? `mqtt-ca-connector-${randomBytes(6).toString('hex')}`;
    this.denyRole = opts.denyRole ?? DEFAULT_DENY_ROLE;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.confirmMs = opts.confirmMs ?? this.timeoutMs;
  }

  disconnect(clientIds: string[], reason: string): Promise<BrokerResult> {
    return this.serial(async () => {
      const ids = checkIds(clientIds);
      const before = await this.readClients(ids);
      const steps: Step[] = ids.map((u) => {
        const c = before.get(u);
        // A client without an entry can only be kicked by creating one and deleting it again.
        if (!c)
          return {
            username: u,
            commands: [
              { cmd: { command: 'createClient', username: u, textdescription: CREATED_BY_DISCONNECT } },
              { cmd: { command: 'deleteClient', username: u } },
            ],
          };
        return { username: u, commands: kickCommands(u, c) };
      });
      const watched = await this.watched(steps);
      return this.result(ids.map((u, i) => this.sessionEffect(u, 'disconnect', watched[i]!, reason)));
    });
  }

  block(clientIds: string[], reason: string): Promise<BrokerResult> {
    return this.serial(async () => {
      const ids = checkIds(clientIds);
      await this.ensureDenyRole();
      const before = await this.readClients(ids);
      const steps: Step[] = ids.map((u) => {
        const c = before.get(u);
        const commands: Step['commands'] = [];
        if (!c) commands.push({ cmd: { command: 'createClient', username: u, textdescription: CREATED_BY_BLOCK } });
        if (!c?.roles?.some((r) => r.rolename === this.denyRole))
          commands.push({ cmd: { command: 'addClientRole', username: u, rolename: this.denyRole, priority: DENY_ROLE_PRIORITY } });
        commands.push(...kickCommands(u, c ?? { username: u }), { cmd: { command: 'getClient', username: u } });
        return { username: u, commands };
      });
      const watched = await this.watched(steps);
      return this.result(
        ids.map((u, i) => {
          const w = watched[i]!;
          const readBack = clientOf(w.responses.at(-1)!);
          const hasDeny = readBack?.roles?.find((r) => r.rolename === this.denyRole);
          const e = this.sessionEffect(u, 'block', w, reason);
          if (!hasDeny)
            return { ...e, confirmed: false, detail: `the deny role ${this.denyRole} is not among the client's roles as read back` };
          const topRole = !(readBack!.roles ?? []).some(
            (r) => r.rolename !== this.denyRole && (r.priority ?? 0) >= (hasDeny.priority ?? 0),
          );
          if (!topRole)
            return { ...e, confirmed: false, detail: `the deny role ${this.denyRole} is not the client's highest-priority role` };
          return { ...e, detail: `role ${this.denyRole} denies every publish and subscribe; ${e.detail}` };
        }),
      );
    });
  }

  unblock(clientIds: string[], reason: string): Promise<BrokerResult> {
    return this.serial(async () => {
      const ids = checkIds(clientIds);
      const before = await this.readClients(ids);
      const effects: BrokerEffect[] = [];
      const steps: Step[] = [];
      for (const u of ids) {
        const c = before.get(u);
        if (!c?.roles?.some((r) => r.rolename === this.denyRole)) {
          effects.push({
            clientId: u,
            action: 'unblock',
            applied: true,
            confirmed: true,
            detail: c
              ? `not blocked: the client does not have role ${this.denyRole}`
              : 'not blocked: the broker has no entry for this client',
          });
          continue;
        }
        const commands: Step['commands'] = [{ cmd: { command: 'removeClientRole', username: u, rolename: this.denyRole } }];
        const onlyDeny = (c.roles ?? []).every((r) => r.rolename === this.denyRole) && (c.groups ?? []).length === 0;
        if (c.textdescription === CREATED_BY_BLOCK && onlyDeny) commands.push({ cmd: { command: 'deleteClient', username: u } });
        commands.push({ cmd: { command: 'getClient', username: u }, allowError: /not found/i });
        steps.push({ username: u, commands });
      }
      const watched = await this.watched(steps);
      steps.forEach((s, i) => {
        const w = watched[i]!;
        const readBack = clientOf(w.responses.at(-1)!);
        const removed = !readBack || !(readBack.roles ?? []).some((r) => r.rolename === this.denyRole);
        const what = readBack
          ? `role ${this.denyRole} removed; the client's other roles are as they were`
          : 'the client entry block() had created is deleted';
        effects.push({
          clientId: s.username,
          action: 'unblock',
          applied: true,
          confirmed: removed,
          detail: removed
            ? `${what} (read back; reason: ${reason})`
            : `the deny role ${this.denyRole} is still among the client's roles as read back`,
          ...(w.kicked ? { sessionsEnded: w.kicked } : {}),
        });
      });
      const order = new Map(ids.map((u, i) => [u, i]));
      return this.result(effects.sort((a, b) => order.get(a.clientId)! - order.get(b.clientId)!));
    });
  }

  notify(event: BrokerEvent): Promise<BrokerResult> {
    return this.serial(async () => {
      if (!event.kind || /[+#/\0]/.test(event.kind)) throw badRequest('an event kind must be a non-empty MQTT topic level (no + # /)');
      const conn = await this.connection();
      const topic = `${this.opts.notifyTopic}/${event.kind}`;
      await this.publish(conn, topic, JSON.stringify({ ...event, at: new Date().toISOString() }));
      return this.result([
        {
          clientId: event.subject,
          action: 'notify',
          applied: true,
          confirmed: true,
          detail: `published on ${topic}, acknowledged by the broker (PUBACK)`,
        },
      ]);
    });
  }

  async close(): Promise<void> {
    const c = this.conn;
    this.conn = undefined;
    this.connecting = undefined;
    if (c) await c.client.endAsync(true).catch(() => undefined);
  }

  // ---- dynsec state --------------------------------------------------------------------------

  /** The deny role with exactly the deny ACLs (created, or repaired if someone changed it). */
  private async ensureDenyRole(): Promise<void> {
    const [got] = await this.run([{ command: 'getRole', rolename: this.denyRole }], [/not found/i]);
    if (got!.error) {
      await this.run([
        {
          command: 'createRole',
          rolename: this.denyRole,
          textdescription: 'mqtt-ca: denies every publish and subscribe (incident block)',
          acls: DENY_ACLS,
        },
      ]);
      return;
    }
    const acls =
      (got!.data?.role as { acls?: { acltype: string; topic: string; allow: boolean; priority?: number }[] } | undefined)?.acls ?? [];
    const fixes: DynsecCommand[] = [];
    for (const want of DENY_ACLS) {
      const have = acls.find((a) => a.acltype === want.acltype && a.topic === want.topic);
      if (have && have.allow === false && (have.priority ?? 0) === want.priority) continue;
      if (have) fixes.push({ command: 'removeRoleACL', rolename: this.denyRole, acltype: want.acltype, topic: want.topic });
      fixes.push({ command: 'addRoleACL', rolename: this.denyRole, ...want });
    }
    if (fixes.length) await this.run(fixes);
  }

  private async readClients(ids: string[]): Promise<Map<string, DynsecClient>> {
    const out = new Map<string, DynsecClient>();
    for (let i = 0; i < ids.length; i += 200) {
      const chunk = ids.slice(i, i + 200);
      const rs = await this.run(
        chunk.map((u) => ({ command: 'getClient', username: u })),
        chunk.map(() => /not found/i),
      );
      rs.forEach((r, j) => {
        const c = clientOf(r);
        if (c) out.set(chunk[j]!, c);
      });
    }
    return out;
  }

  // ---- watched batches: commands whose effect the broker's log shows -------------------------

  /**
   * Runs the steps as one batch, each step between two marker commands (getClient of the
   * connector's own entry), and reads the broker's log for the sessions kicked between them.
   */
  private async watched(steps: Step[]): Promise<{ responses: DynsecResponse[]; kicked?: string[]; logDetail?: string }[]> {
    if (steps.length === 0) return [];
    const out: { responses: DynsecResponse[]; kicked?: string[]; logDetail?: string }[] = [];
    for (let i = 0; i < steps.length; i += 100) out.push(...(await this.watchedChunk(steps.slice(i, i + 100))));
    return out;
  }

  private async watchedChunk(steps: Step[]) {
    const conn = await this.connection();
    // Markers: listGroups with an offset no broker reaches, logged as "| listGroups | ... offset=<n>": unique to this batch.
    // (The broker reads the offset as a 32-bit int: larger ones are clamped.)
    const base = 100_000_000 + (randomBytes(4).readUInt32BE(0) % 2_000_000_000);
    const markerAt = (i: number): DynsecCommand => ({ command: 'listGroups', verbose: false, count: 1, offset: base + i });
    const cmds: DynsecCommand[] = [markerAt(0)];
    const allow: (RegExp | undefined)[] = [undefined];
    const ranges: [number, number][] = [];
    steps.forEach((s, i) => {
      const start = cmds.length;
      for (const c of s.commands) {
        cmds.push(c.cmd);
        allow.push(c.allowError);
      }
      ranges.push([start, cmds.length]);
      cmds.push(markerAt(i + 1));
      allow.push(undefined);
    });
    const fromSeq = conn.logSeq;
    const responses = await this.run(cmds, allow);
    const markerRe = new RegExp(`dynsec: ${escapeRe(this.clientId)}/\\S* \\| listGroups \\|.*offset=(${base}|${base + steps.length})\\s*$`);
    const lines = conn.logGranted
      ? await this.waitForLog(conn, fromSeq, (ls) => ls.filter((l) => markerRe.test(l.text)).length >= 2)
      : undefined;
    const markerOf = (text: string) => {
      const m = new RegExp(`dynsec: ${escapeRe(this.clientId)}/\\S* \\| listGroups \\|.*offset=(\\d+)\\s*$`).exec(text);
      const n = m ? Number(m[1]) - base : -1;
      return n >= 0 && n <= steps.length ? n : undefined;
    };
    // The kicks logged between a step's opening and closing marker are that client's.
    const kicks = new Map<number, string[]>();
    if (lines) {
      let current: number | undefined;
      for (const l of lines) {
        const m = markerOf(l.text);
        if (m !== undefined) {
          current = m;
          continue;
        }
        const k = KICK_RE.exec(l.text);
        if (k && current !== undefined && current < steps.length && k[1] !== this.clientId)
          kicks.set(current, [...(kicks.get(current) ?? []), k[1]!]);
      }
    }
    const logDetail = conn.logGranted
      ? `the broker's log did not show the commands within ${this.confirmMs} ms: publish it with \`log_dest topic\` (log_type information and notice)`
      : 'the broker refuses the connector its log ($SYS/broker/log/#): grant it in the dynsec admin role';
    return steps.map((_, i) => {
      const [a, b] = ranges[i]!;
      const rs = responses.slice(a, b);
      return lines ? { responses: rs, kicked: kicks.get(i) ?? [] } : { responses: rs, logDetail };
    });
  }

  private sessionEffect(
    username: string,
    action: BrokerAction,
    w: { kicked?: string[]; logDetail?: string },
    reason: string,
  ): BrokerEffect {
    if (!w.kicked)
      return {
        clientId: username,
        action,
        applied: true,
        confirmed: false,
        detail: `kicked, but the end of its sessions is not confirmed: ${w.logDetail}`,
      };
    const detail = w.kicked.length
      ? `the broker ended ${w.kicked.length} session(s): ${w.kicked.join(', ')} (reason: ${reason})`
      : `no session was connected (the broker's log shows none ended; reason: ${reason})`;
    return { clientId: username, action, applied: true, confirmed: true, detail, sessionsEnded: w.kicked };
  }

  private waitForLog(conn: Connection, fromSeq: number, done: (lines: LogLine[]) => boolean): Promise<LogLine[] | undefined> {
    const since = () => conn.log.filter((l) => l.seq > fromSeq);
    return new Promise((resolve) => {
      const check = () => {
        const ls = since();
        if (!done(ls)) return false;
        finish(ls);
        return true;
      };
      const finish = (v: LogLine[] | undefined) => {
        clearTimeout(timer);
        conn.logWaiters.delete(onLine);
        resolve(v);
      };
      const onLine = () => void check();
      const timer = setTimeout(() => finish(undefined), this.confirmMs);
      conn.logWaiters.add(onLine);
      check();
    });
  }

  // ---- the control connection ----------------------------------------------------------------

  private result(effects: BrokerEffect[]): BrokerResult {
    return { connector: this.name, effects };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Sends commands in one message; every answer must come back and none may be an error (unless allowed). */
  private async run(commands: DynsecCommand[], allowErrors: (RegExp | undefined)[] = []): Promise<DynsecResponse[]> {
    const conn = await this.connection();
    const ids = commands.map(() => randomBytes(8).toString('hex'));
    const answers = ids.map(
      (id) =>
        new Promise<DynsecResponse>((resolve) => {
          conn.pending.set(id, resolve);
        }),
    );
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              unavailable(
                `no answer from the dynamic-security plugin of ${this.opts.url} within ${this.timeoutMs} ms (is mosquitto_dynamic_security loaded?)`,
              ),
            ),
          this.timeoutMs,
        );
      });
      await Promise.race([
        this.publish(conn, DYNSEC_TOPIC, JSON.stringify({ commands: commands.map((c, i) => ({ ...c, correlationData: ids[i] })) })),
        timeout,
      ]);
      const rs = await Promise.race([Promise.all(answers), timeout]);
      rs.forEach((r, i) => {
        if (r.error && !allowErrors[i]?.test(r.error)) {
          const c = commands[i]!;
          const about = ['username', 'rolename']
            .filter((k) => k in c)
            .map((k) => `${k}=${String(c[k])}`)
            .join(' ');
          throw unavailable(`the broker refused ${c.command}${about ? ` (${about})` : ''}: ${r.error}`, {
            command: c.command,
            error: r.error,
          });
        }
      });
      return rs;
    } finally {
      clearTimeout(timer);
      for (const id of ids) conn.pending.delete(id);
    }
  }

  private publish(conn: Connection, topic: string, payload: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(unavailable(`no PUBACK from ${this.opts.url} within ${this.timeoutMs} ms`)), this.timeoutMs);
      conn.client.publish(topic, payload, { qos: 1 }, (err) => {
        clearTimeout(timer);
        if (err)
          reject(unavailable(`the broker refused a publish on ${topic}: ${err.message} (does the connector's dynsec role allow it?)`));
        else resolve();
      });
    });
  }

  private async connection(): Promise<Connection> {
    const creds = this.opts.tls ? await this.opts.tls() : undefined;
    if (this.conn && this.conn.client.connected && this.conn.cert === creds?.cert) return this.conn;
    if (this.conn) await this.close();
    this.connecting ??= this.connect(creds).finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private async connect(creds: TlsCredentials | undefined): Promise<Connection> {
    const o = this.opts;
    const options: IClientOptions = {
      clientId: this.clientId,
      protocolVersion: 5,
      clean: true,
      reconnectPeriod: 0, // a lost connection is made again on the next use
      connectTimeout: this.timeoutMs,
      ...(o.username ? { username: o.username } : {}),
      ...(o.password ? { password: o.password } : {}),
      ...(creds ? { key: creds.key, cert: creds.cert, ca: creds.ca } : {}),
    };
    const client = mqtt.connect(o.url, options);
    const conn: Connection = {
      client,
      cert: creds?.cert,
      pending: new Map(),
      log: [],
      logSeq: 0,
      logGranted: false,
      logWaiters: new Set(),
    };
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no CONNACK within ${this.timeoutMs} ms`)), this.timeoutMs + 500);
        client.once('connect', () => (clearTimeout(timer), resolve()));
        client.once('error', (e) => (clearTimeout(timer), reject(e)));
        client.once(
          'close',
          () => (clearTimeout(timer), reject(new Error('the broker closed the connection (was the connector certificate refused?)'))),
        );
      });
    } catch (e) {
      client.end(true);
      throw unavailable(`cannot connect to the broker at ${o.url}: ${errorText(e)}`);
    }
    client.on('error', () => undefined);
    client.on('close', () => {
      if (this.conn === conn) this.conn = undefined;
    });
    client.on('message', (topic, payload) => {
      if (topic === DYNSEC_RESPONSE_TOPIC) {
        let body: { responses?: DynsecResponse[] };
        try {
          body = JSON.parse(payload.toString('utf8'));
        } catch {
          return;
        }
        for (const r of body.responses ?? []) {
          if (r.correlationData) conn.pending.get(r.correlationData)?.(r);
        }
      } else if (topic.startsWith('$SYS/broker/log/')) {
        conn.log.push({ seq: ++conn.logSeq, text: payload.toString('utf8') });
        if (conn.log.length > 20_000) conn.log.splice(0, conn.log.length - 10_000);
        for (const w of [...conn.logWaiters]) w();
      }
    });
    // mqtt.js rejects a subscribe the broker refuses (SUBACK 0x80 and up).
    try {
      await client.subscribeAsync(DYNSEC_RESPONSE_TOPIC, { qos: 1 });
    } catch (e) {
      client.end(true);
      throw unavailable(
        `the broker at ${o.url} refused the connector ${DYNSEC_RESPONSE_TOPIC} (${errorText(e)}): give its identity the dynsec admin role (see mqtt-ca broker-setup)`,
      );
    }
    conn.logGranted = await client.subscribeAsync(BROKER_LOG_TOPIC, { qos: 0 }).then(
      () => true,
      () => false,
    );
    this.conn = conn;
    return conn;
  }
}

/** Ends a client's sessions: disable + enable (disable alone: a password client stays out; a certificate client does not). */
function kickCommands(username: string, c: DynsecClient): Step['commands'] {
  // An operator's disable stays as it was: the kick of a disabled client is a disable alone.
  return c.disabled
    ? [{ cmd: { command: 'disableClient', username } }]
    : [{ cmd: { command: 'disableClient', username } }, { cmd: { command: 'enableClient', username } }];
}

function clientOf(r: DynsecResponse): DynsecClient | undefined {
  return r.error ? undefined : (r.data?.client as DynsecClient | undefined);
}

function checkIds(ids: string[]): string[] {
  const uniq = [...new Set(ids)];
  for (const id of uniq) {
    if (typeof id !== 'string' || id.length === 0 || id.length > 256 || /[\0]/.test(id))
      throw badRequest(`not a broker client id: ${JSON.stringify(id)}`);
  }
  return uniq;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const unavailable = (msg: string, details?: Record<string, unknown>) => new DomainError('Unavailable', msg, details);
const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));
