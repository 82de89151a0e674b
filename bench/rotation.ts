/**
 * Renewal at fleet scale: 100,000 certificates come due at once (a policy change); two
 * `mqtt-ca worker` processes on Redis (BullMQ) plan a notice for each in PostgreSQL and publish
 * it to its device topic on Mosquitto, QoS 1. Baseline from the same run: one mqtt.js client
 * publishing the same number of QoS 1 messages as fast as the broker acknowledges them.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import { Redis } from 'ioredis';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase, SEEDED_KEY_TYPE } from './db.js';
import { startWorker } from '../test/helpers/processes.js';

export const description =
  'Renewal notices: 100,000 active devices with current certificates are made due at once by a rotation policy ' +
  '(`renewDaysBefore` larger than the lifetime). Two `mqtt-ca worker` processes (BullMQ on the local Redis, plan job every second) ' +
  'plan one `renewal_notices` row per certificate (5,000 per statement, an audit entry per 500) and deliver them in jobs of 500: ' +
  'lease the batch, publish each notice QoS 1 (not retained here, to leave the shared broker clean) to `…/{deviceId}/renew` on the ' +
  'local Mosquitto, wait for every PUBACK, record the batch sent with its audit entry. Timed from the policy change until the last ' +
  'notice is recorded sent. A subscriber on the topic tree counts what arrives (Mosquitto may drop QoS 0 copies to a slow subscriber). ' +
  'Baseline: one mqtt.js client publishing 100,000 QoS 1 messages to the same broker, 1,000 in flight. Memory: Redis `used_memory` ' +
  "growth (sampled) and each worker's peak RSS (VmHWM). Target: under 60 s.";

const N = 100_000;
const MQTT_URL = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

async function rawPublishRate(n: number, topicRoot: string): Promise<number> {
  const c = await mqtt.connectAsync(MQTT_URL, { clientId: `bench-raw-${randomBytes(4).toString('hex')}`, clean: true });
  const payload = JSON.stringify({
    type: 'renewal-due',
    noticeId: 'x'.repeat(32),
    deviceId: 'device-000000',
    serial: 'x'.repeat(32),
    dueAt: new Date().toISOString(),
    deadline: new Date().toISOString(),
    renewUrl: 'http://ca.example/v1/renew',
    estUrl: 'http://ca.example/.well-known/est/simplereenroll',
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i += 1000) {
    await Promise.all(
      Array.from({ length: Math.min(1000, n - i) }, (_, j) => c.publishAsync(`${topicRoot}/d${i + j}/renew`, payload, { qos: 1 })),
    );
  }
  const rate = n / ((performance.now() - t0) / 1000);
  await c.endAsync();
  return rate;
}

const peakRssMiB = (pid: number) => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

export async function run(): Promise<BenchResult[]> {
  if (!process.env.DATABASE_URL)
    throw new Error('the rotation benchmark needs DATABASE_URL (workers in other processes share the database)');
  const prefix = `bench${randomBytes(4).toString('hex')}`;
  const topicRoot = `mqttca-bench-${prefix}`;
  const baseline = await rawPublishRate(N, `${topicRoot}-raw`);

  const { db, env: dbEnv, drop } = await freshDatabase();
  const redis = new Redis(REDIS_URL);
  const workers: Awaited<ReturnType<typeof startWorker>>[] = [];
  try {
    const { svc, issuingId: caId, env } = await benchService(db);
    await db.raw(
      `insert into devices (id, kind, lot, status, labels, created_at, updated_at, activated_at)
       select 'dev-' || i, 'client', 'L1', 'active', '{}', now(), now(), now() from generate_series(1, ?::int) as i`,
      [N],
    );
    await db.raw(
      `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, tbs_der, der, spki_sha256, key_type, not_before, not_after, created_at,
                                 issued_at)
       select decode(md5('r' || i), 'hex'), ?, 'device', 'issued', 'dev-' || i, 'dev-' || i, '\\x00', '\\x00', '\\x00', ?,
              now() - interval '1 day', now() + interval '364 days', now(), now()
         from generate_series(1, ?::int) as i`,
      [caId, SEEDED_KEY_TYPE, N],
    );
    await db.raw(
      `update devices d set current_serial = c.serial, current_not_after = c.not_after from certificates c where c.device_id = d.id`,
    );
    await db.raw('analyze');

    const workerEnv = {
      ...dbEnv,
      ...env,
      REDIS_URL,
      JOBS_PREFIX: prefix,
      RENEWAL_MQTT_URL: MQTT_URL,
      RENEWAL_MQTT_RETAIN: 'false',
      RENEWAL_TOPIC: `${topicRoot}/{deviceId}/renew`,
      RENEWAL_PLAN_SECONDS: '1',
      LOG_LEVEL: 'warn',
    };
    workers.push(await startWorker(workerEnv), await startWorker(workerEnv));

    const sub = await mqtt.connectAsync(MQTT_URL, { clientId: `bench-sub-${prefix}`, clean: true });
    let received = 0;
    sub.on('message', () => (received += 1));
    await sub.subscribeAsync(`${topicRoot}/+/renew`, { qos: 0 });

    const redisUsed = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
    const redisBefore = await redisUsed();
    let redisPeak = redisBefore;
    const t0 = performance.now();
    await svc.policies.put('profile', 'device', { renewDaysBefore: 400 }, { actor: 'bench' });
    let plannedAt = 0;
    for (;;) {
      await new Promise((r) => setTimeout(r, 250));
      redisPeak = Math.max(redisPeak, await redisUsed());
      const r = (await db.raw(`select count(*)::int as planned, count(*) filter (where state = 'sent')::int as sent from renewal_notices`))
        .rows[0] as { planned: number; sent: number };
      if (!plannedAt && r.planned === N) plannedAt = performance.now();
      if (r.sent === N) break;
      if (performance.now() - t0 > 600_000) throw new Error(`renewal bench: only ${r.sent} of ${N} notices sent after 10 minutes`);
    }
    const seconds = (performance.now() - t0) / 1000;
    const planSeconds = (plannedAt - t0) / 1000;
    const rss = workers.map((w) => peakRssMiB(w.proc.pid!));
    await new Promise((r) => setTimeout(r, 1000));
    await sub.endAsync();
    await svc.close();
    const jobs = N / 500;
    const base = { name: 'mqtt.js QoS 1 publish, one client, 1,000 in flight (same broker)', value: baseline };
    return [
      result(base.name, 'messages/s', baseline, base),
      result(
        'renewal notices planned and published, 2 workers',
        'notices/s',
        N / seconds,
        base,
        `${N.toLocaleString('en-US')} in ${seconds.toFixed(1)} s (target < 60 s); subscriber received ${received.toLocaleString('en-US')}`,
      ),
      result('time to drain 100,000 notices', 's', seconds, { name: 'target', value: 60 }, 'ratio < 1 meets the target'),
      result('planning (policy change → 100,000 notice rows)', 'notices/s', N / planSeconds, base, `${planSeconds.toFixed(1)} s`),
      result(
        'delivery jobs (500 notices each)',
        'jobs/s',
        jobs / seconds,
        { name: 'delivery jobs (500 notices each)', value: jobs / seconds },
        `${jobs} jobs`,
      ),
      result('Redis memory growth during the run (peak sampled)', 'MiB', (redisPeak - redisBefore) / 1048576, {
        name: 'Redis memory growth during the run (peak sampled)',
        value: (redisPeak - redisBefore) / 1048576,
      }),
      result(
        'worker peak RSS (each of 2)',
        'MiB',
        Math.max(...rss),
        { name: 'worker peak RSS (each of 2)', value: Math.max(...rss) },
        rss.map((m) => `${m.toFixed(0)} MiB`).join(', '),
      ),
    ];
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    const keys = await redis.keys(`${prefix}:*`);
    for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
    redis.disconnect();
    await drop();
  }
}
