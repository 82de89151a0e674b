// A private RabbitMQ node configured from `mqtt-ca broker-setup --broker rabbitmq`'s directory: its own
// node name, ports (AMQP, MQTT over TLS, management, distribution), data, log and HOME (its own Erlang
// cookie), stopped by PID with nothing of it left behind. Never the system node (rabbit@localhost on 5672).
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { freePort, startChild, type Child } from './processes.js';

/** The real server script: the Debian wrapper (/usr/sbin/rabbitmq-server) would switch to the rabbitmq user. */
export const RABBITMQ_SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server';

export interface RabbitNode {
  nodename: string;
  /** The broker-setup directory it reads. */
  setupDir: string;
  ports: { amqp: number; mqtts: number; management: number; dist: number };
  /** mqtts://localhost:<port> */
  mqttUrl: string;
  /** http://127.0.0.1:<management port> */
  managementUrl: string;
  username: string;
  password: string;
  /** The management API as the connector user: JSON in, JSON (or undefined) out; throws on anything but 2xx/404 when allowed. */
  api<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T | undefined }>;
  /** Creates a device user (certificate login only: no password) with permissions on the vhost. */
  addDevice(user: string): Promise<void>;
  output(): string;
  stop(): Promise<void>;
}

/** The OS processes whose command line names this node (beam.smp and its children), by /proc. */
function processesOf(nodename: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(nodename)) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * Starts a node from a broker-setup output directory (written with --broker rabbitmq, its --port and
 * --management-port chosen free by the caller). The one change to the files: the AMQP listener
 * moves from 5672 (the system node's) to a free port. Resolves once the node says it started and
 * the management API answers the connector user.
 */
export async function startRabbitFromSetup(setupDir: string, opts: { timeoutMs?: number } = {}): Promise<RabbitNode> {
  const conf = readFileSync(join(setupDir, 'rabbitmq.conf'), 'utf8');
  const mqtts = Number(/^mqtt\.listeners\.ssl\.default = (?:.*:)?(\d+)$/m.exec(conf)?.[1]);
  const management = Number(/^management\.tcp\.port = (\d+)$/m.exec(conf)?.[1]);
  const username = /^default_user = (.+)$/m.exec(conf)?.[1];
  if (!mqtts || !management || !username) throw new Error(`${setupDir}/rabbitmq.conf is not broker-setup's`);
  const password = readFileSync(join(setupDir, 'rabbitmq-connector.password'), 'utf8').trim();
  const amqp = await freePort();
  const dist = await freePort();
  writeFileSync(
    join(setupDir, 'rabbitmq.conf'),
    conf.replace(/^listeners\.tcp\.default = .*$/m, `listeners.tcp.default = 127.0.0.1:${amqp}`),
  );

  const nodename = `mqttca-${randomBytes(5).toString('hex')}@localhost`;
  const base = join(setupDir, '.rabbitmq-node');
  for (const d of ['mnesia', 'log', 'home']) mkdirSync(join(base, d), { recursive: true });
  const env = {
    HOME: join(base, 'home'),
    RABBITMQ_NODENAME: nodename,
    RABBITMQ_CONFIG_FILE: join(setupDir, 'rabbitmq.conf'),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(setupDir, 'advanced.config'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(setupDir, 'enabled_plugins'),
    RABBITMQ_MNESIA_BASE: join(base, 'mnesia'),
    RABBITMQ_LOG_BASE: join(base, 'log'),
    RABBITMQ_LOGS: '-',
    RABBITMQ_DIST_PORT: String(dist),
  };
  let child: Child;
  try {
    child = await startChild(RABBITMQ_SERVER, [], env, /Server startup complete/, opts.timeoutMs ?? 90_000);
  } catch (e) {
    for (const pid of processesOf(nodename)) process.kill(pid, 'SIGKILL');
    throw e;
  }
  // A test process that dies leaves no node behind.
  const killAll = () => {
    for (const pid of processesOf(nodename)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  };
  process.once('exit', killAll);

  const managementUrl = `http://127.0.0.1:${management}`;
  const auth = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  const api = async <T>(method: string, path: string, body?: unknown) => {
    const res = await fetch(`${managementUrl}${path}`, {
      method,
      headers: { authorization: auth, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (res.status >= 300 && res.status !== 404) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return { status: res.status, body: text ? (JSON.parse(text) as T) : undefined };
  };
  const end = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await api('GET', '/api/overview')).status === 200) break;
    } catch (e) {
      if (Date.now() > end) {
        await child.stop();
        killAll();
        throw new Error(`the management API of ${nodename} did not answer: ${(e as Error).message}\n${child.output()}`);
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }

  return {
    nodename,
    setupDir,
    ports: { amqp, mqtts, management, dist },
    mqttUrl: `mqtts://localhost:${mqtts}`,
    managementUrl,
    username,
    password,
    api,
    async addDevice(user: string) {
      const u = encodeURIComponent(user);
      await api('PUT', `/api/users/${u}`, { password_hash: '', tags: '' });
      await api('PUT', `/api/permissions/%2F/${u}`, { configure: '.*', write: '.*', read: '.*' });
    },
    output: () => child.output(),
    async stop() {
      process.removeListener('exit', killAll);
      // The script traps SIGTERM and stops the VM gracefully; whatever is left after it exited is killed.
      await child.stop();
      const until = Date.now() + 15_000;
      while (processesOf(nodename).length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      killAll();
    },
  };
}

export interface DeviceTls {
  deviceId: string;
  key: string;
  cert: string;
  ca: string;
}

/** An mqtt.js client of a device on RabbitMQ (MQTT 3.1.1: the 3.10 plugin has no MQTT 5), connected; rejects when refused. */
export async function connectRabbitDevice(
  node: Pick<RabbitNode, 'mqttUrl'>,
  creds: DeviceTls,
  opts: IClientOptions = {},
): Promise<MqttClient> {
  const client = mqtt.connect(node.mqttUrl, {
    clientId: creds.deviceId,
    key: creds.key,
    cert: creds.cert,
    ca: creds.ca,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    ...opts,
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', (e) => (client.end(true), reject(e)));
    client.once('close', () => reject(new Error('the broker closed the connection')));
  });
  return client;
}
