import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { databaseUrlOf, disposeDb, postgresTarget } from '../helpers/db.js';
import { startServe, until, type Served } from '../helpers/processes.js';
import { envSkip } from '../helpers/tools.js';
import type { Db } from '../../src/store/db.js';
import { webhookSignature } from '../../src/shared/webhook-signature.js';

/** The pids of `pid`'s node children (the serve processes; not tsx's esbuild service, which may come and go). */
function childrenOf(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=,comm=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter(([, comm]) => comm === 'node')
      .map(([p]) => Number(p))
      .filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there are none
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * For a describe: `mqtt-ca serve` with SERVE_PROCESSES=2 on a PostgreSQL database of its own (and
 * `env`), started by the test once both processes listen; killed, and the database dropped, after.
 */
function twoProcesses() {
  let db: Db | undefined;
  let served: Served | undefined;
  after(async () => {
    await served?.stop('SIGKILL');
    if (db) await disposeDb(db);
  });
  return async (env: Record<string, string> = {}): Promise<{ db: Db; served: Served }> => {
    db = await postgresTarget.create();
    const s = await startServe({
      DATABASE_URL: databaseUrlOf(db),
      MQTT_CA_KEK: randomBytes(32).toString('base64'),
      DATA_DIR: mkdtempSync(join(tmpdir(), 'mqttca-processes-')),
      SERVE_PROCESSES: '2',
      ...env,
    });
    served = s;
    await until('two processes listening', async () => (s.output().match(/mqtt-ca listening on/g) ?? []).length >= 2, 60_000);
    return { db, served: s };
  };
}

describe(
  'mqtt-ca serve with several processes (SERVE_PROCESSES)',
  { skip: envSkip('DATABASE_URL', 'serve with several processes (PostgreSQL) is') },
  () => {
    const serve = twoProcesses();

    it('bootstraps once, shares the port, replaces a process that dies, and stops them all on SIGTERM', async () => {
      const { db, served } = await serve();
      const primary = served.proc.pid!;
      const first = childrenOf(primary);
      assert.equal(first.length, 2, `two processes under the first: ${first.join(', ')}`);
      // One CA, bootstrapped once (the processes did not each make one).
      const cas = (await db.raw(`select count(*)::int as n from cas where kind = 'root'`)).rows as { n: number }[];
      assert.equal(cas[0]!.n, 1);
      assert.equal((served.output().match(/Initialised a new CA/g) ?? []).length, 1);

      process.kill(first[0]!, 'SIGKILL');
      await until('a replacement listening', async () => (served.output().match(/mqtt-ca listening on/g) ?? []).length >= 3, 60_000);
      const now = childrenOf(primary);
      assert.equal(now.length, 2, `two processes again: ${now.join(', ')}`);
      assert.ok(!now.includes(first[0]!) && now.includes(first[1]!), 'the dead one was replaced, the other left alone');
      // Both answer on the one port (the first process hands connections round).
      for (let i = 0; i < 6; i++) assert.equal((await fetch(`${served.url}/readyz`, { headers: { Connection: 'close' } })).status, 200);

      served.proc.kill('SIGTERM');
      await until('every process gone', async () => !alive(primary) && now.every((p) => !alive(p)), 30_000);
      assert.equal(served.proc.exitCode, 0, served.output());
    });
  },
);

describe(
  'mqtt-ca serve with several processes and brokers posting their events',
  { skip: envSkip('DATABASE_URL', 'serve with several processes (PostgreSQL) is') },
  () => {
    const serve = twoProcesses();

    it("takes a broker's posted events in every process and hands them to the one that watches: none lost to a 503", async () => {
      const secret = randomBytes(32).toString('hex');
      const { served } = await serve({ BUS_EVENT_SECRETS: JSON.stringify({ 'emqx-1': secret }) });
      const post = async (i: number) => {
        const body = JSON.stringify({
          events: [
            {
              event: 'client.connected',
              clientid: `meter-${i}`,
              username: `meter-${i}`,
              peername: `10.0.0.${i}:5000`,
              proto_ver: 5,
              keepalive: 60,
              clean_start: true,
            },
          ],
        });
        const ts = String(Math.floor(Date.now() / 1000));
        // A connection each: the first process hands connections round, so the batches reach both.
        return fetch(`${served.url}/v1/bus-events`, {
          method: 'POST',
          headers: {
            Connection: 'close',
            'content-type': 'application/json',
            'X-MqttCa-Broker': 'emqx-1',
            'X-MqttCa-Timestamp': ts,
            'X-MqttCa-Signature': `sha256=${webhookSignature(secret, ts, body)}`,
          },
          body,
        });
      };
      // The watch starts once the watching process listens; until then its own batches are 503 (sent again, as a relay does).
      await until('the watch takes events', async () => (await post(0)).status === 202, 30_000);
      const statuses = [];
      for (let i = 1; i <= 20; i++) statuses.push((await post(i)).status);
      assert.deepEqual(statuses, Array(20).fill(202), 'every batch taken, whichever process it reached');
      const map = async () => {
        const res = await fetch(`${served.url}/v1/bus/map`, { headers: { Authorization: `Bearer ${served.adminKey}` } });
        const body = (await res.json()) as { brokers: { broker: string; unregistered: { connected: number } }[] };
        return body.brokers.find((b) => b.broker === 'emqx-1')?.unregistered.connected ?? 0;
      };
      await until('all 21 identities connected in presence', async () => (await map()) === 21, 30_000);
    });
  },
);
