import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomBytes, sign } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { Redis } from 'ioredis';
import { databaseUrlOf, postgresTarget } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { p256Csr, type TestCsr } from '../helpers/csr.js';
import { envSkip, toolSkip } from '../helpers/tools.js';
import { opensslVerify } from '../helpers/openssl.js';
import { startWorker, type Child } from '../helpers/processes.js';
import { until as waitUntil } from '../helpers/processes.js';
import { renewalSigningInput } from '../../src/enroll/device-certificate-auth.js';
import type { Role } from '../../src/access/api-keys.js';
import type { Service } from '../../src/main.js';

interface Notice {
  noticeId: string;
  deviceId: string;
  serial: string;
  renewUrl: string;
  reason: string;
}
interface WaveEntry {
  wave: number;
  at: string;
  count: number;
  serials: string[];
}

const needs = 'the rollover worker tests (PostgreSQL, BullMQ on Redis, notices over MQTT) are';
const skip = envSkip('DATABASE_URL', needs) ?? envSkip('REDIS_URL', needs) ?? envSkip('MQTT_URL', needs) ?? toolSkip('openssl');
const mqttUrl = () => process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';
const DEVICES = 12;
const WAVE_SIZE = 4;
const WAVE_INTERVAL_SECONDS = 2;

const until = <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 120_000) => waitUntil(what, probe, timeoutMs);

