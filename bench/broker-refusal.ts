/**
 * From revoke to refusal, on each broker: a device connects, is revoked through the service, and
 * fresh connections are tried every PROBE_MS until the broker refuses one. Each broker runs as its
 * operator would run it from `mqtt-ca broker-setup`'s output, with what keeps it current (crl-sync
 * for a CRL file or hash directory; the connector's allowlist for NATS). Baseline, the same run:
 * from the revoke call until the service's full CRL holding the revocation is published. The private
 * brokers are the tests' (test/helpers): each on free ports with its own files, stopped by PID.
 */
import 'reflect-metadata';
import type { Server } from 'node:http';
import { performance } from 'node:perf_hooks';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase, NO_RATE_LIMITS } from './db.js';
import { listen, type Service } from '../src/main.js';
import { syncCrlBundle } from '../src/revoke/crl-sync.js';
import type { Serial } from '../src/shared/ids.js';
import { writeBrokerSetup } from '../src/broker-identity.js';
import { connectDevice, enrollDevice, startMosquittoTls, type DeviceCredentials } from '../test/helpers/mosquitto-tls.js';
import { connectRabbitDevice, startRabbitFromSetup } from '../test/helpers/rabbitmq.js';
import { natsConnectorEnv, natsDir, natsPorts, startNats, writeNatsSetup, type NatsPorts } from '../test/helpers/nats.js';
import { freePort } from '../test/helpers/processes.js';
import type { MqttClient } from 'mqtt';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';

const ROUNDS = 3;
const PROBE_MS = 100;
/** How often the broker host's crl-sync polls (its --interval). */
const SYNC_SECONDS = 1;

export const description =
  `From revoke to refusal on each broker, configured from \`mqtt-ca broker-setup\`'s output and kept current as its operator would ` +
  `(Mosquitto: crl-sync --interval ${SYNC_SECONDS} and SIGHUP; RabbitMQ in HTTP mode: nothing, Erlang fetches the CRLs at each handshake; ` +
  `RabbitMQ in hash-dir mode: crl-sync --hash-dir --interval ${SYNC_SECONDS}; NATS: the service's NATS connector, which rewrites its allowlist ` +
  `and reloads it on the revocation). Per broker, ${ROUNDS} devices each connect (mqtt.js, MQTT 5; 3.1.1 for RabbitMQ and NATS; mutual TLS), ` +
  `are revoked (keyCompromise) through the service, and a fresh connection is tried every ${PROBE_MS} ms until the broker refuses one; ` +
  'the median time from the revoke call to the first refusal. Baseline, the same rounds: from the revoke call until the full CRL ' +
  'holding the revocation is published (the delta and OCSP have it before the call returns). PostgreSQL from DATABASE_URL, the ' +
  'service in this process with its HTTP listener on a loopback port.';

/** A broker as its operator runs it: how a device connects, and how to stop it and what keeps it current. */
interface Enforcer {
  connect(creds: DeviceCredentials): Promise<MqttClient>;
  /** What a new device needs before it may connect (a RabbitMQ user; NATS: the connector's next sync). */
  admit?(creds: DeviceCredentials): Promise<void>;
  stop(): Promise<void>;
}

/** The NATS setup shares the service's settings (its connector), so it is made before the service. */
interface Context {
  svc: Service;
  pkiUrl: string;
  nats: { dir: string; ports: NatsPorts };
}

type StartEnforcer = (c: Context) => Promise<Enforcer>;

/** Runs fn every interval until stopped (the broker host's crl-sync --interval loop). */
function every(ms: number, fn: () => Promise<unknown>): () => Promise<void> {
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      await fn().catch(() => undefined);
      await new Promise((r) => setTimeout(r, ms));
    }
  })();
  return async () => {
    stopped = true;
    await loop;
  };
}

const mosquitto: StartEnforcer = async ({ svc, pkiUrl }) => {
  const broker = await startMosquittoTls(svc, { logTypeAll: false });
  const stopSync = every(SYNC_SECONDS * 1000, () =>
    syncCrlBundle({
      url: `${pkiUrl}/pki/crl/bundle.pem`,
      out: join(broker.dir, 'crl.pem'),
      trustedPem: broker.caPem,
      reload: `kill -HUP ${broker.pid()}`,
      minRemainingMs: 60_000,
    }),
  );
  return {
    connect: (creds) => connectDevice(broker, creds, { connectTimeout: 5_000 }),
    async stop() {
      await stopSync();
      await broker.stop();
    },
  };
};

