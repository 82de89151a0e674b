import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomBytes, sign } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { Redis } from 'ioredis';
import { databaseUrlOf, postgresTarget } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { p256Csr, type TestCsr } from '../helpers/csr.js';
import { envSkip, toolSkip } from '../helpers/tools.js';
import { runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { freePort, stallingProxy, startRedis, startWorker, type Child } from '../helpers/processes.js';
import { until as waitUntil } from '../helpers/processes.js';
import { renewalSigningInput, sessionKeysSigningInput } from '../../src/enroll/device-certificate-auth.js';
import { compactDecrypt } from 'jose';
import { DomainError } from '../../src/shared/errors.js';
import type { Role } from '../../src/access/api-keys.js';

interface Notice {
  noticeId: string;
  deviceId: string;
  serial: string;
  deadline: string;
  renewUrl: string;
}

const needs = 'the rotation worker tests (PostgreSQL, BullMQ on Redis, notices over MQTT) are';
const skip = envSkip('DATABASE_URL', needs) ?? envSkip('REDIS_URL', needs) ?? envSkip('MQTT_URL', needs) ?? toolSkip('redis-server');
const mqttUrl = () => process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';
const mqttPort = () => Number(new URL(mqttUrl()).port || 1883);

const until = <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 90_000) => waitUntil(what, probe, timeoutMs);

/** One isolated fleet: its own database, queue prefix and topic tree; workers in processes of their own. */
async function fleet(redisUrl: string) {
  const kek = randomBytes(32).toString('base64');
  const prefix = `t${randomBytes(5).toString('hex')}`;
  const topicRoot = `mqttca-test-${prefix}`;
  const { svc, api, keys } = await makeApiService(postgresTarget, {
    env: {
      MQTT_CA_KEK: kek,
      REDIS_URL: redisUrl,
      JOBS_PREFIX: prefix,
      RENEWAL_MQTT_URL: mqttUrl(),
      RENEWAL_TOPIC: `${topicRoot}/{deviceId}/renew`,
    },
  });
  const workerEnv = (over: Record<string, string> = {}) => ({
    DATABASE_URL: databaseUrlOf(svc.db),
    MQTT_CA_KEK: kek,
    DATA_DIR: mkdtempSync(join(tmpdir(), 'mqttca-worker-')),
    PUBLIC_URL: 'http://ca.test:8080',
    REDIS_URL: redisUrl,
    JOBS_PREFIX: prefix,
    RENEWAL_MQTT_URL: mqttUrl(),
    RENEWAL_TOPIC: `${topicRoot}/{deviceId}/renew`,
    RENEWAL_PLAN_SECONDS: '1',
    SESSION_KEY_ROTATE_SECONDS: '1',
    RENEWAL_REDRIVE_SECONDS: '5',
    JOB_LOCK_SECONDS: '2',
    LOG_LEVEL: 'warn',
    ...over,
  });
  const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
  const enrolled = new Map<string, { serial: string; csr: TestCsr; certificate: string }>();
  const enroll = async (ids: string[]) => {
    await api
      .post('/v1/devices/import')
      .set(auth('provisioner'))
      .send({ devices: ids.map((id) => ({ id, kind: 'client' })) })
      .expect(201);
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
      enrolled.set(id, { serial: body.serial, csr, certificate: body.certificate });
    }
  };
  // Every certificate is due at once: renew "400 days before expiry" of a 365-day certificate.
  const allDue = () => api.put('/v1/rotation-policies/profile/device').set(auth('operator')).send({ renewDaysBefore: 400 }).expect(201);
  const subscriber = await mqtt.connectAsync(mqttUrl(), { clientId: `sub-${prefix}`, clean: true });
  const received: (Notice & { topic: string })[] = [];
  subscriber.on('message', (topic, payload) => {
    if (payload.length > 0) received.push({ ...(JSON.parse(payload.toString()) as Notice), topic });
  });
  await subscriber.subscribeAsync(`${topicRoot}/+/renew`, { qos: 1 });
  const notices = async () =>
    (await svc.db.raw(`select encode(serial, 'hex') as serial, state, mqtt_sent_at, attempts from renewal_notices`)).rows as {
      serial: string;
      state: string;
      mqtt_sent_at: Date | null;
      attempts: number;
    }[];
  /** Every serial named by a renewal.notified audit entry, with repeats: each delivery recorded. */
  const notifiedInAudit = async () => {
    const rows = (await svc.db.raw(`select details from audit_log where action = 'renewal.notified'`)).rows as {
      details: { serials: string[] };
    }[];
    return rows.flatMap((r) => r.details.serials);
  };
  const workers: Child[] = [];
  return {
    svc,
    api,
    auth,
    enrolled,
    enroll,
    allDue,
    received,
    notices,
    notifiedInAudit,
    workers,
    workerEnv,
    topicRoot,
    prefix,
    startWorker: async (over?: Record<string, string>) => {
      const w = await startWorker(workerEnv(over));
      workers.push(w);
      return w;
    },
    async dispose() {
      await Promise.all(workers.map((w) => w.stop()));
      // Clear the retained notices this fleet left on the shared broker.
      const topics = new Set(received.map((r) => r.topic));
      for (const t of topics) await subscriber.publishAsync(t, '', { retain: true, qos: 1 });
      await subscriber.endAsync();
      await svc.dispose();
      // This fleet's queues leave nothing behind in the Redis it used.
      const redis = new Redis(redisUrl);
      const keys = await redis.keys(`${prefix}:*`);
      if (keys.length) await redis.del(...keys);
      redis.disconnect();
    },
  };
}