describe('issuing-CA rollover with two BullMQ workers in their own processes, a real Redis and a real Mosquitto', { skip }, () => {
  let svc: Service & { dispose(): Promise<void> };
  let api: Awaited<ReturnType<typeof makeApiService>>['api'];
  let keys: Record<Role, string>;
  let oldCa: string;
  const workers: Child[] = [];
  const clients: MqttClient[] = [];
  const prefix = `t${randomBytes(5).toString('hex')}`;
  const topicRoot = `mqttca-test-${prefix}`;
  const topics = new Set<string>();
  const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });

  before(async () => {
    const kek = randomBytes(32).toString('base64');
    let issuingId: string;
    ({ svc, api, keys, issuingId } = await makeApiService(postgresTarget, {
      env: {
        MQTT_CA_KEK: kek,
        REDIS_URL: process.env.REDIS_URL!,
        JOBS_PREFIX: prefix,
        RENEWAL_MQTT_URL: mqttUrl(),
        RENEWAL_TOPIC: `${topicRoot}/{deviceId}/renew`,
      },
    }));
    oldCa = issuingId;
    const env = {
      DATABASE_URL: databaseUrlOf(svc.db),
      MQTT_CA_KEK: kek,
      PUBLIC_URL: 'http://ca.test:8080',
      REDIS_URL: process.env.REDIS_URL!,
      JOBS_PREFIX: prefix,
      RENEWAL_MQTT_URL: mqttUrl(),
      RENEWAL_TOPIC: `${topicRoot}/{deviceId}/renew`,
      RENEWAL_PLAN_SECONDS: '1',
      ROLLOVER_TICK_SECONDS: '1',
      JOB_LOCK_SECONDS: '5',
      LOG_LEVEL: 'warn',
    };
    for (let i = 0; i < 2; i++) workers.push(await startWorker({ ...env, DATA_DIR: mkdtempSync(join(tmpdir(), 'mqttca-worker-')) }));
  });
  after(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    // Clear the retained notices left on the shared broker.
    const cleaner = await mqtt.connectAsync(mqttUrl(), { clientId: `clean-${prefix}`, clean: true });
    for (const t of topics) await cleaner.publishAsync(t, '', { retain: true, qos: 1 });
    await cleaner.endAsync();
    await Promise.all(clients.map((c) => c.endAsync()));
    await svc?.dispose();
    // Its queues leave nothing behind in the shared Redis.
    const redis = new Redis(process.env.REDIS_URL!);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });

  it('renews a population of devices onto the successor in throttled waves, each device answering its notice', async () => {
    // The fleet: devices on the old CA, each an MQTT subscriber that renews (a signed request with its current key) when told.
    const ids = Array.from({ length: DEVICES }, (_, i) => `ro-${String(i).padStart(2, '0')}`);
    await api
      .post('/v1/devices/import')
      .set(auth('provisioner'))
      .send({ devices: ids.map((id) => ({ id, kind: 'client' })) })
      .expect(201);
    const state = new Map<
      string,
      { serial: string; csr: TestCsr; certificate: string; caId: string; original: string; renewals: number; renewing: boolean }
    >();
    const failures: string[] = [];
    for (const id of ids) {
      const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId: id }).expect(201)).body.token as string;
      const csr = p256Csr(id);
      const body = (
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ csr: csr.pem })
          .expect(201)
      ).body;
      assert.equal(body.caId, oldCa);
      state.set(id, {
        serial: body.serial,
        csr,
        certificate: body.certificate,
        caId: body.caId,
        original: body.serial,
        renewals: 0,
        renewing: false,
      });
      const client = await mqtt.connectAsync(mqttUrl(), { clientId: `dev-${id}-${prefix}`, clean: true });
      clients.push(client);
      const topic = `${topicRoot}/${id}/renew`;
      topics.add(topic);
      client.on('message', (_t, payload) => {
        if (payload.length === 0) return;
        const n = JSON.parse(payload.toString()) as Notice;
        const me = state.get(id)!;
        if (n.serial !== me.serial || me.renewing) return; // a repeat, or about a certificate already renewed
        if (n.reason !== 'rollover') failures.push(`${id}: notice with reason ${n.reason}`);
        me.renewing = true;
        const next = p256Csr(id);
        const signedAt = new Date().toISOString();
        const der = Buffer.from(me.certificate.replace(/-----[^-]+-----|\s/g, ''), 'base64');
        const signature = sign('sha256', renewalSigningInput(signedAt, next.der), me.csr.privateKey);
        void api
          .post(new URL(n.renewUrl).pathname)
          .set({
            Authorization: `MQTT-CA-Renewal cert="${der.toString('base64')}", signed-at="${signedAt}", signature="${signature.toString('base64')}"`,
          })
          .send({ csr: next.pem })
          .then((r) => {
            if (r.status !== 201) failures.push(`${id}: renewal answered ${r.status} ${r.text}`);
            else
              Object.assign(me, {
                serial: r.body.serial,
                certificate: r.body.certificate,
                csr: next,
                caId: r.body.caId,
                renewals: me.renewals + 1,
              });
            me.renewing = false;
          });
      });
      await client.subscribeAsync(topic, { qos: 1 });
    }

    const started = (
      await api
        .post(`/v1/cas/${oldCa}/rollover`)
        .set(auth('admin'))
        .send({ waveSize: WAVE_SIZE, waveIntervalSeconds: WAVE_INTERVAL_SECONDS })
        .expect(201)
    ).body;
    const rolloverId = started.rollover.id as string;
    const successorId = started.successor.id as string;

    // Progress as an operator would watch it: certificates in waves never run ahead of waves × waveSize.
    const samples: { waves: number; inWaves: number; renewed: number; remaining: number; state: string }[] = [];
    const done = await until('the rollover to be done', async () => {
      const p = (await api.get(`/v1/rollovers/${rolloverId}`).set(auth('operator')).expect(200)).body;
      samples.push({ waves: p.waves, inWaves: p.inWaves, renewed: p.renewed, remaining: p.remaining, state: p.state });
      return p.state === 'done' && p;
    });
    assert.deepEqual(failures, []);
    for (const s of samples) assert.ok(s.inWaves <= s.waves * WAVE_SIZE && s.renewed <= s.inWaves, JSON.stringify(s));
    assert.ok(
      samples.some((s) => s.state === 'running' && s.inWaves > 0 && s.inWaves < DEVICES),
      'progress was seen part-way, wave by wave',
    );
    for (let i = 1; i < samples.length; i++) assert.ok(samples[i]!.remaining <= samples[i - 1]!.remaining, 'remaining only goes down');

    // The waves, as the audit log has them: waveSize each, an interval apart, every certificate in exactly one.
    const waves = (
      (await svc.db.raw(`select details from audit_log where action = 'ca-rollover.wave' and target_id = ? order by seq`, [rolloverId]))
        .rows as { details: WaveEntry }[]
    ).map((r) => r.details);
    assert.deepEqual(
      waves.map((w) => [w.wave, w.count]),
      [
        [1, 4],
        [2, 4],
        [3, 4],
      ],
    );
    for (let i = 1; i < waves.length; i++) {
      assert.ok(
        Date.parse(waves[i]!.at) - Date.parse(waves[i - 1]!.at) >= WAVE_INTERVAL_SECONDS * 1000,
        `wave ${i + 1} waited out the interval`,
      );
    }
    const inWaves = waves.flatMap((w) => w.serials);
    assert.deepEqual([...inWaves].sort(), ids.map((id) => state.get(id)!.original).sort());
    assert.deepEqual(
      [done.waves, done.inWaves, done.renewed, done.remaining, done.unscheduled, done.fromCaStatus],
      [3, DEVICES, DEVICES, 0, 0, 'active'],
    );

    // Every device holds a certificate from the successor, renewed once, from the certificate it had.
    const root = (await api.get(`/v1/cas/${started.successor.parentId}`).set(auth('auditor')).expect(200)).body.certificate as string;
    for (const id of ids) {
      const me = state.get(id)!;
      assert.deepEqual([me.caId, me.renewals], [successorId, 1], id);
      const cert = (await api.get(`/v1/certificates/${me.serial}`).set(auth('auditor')).expect(200)).body;
      assert.deepEqual([cert.caId, cert.renewedFrom, cert.deviceId], [successorId, me.original, id]);
      const v = opensslVerify(root, [started.successor.certificate], me.certificate);
      assert.equal(v.status, 0, v.stdout + v.stderr);
    }
    // Each rollover notice went out and was recorded once, by one of the two workers.
    // (A device may renew before its worker recorded the delivery: wait for the records.)
    const notifiedInAudit = async () =>
      (
        (await svc.db.raw(`select details from audit_log where action = 'renewal.notified'`)).rows as { details: { serials: string[] } }[]
      ).flatMap((r) => r.details.serials);
    const notified = await until('every delivery recorded', async () => {
      const n = await notifiedInAudit();
      return n.length >= DEVICES && n;
    });
    assert.deepEqual([...notified].sort(), [...inWaves].sort());
    const notices = (await svc.db.raw(`select reason, state from renewal_notices`)).rows as { reason: string; state: string }[];
    assert.equal(notices.length, DEVICES);
    // superseded: the device renewed before the worker recorded the notice as sent (plan-renewals saw the renewal first).
    assert.ok(
      notices.every((n) => n.reason === 'rollover' && ['sent', 'superseded'].includes(n.state)),
      JSON.stringify(notices),
    );
    assert.equal((await api.get(`/v1/rollovers/${rolloverId}`).set(auth('auditor')).expect(200)).body.notified, DEVICES);
    // The job listing shows the scheduled task at the configured tick.
    const jobs = (await api.get('/v1/jobs').set(auth('auditor')).expect(200)).body;
    const hk = jobs.queues.find((q: { name: string }) => q.name === 'housekeeping');
    assert.ok(
      hk.schedules.some((s: { name: string; everyMs: number }) => s.name === 'rollover-waves' && s.everyMs === 1000),
      JSON.stringify(hk.schedules),
    );
  });
});
