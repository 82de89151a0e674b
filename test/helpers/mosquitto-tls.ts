// A private Mosquitto with mutual TLS against a service's own CA, its dynamic-security plugin
// seeded from `mqtt-ca broker-setup` (writeBrokerSetup), and its log on $SYS/broker/log (log_dest
// topic), so the broker connector can be tested for real. Plus device certificates for mqtt.js, and
// a service whose connector speaks to such a broker (startConnectorBroker).
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { Service } from '../../src/main.js';
import { crlBundlePem, writeBrokerSetup, type BrokerSetupOptions } from '../../src/broker-identity.js';
import { p256Csr } from './csr.js';
import { bootstrap } from '../../src/bootstrap.js';
import type { DbTarget } from './db.js';
import { tempDir, writeTemp } from './openssl.js';
import { freePort, startChild, type Child } from './processes.js';
import { makeService } from './service.js';

export const DYNSEC_PLUGIN = '/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so';

/** mosquitto_ctrl with a certificate: the outside view of the broker's dynsec state (status 0: the command was allowed). */
export function dynsecCtrl(
  broker: Pick<MosquittoTls, 'port' | 'dir'>,
  files: { cert: string; key: string },
  args: string[],
): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('mosquitto_ctrl', [
      '-h',
      'localhost',
      '-p',
      String(broker.port),
      '--cafile',
      join(broker.dir, 'ca.pem'),
      '--cert',
      files.cert,
      '--key',
      files.key,
      'dynsec',
      ...args,
    ]);
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    child.stderr.on('data', (c: Buffer) => (out += c));
    child.on('close', (status) => resolve({ status, out }));
  });
}

export interface MosquittoTls {
  port: number;
  /** mqtts://localhost:<port> (the server certificate names localhost and 127.0.0.1). */
  url: string;
  dir: string;
  /** The CA bundle the broker trusts for client certificates (= the service's CA certificates). */
  caPem: string;
  dynsecFile: string;
  /** Everything the broker wrote to stderr so far. */
  output(): string;
  /** The running broker's process id (for a reload command such as crl-sync's). */
  pid(): number;
  /** Writes the service's current CRLs to the broker's crlfile and sends SIGHUP; resolves once the broker says it reloaded. */
  reloadCrl(): Promise<void>;
  /** Stops the broker (its dynsec state stays in dir). */
  stop(): Promise<void>;
  /** Starts it again on the same port and files (after stop()). */
  start(): Promise<void>;
}

export interface MosquittoTlsOptions {
  /** Extra dynsec roles, clients and default ACL access for the seed. */
  seed?: BrokerSetupOptions['seed'];
  /** Extra lines for mosquitto.conf. */
  conf?: string[];
  /** The port (default: a free one), e.g. to configure BROKER_MQTT_URL before the broker exists. */
  port?: number;
  /** false: no `log_dest topic` (the connector cannot confirm kicks). */
  logToTopic?: boolean;
  /** false: only the log types broker-setup's mosquitto.conf names (default: `log_type all` on top). */
  logTypeAll?: boolean;
}

/**
 * Starts mosquitto on a free port: require_certificate, use_identity_as_username, cafile = the
 * service's CA certificates, crlfile = its CRLs, the dynsec plugin seeded by writeBrokerSetup
 * (the service's connector CN holds the admin role), log_dest topic.
 */
