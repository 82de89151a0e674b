/**
 * From revoke to refusal, on each broker: a device connects, is revoked through the service, and
 * fresh connections are tried every PROBE_MS until the broker refuses one. Each broker runs as its
 * operator would run it from `mqtt-ca broker-setup`'s output, with what keeps it current (crl-sync
 * for a CRL file or hash directory; the connector's allowlist for NATS). Baseline, the same run:
 * from the revoke call until the service's full CRL holding the revocation is published.
 */
import 'reflect-metadata';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase, NO_RATE_LIMITS } from './db.js';
import { listen, type Service } from '../src/main.js';
import { syncCrlBundle } from '../src/revoke/crl-sync.js';
import type { Serial } from '../src/shared/ids.js';
import { connectDevice, enrollDevice, startMosquittoTls, type DeviceCredentials } from '../test/helpers/mosquitto-tls.js';

const ROUNDS = 3;
const PROBE_MS = 100;
/** How often the broker host's crl-sync polls (its --interval). */
const SYNC_SECONDS = 1;

export const description =
  `From revoke to refusal on each broker, configured from \`mqtt-ca broker-setup\`'s output and kept current as its operator would ` +
  `(Mosquitto: crl-sync --interval ${SYNC_SECONDS} and SIGHUP). Per broker, ${ROUNDS} devices each connect (mqtt.js, MQTT 5, mutual TLS), ` +
  `are revoked (keyCompromise) through the service, and a fresh connection is tried every ${PROBE_MS} ms until the broker refuses one; ` +
  'the median time from the revoke call to the first refusal. Baseline, the same rounds: from the revoke call until the full CRL ' +
  'holding the revocation is published (the delta and OCSP have it before the call returns). PostgreSQL from DATABASE_URL, the ' +
  'service in this process with its HTTP listener on a loopback port.';

/** A broker as its operator runs it: where devices connect, and how to stop it and what keeps it current. */
interface Enforcer {
  url: string;
  stop(): Promise<void>;
}

type StartEnforcer = (svc: Service, pkiUrl: string) => Promise<Enforcer>;

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

const mosquitto: StartEnforcer = async (svc, pkiUrl) => {
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
    url: broker.url,
    async stop() {
      await stopSync();
      await broker.stop();
    },
  };
};

const BROKERS: [name: string, start: StartEnforcer][] = [['Mosquitto 2.0, crlfile kept by crl-sync', mosquitto]];

async function refusedAfter(url: string, creds: DeviceCredentials, t0: number): Promise<number> {
  for (;;) {
    try {
      const c = await connectDevice({ url }, creds, { connectTimeout: 5_000 });
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
    const { svc } = await benchService(database.db, { env: { ...NO_RATE_LIMITS, PORT: '0', HOST: '127.0.0.1' } });
    server = await listen(svc);
    const pkiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    let n = 0;
    for (const [name, start] of BROKERS) {
      const broker = await start(svc, pkiUrl);
      const refusal: number[] = [];
      const published: number[] = [];
      try {
        for (let round = 0; round < ROUNDS; round++) {
          const creds = await enrollDevice(svc, `refusal-${++n}`);
          (await connectDevice(broker, creds)).end(true);
          const t0 = performance.now();
          await svc.revocations.revoke(creds.serial as Serial, { reason: 'keyCompromise' }, { actor: 'bench' });
          const [pub, refused] = await Promise.all([
            svc.crls.settled().then(() => performance.now() - t0),
            refusedAfter(broker.url, creds, t0),
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