describe('rotation with BullMQ workers in their own processes, a real Redis and a real Mosquitto', { skip }, () => {
  describe('two workers', () => {
    let f: Awaited<ReturnType<typeof fleet>>;
    before(async () => {
      f = await fleet(process.env.REDIS_URL!);
    });
    after(async () => f?.dispose());

    it('publish one renewal notice per due certificate to its device topic, a device renews in answer, and nothing is recorded twice', async () => {
      const ids = Array.from({ length: 30 }, (_, i) => `rw-${String(i).padStart(2, '0')}`);
      // (rw-11 and rw-12 keep their certificates for the session-key test below)
      await f.enroll(ids);
      // A device that renews when told: on its notice it signs a renewal request with its current key.
      const answered: Promise<unknown>[] = [];
      const device = await mqtt.connectAsync(mqttUrl(), { clientId: `dev-rw-00-${f.prefix}`, clean: true });
      const first = f.enrolled.get('rw-00')!;
      device.on('message', (_t, payload) => {
        if (payload.length === 0) return;
        const n = JSON.parse(payload.toString()) as Notice;
        if (n.serial !== first.serial || answered.length > 0) return;
        const next = p256Csr('rw-00');
        const signedAt = new Date().toISOString();
        const der = Buffer.from(first.certificate.replace(/-----[^-]+-----|\s/g, ''), 'base64');
        const signature = sign('sha256', renewalSigningInput(signedAt, next.der), first.csr.privateKey);
        answered.push(
          f.api
            .post(new URL(n.renewUrl).pathname)
            .set({
              Authorization: `MQTT-CA-Renewal cert="${der.toString('base64')}", signed-at="${signedAt}", signature="${signature.toString('base64')}"`,
            })
            .send({ csr: next.pem })
            .then((r) => r),
        );
      });
      await device.subscribeAsync(`${f.topicRoot}/rw-00/renew`, { qos: 1 });

      await f.allDue();
      await f.startWorker();
      await f.startWorker();
      const serials = ids.map((id) => f.enrolled.get(id)!.serial);
      await until('every notice received', async () => serials.every((s) => f.received.some((r) => r.noticeId === s)));
      const got = f.received.find((r) => r.noticeId === first.serial)!;
      assert.deepEqual([got.topic, got.deviceId, got.renewUrl], [`${f.topicRoot}/rw-00/renew`, 'rw-00', 'http://ca.test:8080/v1/renew']);

      const renewed = (await until('the device to renew', async () => answered[0])) as { status: number; body: { serial: string } };
      assert.equal(renewed.status, 201);
      const cert = (await f.api.get(`/v1/certificates/${renewed.body.serial}`).set(f.auth('auditor')).expect(200)).body;
      assert.equal(cert.renewedFrom, first.serial);
      await device.endAsync();

      const rows = await until('every notice recorded as sent', async () => {
        const r = (await f.notices()).filter((n) => serials.includes(n.serial));
        return r.length === serials.length && r.every((n) => n.state === 'sent' && n.mqtt_sent_at) && r;
      });
      assert.equal(rows.length, 30);
      const audited = (await f.notifiedInAudit()).filter((s) => serials.includes(s));
      assert.deepEqual(audited.sort(), [...serials].sort(), 'each notice recorded once, by one of the two workers');

      // Retained: a device that was offline finds its notice when it subscribes.
      const late = await mqtt.connectAsync(mqttUrl(), { clientId: `late-${f.prefix}`, clean: true });
      const retained = new Promise<Notice>((resolve) =>
        late.on('message', (_t, p) => p.length && resolve(JSON.parse(p.toString()) as Notice)),
      );
      await late.subscribeAsync(`${f.topicRoot}/rw-07/renew`, { qos: 1 });
      assert.equal((await retained).serial, f.enrolled.get('rw-07')!.serial);
      await late.endAsync();
    });

    it("rotate a channel's session key on schedule (devices unwrap it with their own keys), and it is replaced at once when a member is revoked", async () => {
      const [a, b] = [f.enrolled.get('rw-11')!, f.enrolled.get('rw-12')!];
      const der = (e: typeof a) => Buffer.from(e.certificate.replace(/-----[^-]+-----|\s/g, ''), 'base64');
      const fetchKeys = (e: typeof a) => {
        const signedAt = new Date().toISOString();
        const signature = sign('sha256', sessionKeysSigningInput(signedAt), e.csr.privateKey);
        return f.api.get('/v1/session-keys').set({
          Authorization: `MQTT-CA-SessionKeys cert="${der(e).toString('base64')}", signed-at="${signedAt}", signature="${signature.toString('base64')}"`,
        });
      };
      const channelKeys = async (e: typeof a) => {
        const body = (await fetchKeys(e).expect(200)).body as { keys: { scope: string; channel?: string; version: number; jwe: string }[] };
        const out = new Map<number, string>();
        for (const k of body.keys.filter((x) => x.scope === 'channel' && x.channel === 'plant-7')) {
          out.set(k.version, Buffer.from((await compactDecrypt(k.jwe, e.csr.privateKey)).plaintext).toString('hex'));
        }
        return out;
      };
      await f.api
        .post('/v1/channels')
        .set(f.auth('operator'))
        .send({ name: 'plant-7', topicTree: 'plant/7/#', periodSeconds: 60, overlapSeconds: 30, members: ['rw-11', 'rw-12'] })
        .expect(201);
      const v1 = await channelKeys(a);
      assert.deepEqual([...v1.keys()], [1]);
      assert.equal(v1.get(1)!.length, 64, 'a 256-bit key');
      assert.deepEqual(await channelKeys(b), v1, 'both members unwrap the same key');

      // No device asks meanwhile: the workers' scheduled rotation makes version 2 once the period is over.
      const meta = await until(
        'a worker to rotate the channel key',
        async () => {
          const items = (await f.api.get('/v1/channels/plant-7/keys').set(f.auth('auditor')).expect(200)).body.items as {
            version: number;
            origin: string;
            status: string;
          }[];
          return items.some((k) => k.version === 2) && items;
        },
        150_000,
      );
      assert.equal(meta.find((k) => k.version === 2)!.origin, 'scheduled');
      const v2 = await channelKeys(a);
      assert.ok(v2.has(2) && v2.get(2) !== v1.get(1));
      if (v2.has(1)) assert.equal(v2.get(1), v1.get(1), 'the replaced key, still in its overlap');
      assert.equal((await channelKeys(b)).get(2), v2.get(2));

      await f.api.post(`/v1/certificates/${b.serial}/revoke`).set(f.auth('operator')).send({ reason: 'keyCompromise' }).expect(200);
      const v3 = await channelKeys(a);
      assert.deepEqual([...v3.keys()], [3], 'only the new key: the ones the revoked member held end now');
      assertProblem(await fetchKeys(b), 403);
    });

    it('shows the BullMQ queues through GET /v1/jobs, and the dashboard to admins only', async () => {
      const jobs = await until('completed jobs', async () => {
        const b = (await f.api.get('/v1/jobs').set(f.auth('auditor')).expect(200)).body;
        return b.queues.find((q: { name: string }) => q.name === 'renewal-notices').counts.completed > 0 && b;
      });
      assert.equal(jobs.backend, 'bullmq');
      const hk = jobs.queues.find((q: { name: string }) => q.name === 'housekeeping');
      assert.ok(
        hk.schedules.some((s: { name: string; everyMs: number }) => s.name === 'plan-renewals' && s.everyMs === 1000),
        JSON.stringify(hk.schedules),
      );
      assert.ok(hk.recent.some((j: { name: string; state: string }) => j.name === 'plan-renewals' && j.state === 'completed'));
      const adminKey = f.auth('admin').Authorization.slice('Bearer '.length);
      const page = await f.api.get('/admin/queues').set({ Authorization: `Basic ${Buffer.from(`admin:${adminKey}`).toString('base64')}` });
      assert.equal(page.status, 200);
      assert.match(page.text, /<html/i);
      assertProblem(await f.api.get('/admin/queues'), 401);
      assert.match(String((await f.api.get('/admin/queues')).headers['www-authenticate']), /^Basic/);
      assertProblem(await f.api.get('/admin/queues').set(f.auth('operator')), 403);
    });
  });

  describe('a worker killed mid-job', () => {
    let f: Awaited<ReturnType<typeof fleet>>;
    let proxy: Awaited<ReturnType<typeof stallingProxy>>;
    before(async () => {
      f = await fleet(process.env.REDIS_URL!);
      proxy = await stallingProxy(mqttPort());
    });
    after(async () => {
      await f?.dispose();
      await proxy?.close();
    });

    it('is taken over by another worker once its lease lapses: every notice delivered and recorded once', async () => {
      const ids = Array.from({ length: 20 }, (_, i) => `wk-${String(i).padStart(2, '0')}`);
      await f.enroll(ids);
      await f.allDue();
      // Worker A's broker never acknowledges: it holds its batch, publishing, when it is killed.
      const a = await f.startWorker({ RENEWAL_MQTT_URL: `mqtt://127.0.0.1:${proxy.port}` });
      await until('worker A to hold the notices and publish them', async () => {
        const claimed = (await f.svc.db.raw('select count(*)::int as n from renewal_notices where claimed_by is not null')).rows[0]
          .n as number;
        return claimed === 20 && proxy.published() > 0;
      });
      await a.stop('SIGKILL');
      assert.ok(
        (await f.notices()).every((n) => n.state === 'pending'),
        'nothing recorded as sent by the killed worker',
      );

      await f.startWorker();
      const serials = ids.map((id) => f.enrolled.get(id)!.serial);
      const rows = await until('every notice sent by worker B', async () => {
        const r = await f.notices();
        return r.length === 20 && r.every((n) => n.state === 'sent') && r;
      });
      assert.ok(
        rows.every((n) => n.attempts >= 2),
        'each notice was taken over (a second lease)',
      );
      assert.deepEqual((await f.notifiedInAudit()).sort(), [...serials].sort(), 'recorded once each');
      await until('every notice on the broker', async () => serials.every((s) => f.received.some((r) => r.noticeId === s)));
      // A's publishes reached the broker before it died: a device may see a notice twice, with the same noticeId.
      for (const r of f.received) assert.ok(serials.includes(r.noticeId));
    });
  });

  describe('Redis stopped mid-run', () => {
    let f: Awaited<ReturnType<typeof fleet>>;
    let redis: Child;
    let port: number;
    before(async () => {
      port = await freePort();
      redis = await startRedis(port);
      f = await fleet(`redis://127.0.0.1:${port}`);
    });
    after(async () => {
      await f?.dispose();
      await redis?.stop();
    });

    it('keeps the API and OCSP serving; jobs resume when Redis returns (empty), nothing lost and nothing done twice', async () => {
      await f.enroll(['rd-1', 'rd-2', 'rd-3']);
      await f.allDue();
      await f.startWorker();
      const firstSerials = ['rd-1', 'rd-2', 'rd-3'].map((id) => f.enrolled.get(id)!.serial);
      await until('the first notices sent', async () => (await f.notices()).filter((n) => n.state === 'sent').length === 3);

      await redis.stop('SIGKILL');
      // The API and OCSP do not need Redis.
      await f.enroll(['rd-4', 'rd-5', 'rd-6']);
      const dir = tempDir();
      const issuer = writeTemp(
        dir,
        'issuer.pem',
        (await f.api.get(`/v1/cas`).set(f.auth('auditor')).expect(200)).body.items.find(
          (c: { isDefaultIssuer?: boolean }) => c.isDefaultIssuer,
        ).certificate,
      );
      const leaf = writeTemp(dir, 'leaf.pem', f.enrolled.get('rd-4')!.certificate);
      const reqFile = join(dir, 'req.der');
      assert.equal((await runAsync('openssl', ['ocsp', '-issuer', issuer, '-cert', leaf, '-no_nonce', '-reqout', reqFile])).status, 0);
      const { readFileSync } = await import('node:fs');
      const ocsp = await f.api
        .post('/pki/ocsp')
        .set('Content-Type', 'application/ocsp-request')
        .send(readFileSync(reqFile))
        .buffer(true)
        .parse((res, cb) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => cb(null, Buffer.concat(chunks)));
        });
      const text = (
        await runAsync('openssl', ['ocsp', '-respin', writeTemp(dir, 'resp.der', ocsp.body as Buffer), '-resp_text', '-noverify'])
      ).stdout;
      assert.match(text, /OCSP Response Status: successful/);
      assert.match(text, /Cert Status: good/);
      assertProblem(await f.api.get('/v1/jobs').set(f.auth('auditor')), 503);

      // Planned in PostgreSQL while Redis is away: the delivery jobs cannot be queued (they are lost).
      const planned = await f.svc.renewals.plan();
      assert.equal(planned.planned, 3);
      await assert.rejects(
        f.svc.jobs.enqueue(
          'renewal-notices',
          planned.batches.map((b) => ({ name: 'deliver', payload: { serials: b } })),
        ),
        (e: unknown) => e instanceof DomainError && e.kind === 'Unavailable',
      );

      redis = await startRedis(port);
      const all = [...firstSerials, ...['rd-4', 'rd-5', 'rd-6'].map((id) => f.enrolled.get(id)!.serial)];
      await until('the notices planned during the outage sent (re-driven)', async () => {
        const r = await f.notices();
        return r.length === 6 && r.every((n) => n.state === 'sent');
      });
      assert.deepEqual((await f.notifiedInAudit()).sort(), [...all].sort(), 'each recorded once');
      await until('every notice on the broker', async () => all.every((s) => f.received.some((r) => r.noticeId === s)));
      const jobs = (await f.api.get('/v1/jobs').set(f.auth('auditor')).expect(200)).body;
      assert.ok(
        jobs.queues.find((q: { name: string }) => q.name === 'housekeeping').schedules.length >= 7,
        'the schedules are back in the new Redis',
      );
    });
  });
});