export async function startMosquittoTls(svc: Service, opts: MosquittoTlsOptions = {}): Promise<MosquittoTls> {
  const dir = tempDir();
  const port = opts.port ?? (await freePort());
  const files = await writeBrokerSetup(svc, {
    dir,
    port,
    bindAddress: '127.0.0.1',
    certificate: { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] },
    pluginPath: DYNSEC_PLUGIN,
    ...(opts.seed ? { seed: opts.seed } : {}),
  });
  // The test's files are private to the user running it; stderr for the test's own eyes.
  if (opts.logToTopic === false)
    writeFileSync(files.paths['mosquitto.conf']!, readFileSync(files.paths['mosquitto.conf']!, 'utf8').replace(/^log_dest topic$/m, ''));
  appendFileSync(
    files.paths['mosquitto.conf']!,
    [
      'user root',
      'persistence false',
      'log_dest stderr',
      ...(opts.logTypeAll === false ? [] : ['log_type all']),
      ...(opts.conf ?? []),
      '',
    ].join('\n'),
  );

  let child: Child | undefined;
  let earlier = '';
  const start = async () => {
    child = await startChild('mosquitto', ['-c', files.paths['mosquitto.conf']!], {}, /mosquitto version [\d.]+ running/, 20_000);
    // A test process that dies leaves no broker behind.
    const c = child;
    process.once('exit', () => c.proc.kill('SIGKILL'));
  };
  await start();
  return {
    port,
    url: `mqtts://localhost:${port}`,
    dir,
    caPem: readFileSync(files.caFile, 'utf8'),
    dynsecFile: files.paths['dynamic-security.json']!,
    output: () => earlier + (child?.output() ?? ''),
    pid: () => child!.proc.pid!,
    async reloadCrl() {
      // What crl-sync would fetch once the full CRLs caught up with the revocations (they follow the delta in the background).
      await svc.crls.settled();
      writeFileSync(files.crlFile, await crlBundlePem(svc));
      const c = child!;
      const seen = (c.output().match(/Reloading config/g) ?? []).length;
      c.proc.kill('SIGHUP');
      const end = Date.now() + 10_000;
      while ((c.output().match(/Reloading config/g) ?? []).length === seen) {
        if (Date.now() > end) throw new Error('mosquitto did not reload');
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop() {
      earlier += child?.output() ?? '';
      await child?.stop();
      child = undefined;
    },
    start,
  };
}

export interface DeviceCredentials {
  deviceId: string;
  serial: string;
  /** For mqtt.js: key, cert (with its issuing chain) and the CA bundle to trust the broker with. */
  key: string;
  cert: string;
  ca: string;
}

/** Registers a device and enrolls it with a one-time token, as on the factory line. */
export async function enrollDevice(svc: Service, deviceId: string): Promise<DeviceCredentials> {
  const ctx = { actor: 'test' };
  await svc.devices.register({ id: deviceId, kind: 'client' }, ctx);
  const token = await svc.tokens.create({ deviceId }, ctx);
  const csr = p256Csr(deviceId);
  const enrolled = await svc.enrollment.enroll({
    credential: { kind: 'bearer', value: token.token },
    csr: csr.pem,
    ctx: { source: '127.0.0.1', requestId: `enroll-${deviceId}` },
  });
  const cas = (await svc.hierarchy.list()).filter((c) => c.certificate).map((c) => c.certificate!);
  const r = enrolled.result;
  return { deviceId, serial: r.serial, key: csr.keyPem, cert: r.certificate + r.chain.join(''), ca: cas.join('') };
}

/**
 * An mqtt.js client of a device on the broker (MQTT 5, no reconnects unless asked), connected.
 * Rejects when the broker refuses the connection.
 */
export async function connectDevice(
  broker: Pick<MosquittoTls, 'url'>,
  creds: DeviceCredentials,
  opts: IClientOptions = {},
): Promise<MqttClient> {
  const client = mqtt.connect(broker.url, {
    clientId: creds.deviceId,
    key: creds.key,
    cert: creds.cert,
    ca: creds.ca,
    protocolVersion: 5,
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

/** A dynsec ACL of a seeded role. */
type DynsecAcl = NonNullable<NonNullable<BrokerSetupOptions['seed']>['roles']>[number]['acls'][number];

/**
 * A dynsec seed of one role (default `fleet`) that may publish and subscribe under fleet/ (and
 * what `acls` add), held by the `clients` (usernames: the devices' certificate CNs).
 */
export function fleetSeed(
  clients: string[],
  opts: { rolename?: string; acls?: DynsecAcl[] } = {},
): NonNullable<MosquittoTlsOptions['seed']> {
  const rolename = opts.rolename ?? 'fleet';
  return {
    roles: [
      {
        rolename,
        acls: [
          { acltype: 'publishClientSend', topic: 'fleet/#', allow: true },
          { acltype: 'subscribePattern', topic: 'fleet/#', allow: true },
          ...(opts.acls ?? []),
        ],
      },
    ],
    clients: clients.map((username) => ({ username, roles: [{ rolename }] })),
  };
}

/** What startConnectorBroker sets up: the service, its broker, the devices and the connector's files. */
export interface ConnectorBroker {
  svc: Service & { dispose(): Promise<void> };
  broker: MosquittoTls;
  devices: Record<string, DeviceCredentials>;
  /** The connector's client certificate (PEM), e.g. for a log source's TLS. */
  identity: { cert: string; key: string };
  /** The same written to the broker's dir, for mosquitto_ctrl (dynsecCtrl). */
  adminFiles: { cert: string; key: string };
  /** A device connected on the broker (connectDevice); stop() ends it. */
  device(id: string): Promise<MqttClient>;
  /** Ends the devices' clients, closes the service's connectors, stops the broker, disposes the service. */
  stop(): Promise<void>;
}

/**
 * A service (on `target`) whose Mosquitto connector (BROKER_MQTT_URL, 5 s timeout) speaks to a
 * private broker of its own (startMosquittoTls): the devices enrolled, the `fleet` ones in the
 * fleetSeed role (with what `acls` add).
 */
export async function startConnectorBroker(
  target: DbTarget,
  opts: { devices: string[]; fleet: string[]; acls?: DynsecAcl[] },
): Promise<ConnectorBroker> {
  const port = await freePort();
  const svc = await makeService(target, { env: { BROKER_MQTT_URL: `mqtts://localhost:${port}`, BROKER_TIMEOUT_SECONDS: '5' } });
  // A setup that fails half-way leaves nothing running.
  let broker: MosquittoTls | undefined;
  const devices: Record<string, DeviceCredentials> = {};
  let identity: { cert: string; key: string };
  let adminFiles: { cert: string; key: string };
  try {
    await bootstrap(svc);
    for (const id of opts.devices) devices[id] = await enrollDevice(svc, id);
    broker = await startMosquittoTls(svc, { port, seed: fleetSeed(opts.fleet, { acls: opts.acls ?? [] }) });
    identity = await svc.identities.ensure('broker-connector');
    adminFiles = {
      cert: writeTemp(broker.dir, 'connector.pem', identity.cert),
      key: writeTemp(broker.dir, 'connector.key', identity.key),
    };
  } catch (e) {
    await svc.brokers.close();
    await broker?.stop();
    await svc.dispose();
    throw e;
  }
  const running = broker;
  const open: MqttClient[] = [];
  return {
    svc,
    broker: running,
    devices,
    identity,
    adminFiles,
    async device(id) {
      const c = await connectDevice(running, devices[id]!);
      open.push(c);
      return c;
    },
    async stop() {
      for (const c of open) c.end(true);
      await svc.brokers.close();
      await running.stop();
      await svc.dispose();
    },
  };
}