/** RabbitMQ 3.10 from broker-setup in one CRL mode; hash-dir kept by crl-sync --hash-dir as its README says. */
const rabbitmq =
  (crlMode: 'http' | 'hash-dir'): StartEnforcer =>
  async ({ svc, pkiUrl }) => {
    const dir = mkdtempSync(join(tmpdir(), 'mqttca-bench-rabbit-'));
    await writeBrokerSetup(svc, {
      broker: 'rabbitmq',
      dir,
      port: await freePort(),
      certificate: { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] },
      crlMode,
      managementPort: await freePort(),
    });
    const node = await startRabbitFromSetup(dir);
    const stopSync =
      crlMode === 'hash-dir'
        ? every(SYNC_SECONDS * 1000, () =>
            syncCrlBundle({
              url: `${pkiUrl}/pki/crl/bundle.pem`,
              out: join(dir, 'crls', '.mqtt-ca-bundle.pem'),
              hashDir: join(dir, 'crls'),
              trustedPem: readFileSync(join(dir, 'ca.pem'), 'utf8'),
              minRemainingMs: 60_000,
            }),
          )
        : async () => undefined;
    return {
      connect: (creds) => connectRabbitDevice(node, creds, { connectTimeout: 5_000 }),
      admit: (creds) => node.addDevice(creds.deviceId),
      async stop() {
        await stopSync();
        await node.stop();
      },
    };
  };

/** NATS 2.9 from broker-setup; revocations reach it through the service's NATS connector (its allowlist and a reload). */
const nats: StartEnforcer = async ({ svc, nats }) => {
  await writeNatsSetup(svc, nats.dir, nats.ports);
  const server = await startNats(nats.dir, nats.ports);
  const connect = (creds: DeviceCredentials) => connectDevice(server, creds, { connectTimeout: 5_000, protocolVersion: 4 });
  return {
    connect,
    async admit(creds) {
      // New enrollments reach the allowlist with the connector's periodic sync (BROKER_NATS_SYNC_SECONDS).
      const end = performance.now() + 30_000;
      for (;;) {
        try {
          (await connect(creds)).end(true);
          return;
        } catch (e) {
          if (performance.now() > end) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    },
    stop: () => server.stop(),
  };
};

const BROKERS: [name: string, start: StartEnforcer][] = [
  ['Mosquitto 2.0, crlfile kept by crl-sync', mosquitto],
  ['RabbitMQ 3.10, CRLs over HTTP per handshake', rabbitmq('http')],
  ['RabbitMQ 3.10, hash directory kept by crl-sync', rabbitmq('hash-dir')],
  ['NATS 2.9, allowlist kept by the connector', nats],
];

async function refusedAfter(broker: Enforcer, creds: DeviceCredentials, t0: number): Promise<number> {
  for (;;) {
    try {
      const c = await broker.connect(creds);
      c.end(true);
    } catch {
      return performance.now() - t0;
    }
    await new Promise((r) => setTimeout(r, PROBE_MS));
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function run(): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const database = await freshDatabase();
  let server: Server | undefined;
  try {
    const port = await freePort();
    const pkiUrl = `http://127.0.0.1:${port}`;
    const natsSetup = { dir: natsDir(), ports: await natsPorts() };
    const { svc } = await benchService(database.db, {
      env: {
        ...NO_RATE_LIMITS,
        PORT: String(port),
        HOST: '127.0.0.1',
        PUBLIC_URL: pkiUrl,
        ...natsConnectorEnv(natsSetup.dir, natsSetup.ports),
      },
    });
    server = await listen(svc);
    const ctx: Context = { svc, pkiUrl, nats: natsSetup };
    let n = 0;
    for (const [name, start] of BROKERS) {
      const broker = await start(ctx);
      const refusal: number[] = [];
      const published: number[] = [];
      try {
        for (let round = 0; round < ROUNDS; round++) {
          const creds = await enrollDevice(svc, `refusal-${++n}`);
          await broker.admit?.(creds);
          (await broker.connect(creds)).end(true);
          const t0 = performance.now();
          await svc.revocations.revoke(creds.serial as Serial, { reason: 'keyCompromise' }, { actor: 'bench' });
          const [pub, refused] = await Promise.all([
            svc.crls.settled().then(() => performance.now() - t0),
            refusedAfter(broker, creds, t0),
          ]);
          published.push(pub);
          refusal.push(refused);
        }
      } finally {
        await broker.stop();
      }
      out.push(
        result(
          `${name}: revoke → next connection refused (median of ${ROUNDS})`,
          'ms',
          median(refusal),
          { name: 'revoke → full CRL published', value: median(published) },
          `rounds ${refusal.map((r) => Math.round(r)).join(', ')} ms; CRL published ${published.map((p) => Math.round(p)).join(', ')} ms; load ${loadavg()[0]!.toFixed(1)}`,
        ),
      );
    }
    await svc.close();
  } finally {
    server?.close();
    server?.closeAllConnections();
    await database.drop();
  }
  return out;
}
