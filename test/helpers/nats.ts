// A private nats-server (2.9, MQTT listener) run from `mqtt-ca broker-setup --broker nats` output: the
// setup's nats.conf as written (its JetStream store and PID file in the setup directory), with only
// the client and monitoring ports moved to free ones (-p, -m), stopped by its PID. Never the system instance.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeBrokerSetup } from '../../src/broker-identity.js';
import type { Service } from '../../src/main.js';
import { tempDir } from './openssl.js';
import { freePort, startChild, type Child } from './processes.js';

export const NATS_SERVER = '/usr/sbin/nats-server';

export interface NatsServer {
  /** The broker-setup directory the server reads (nats.conf, nats-users.conf, ca.pem, broker.pem ...). */
  dir: string;
  mqttPort: number;
  clientPort: number;
  /** mqtts://localhost:<mqttPort> (the broker certificate names localhost and 127.0.0.1). */
  url: string;
  /** http://127.0.0.1:<monitor port> */
  monitorUrl: string;
  usersFile: string;
  pidFile: string;
  /** The process id (what the PID file holds). */
  pid: number;
  /** Everything it logged so far. */
  output(): string;
  /** Resolves with the exit code (or signal) once the server exited by itself or was stopped. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  stop(): Promise<void>;
}

/** The ports a NATS setup will use: pick them before the service is configured (BROKER_NATS_MONITOR_URL). */
export interface NatsPorts {
  mqtt: number;
  client: number;
  monitor: number;
}

export async function natsPorts(): Promise<NatsPorts> {
  return { mqtt: await freePort(), client: await freePort(), monitor: await freePort() };
}

/** The service's settings for its NATS connector, for a setup in `dir` on these ports. */
export function natsConnectorEnv(dir: string, ports: NatsPorts, syncSeconds = 1): Record<string, string> {
  return {
    BROKER_NATS_USERS_FILE: join(dir, 'nats-users.conf'),
    BROKER_NATS_PID_FILE: join(dir, 'nats-server.pid'),
    BROKER_NATS_MONITOR_URL: `http://127.0.0.1:${ports.monitor}`,
    BROKER_NATS_SYNC_SECONDS: String(syncSeconds),
  };
}

/** broker-setup --broker nats into `dir` (in-process, from the service the test runs): a certificate for localhost and 127.0.0.1. */
export async function writeNatsSetup(svc: Service, dir: string, ports: NatsPorts): Promise<void> {
  await writeBrokerSetup(svc, {
    broker: 'nats',
    dir,
    port: ports.mqtt,
    bindAddress: '127.0.0.1',
    certificate: { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] },
  });
}

/** Starts nats-server on a setup directory (its nats.conf unchanged); resolves once it is ready. */
export async function startNats(dir: string, ports: NatsPorts): Promise<NatsServer> {
  const conf = join(dir, 'nats.conf');
  if (!existsSync(conf)) throw new Error(`no nats.conf in ${dir}: run broker-setup --broker nats first`);
  const child: Child = await startChild(
    NATS_SERVER,
    ['-c', conf, '-p', String(ports.client), '-m', String(ports.monitor)],
    {},
    /Server is ready/,
    30_000,
  );
  const proc = child.proc;
  // A test process that dies leaves no server behind.
  const kill = () => proc.kill('SIGKILL');
  process.once('exit', kill);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve({ code: proc.exitCode, signal: proc.signalCode, at: Date.now() });
    proc.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() }));
  });
  void exited.then(() => process.removeListener('exit', kill));
  const pidFile = join(dir, 'nats-server.pid');
  return {
    dir,
    mqttPort: ports.mqtt,
    clientPort: ports.client,
    url: `mqtts://localhost:${ports.mqtt}`,
    monitorUrl: `http://127.0.0.1:${ports.monitor}`,
    usersFile: join(dir, 'nats-users.conf'),
    pidFile,
    pid: existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : proc.pid!,
    output: () => child.output(),
    exited,
    stop: () => child.stop(),
  };
}

/** A fresh directory for a NATS setup. */
export const natsDir = (): string => tempDir();
