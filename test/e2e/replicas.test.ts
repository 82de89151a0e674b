import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { databaseUrlOf, disposeDb, postgresTarget } from '../helpers/db.js';
import { p256Csr } from '../helpers/csr.js';
import {
  faultyLink,
  freePort,
  startHaproxy,
  startServe,
  startWorker,
  until,
  type Child,
  type Haproxy,
  type Served,
} from '../helpers/processes.js';
import { runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { envSkip, toolSkip } from '../helpers/tools.js';
import { parseOcspResponse } from '../helpers/load.js';
import type { Db } from '../../src/store/db.js';

const needs = 'the replica deployment test (two serve replicas and two workers on PostgreSQL and Redis, behind HAProxy) is';
const skip = envSkip('DATABASE_URL', needs) ?? envSkip('REDIS_URL', needs) ?? toolSkip('openssl') ?? toolSkip('/usr/sbin/haproxy');

const json = (key: string) => ({ Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' });

/** Runs `work` over `items` with `clients` at once. */
async function inParallel<T>(items: T[], clients: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

describe('two serve replicas and two workers on one PostgreSQL and one Redis, behind HAProxy', { skip }, () => {
  let db: Db;
  let a: Served;
  let b: Served;
  const workers: Child[] = [];
  let proxy: Haproxy;
  let linkB: Awaited<ReturnType<typeof faultyLink>>;
  const prefix = `mqttca-replicas-${randomBytes(4).toString('hex')}`;
  const dir = tempDir();
  const files: Record<string, string> = {};
  let token: string;
  const csrs = new Map<string, ReturnType<typeof p256Csr>>();
  /** A device's one key: a retry under its Idempotency-Key must be the same request. */
  const csrOf = (id: string) => csrs.get(id) ?? csrs.set(id, p256Csr(id)).get(id)!;

  const enroll = async (base: string, id: string) => {
    const res = await fetch(`${base}/v1/enroll`, {
      method: 'POST',
      headers: { ...json(token), 'Idempotency-Key': `replicas:${id}` },
      body: JSON.stringify({ csr: csrOf(id).pem }),
      signal: AbortSignal.timeout(30_000),
    });
    return {
      status: res.status,
      body: (await res.json()) as { serial: string; certificate: string; detail?: string },
      retryAfter: Number(res.headers.get('retry-after') ?? 0),
    };
  };
  /** openssl asks `base`'s OCSP responder, verifies the signature, and says what it read. */
  const ocspStatus = async (base: string, name: string) => {
    const r = await runAsync('openssl', [
      'ocsp',
      '-issuer',
      files.issuing!,
      '-cert',
      files[name]!,
      '-url',
      `${base}/pki/ocsp`,
      '-no_nonce',
      '-CAfile',
      files.root!,
      '-verify_other',
      files.issuing!,
    ]);
    assert.match(r.stdout + r.stderr, /Response verify OK/, r.stdout + r.stderr);
    return /: (good|revoked|unknown)/.exec(r.stdout)![1];
  };

  before(async () => {
    db = await postgresTarget.create();
    const pgUrl = new URL(databaseUrlOf(db));
    linkB = await faultyLink(Number(pgUrl.port || 5432));
    const viaLink = new URL(pgUrl);
    viaLink.host = `127.0.0.1:${linkB.port}`;
    const proxyPort = await freePort();
    const env = {
      DATABASE_URL: pgUrl.toString(),
      MQTT_CA_KEK: randomBytes(32).toString('base64'),
      REDIS_URL: process.env.REDIS_URL!,
      JOBS_PREFIX: prefix,
      PUBLIC_URL: `http://127.0.0.1:${proxyPort}`,
      SERVE_PROCESSES: '1',
      ENROLL_RATE_PER_SOURCE: '0',
      ENROLL_RECOVERY_SECONDS: '3',
      RENEWAL_PLAN_SECONDS: '1',
    };
    const dataA = mkdtempSync(join(tmpdir(), 'mqttca-replica-a-'));
    const dataB = mkdtempSync(join(tmpdir(), 'mqttca-replica-b-'));
    a = await startServe({ ...env, DATA_DIR: dataA });
    // B is another host's replica: its own DATA_DIR, the same KEK; the admin key file is only for startServe.
    copyFileSync(join(dataA, 'admin-api-key'), join(dataB, 'admin-api-key'));
    chmodSync(join(dataB, 'admin-api-key'), 0o600);
    b = await startServe({ ...env, DATA_DIR: dataB, DATABASE_URL: viaLink.toString() });
    for (let i = 0; i < 2; i++)
      workers.push(await startWorker({ ...env, DATA_DIR: mkdtempSync(join(tmpdir(), 'mqttca-replica-w-')), LOG_LEVEL: 'warn' }));
    proxy = await startHaproxy([new URL(a.url).host, new URL(b.url).host], proxyPort);

    const list = (
      (await (await fetch(`${a.url}/v1/cas`, { headers: json(a.adminKey) })).json()) as { items: { kind: string; certificate: string }[] }
    ).items;
    files.root = writeTemp(dir, 'root.pem', list.find((c) => c.kind === 'root')!.certificate);
    files.issuing = writeTemp(dir, 'issuing.pem', list.find((c) => c.kind !== 'root')!.certificate);
    const ids = Array.from({ length: 200 }, (_, i) => `rep-${String(i).padStart(3, '0')}`);
    const imported = await fetch(`${proxy.url}/v1/devices/import`, {
      method: 'POST',
      headers: json(a.adminKey),
      body: JSON.stringify({ devices: ids.map((id) => ({ id, kind: 'client', lot: 'lot-r' })) }),
    });
    assert.equal(imported.status, 201, await imported.text());
    const t = await fetch(`${proxy.url}/v1/enrollment-tokens`, {
      method: 'POST',
      headers: json(a.adminKey),
      body: JSON.stringify({ lot: 'lot-r', maxUses: ids.length }),
    });
    assert.equal(t.status, 201);
    token = ((await t.json()) as { token: string }).token;
  });

  after(async () => {
    await proxy?.stop();
    await Promise.all([a?.stop('SIGKILL'), b?.stop('SIGKILL'), ...workers.map((w) => w.stop())]);
    await linkB?.close();
    const redis = new Redis(process.env.REDIS_URL!);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    if (db) await disposeDb(db);
  });

  it("a revocation through one replica is what the OTHER replica's OCSP answers as soon as the revoke call returns, even over a slow link to PostgreSQL", async () => {
    const e = await enroll(a.url, 'rep-000');
    assert.equal(e.status, 201, JSON.stringify(e.body));
    files.victim = writeTemp(dir, 'victim.pem', e.body.certificate);
    // B has the certificate in memory as good (the second answer comes from its cache).
    assert.equal(await ocspStatus(b.url, 'victim'), 'good');
    assert.equal(await ocspStatus(b.url, 'victim'), 'good');
    // B's link to PostgreSQL now answers 400 ms late: the notification of A's revocation too.
    linkB.delay(400);
    try {
      const revoked = await fetch(`${a.url}/v1/certificates/${e.body.serial}/revoke`, {
        method: 'POST',
        headers: json(a.adminKey),
        body: JSON.stringify({ reason: 'keyCompromise' }),
      });
      assert.equal(revoked.status, 200, await revoked.text());
      assert.equal(await ocspStatus(b.url, 'victim'), 'revoked', 'B answers what the database says once the revoke call returned');
    } finally {
      linkB.delay(0);
    }
    assert.equal(await ocspStatus(b.url, 'victim'), 'revoked');
    assert.equal(await ocspStatus(proxy.url, 'victim'), 'revoked');
  });

  it('each scheduled job runs once across the four processes that run jobs (two serve, two workers)', async () => {
    const redis = new Redis(process.env.REDIS_URL!);
    try {
      const runs = async () => {
        const ids = await redis.zrange(`${prefix}:housekeeping:completed`, 0, -1);
        const jobs = await Promise.all(ids.map((id) => redis.hmget(`${prefix}:housekeeping:${id}`, 'name', 'processedOn')));
        return jobs
          .filter(([name]) => name === 'plan-renewals')
          .map(([, at]) => Number(at))
          .sort((x, y) => x - y);
      };
      // plan-renewals is scheduled every second (RENEWAL_PLAN_SECONDS=1): wait for a dozen runs.
      const seen = await until(
        'a dozen plan-renewals runs',
        async () => {
          const r = await runs();
          return r.length >= 12 && r;
        },
        60_000,
      );
      const periods = new Set(seen.map((at) => Math.floor(at / 1000)));
      const span = (seen.at(-1)! - seen[0]!) / 1000;
      // Four processes running their own schedules would run it about four times a second.
      assert.ok(seen.length <= Math.ceil(span) + 2, `${seen.length} runs in ${span.toFixed(1)} s: at most one per period`);
      // Runs delayed on a loaded machine can share a second with the next one; four schedules would put ~4 in each.
      assert.ok(periods.size >= seen.length * 0.75, `runs in distinct periods: ${seen.length} runs in ${periods.size} seconds`);
    } finally {
      redis.disconnect();
    }
  });

  it('a replica that loses PostgreSQL answers 503 on /readyz, HAProxy sends the traffic to the other, and it recovers', async () => {
    linkB.cut(true);
    try {
      await until('B /readyz 503', async () => (await fetch(`${b.url}/readyz`)).status === 503, 30_000);
      const r = await fetch(`${b.url}/readyz`);
      assert.equal(r.headers.get('content-type')?.split(';')[0], 'application/problem+json');
      // HAProxy's check takes B out (two failed checks): then every request through it is answered by A.
      await until(
        'HAProxy sending everything to A',
        async () => {
          // A new connection each time: HAProxy (TCP) keeps a connection on the server it chose.
          // (A request on B's connection when HAProxy takes B out is cut: that is a retry, not a failure.)
          for (let i = 0; i < 10; i++)
            if ((await fetch(`${proxy.url}/readyz`, { headers: { Connection: 'close' } }).catch(() => undefined))?.status !== 200)
              return false;
          return true;
        },
        30_000,
      );
    } finally {
      linkB.cut(false);
    }
    await until('B /readyz 200 again', async () => (await fetch(`${b.url}/readyz`)).status === 200, 30_000);
    assert.equal(await ocspStatus(b.url, 'victim'), 'revoked');
  });

  it('killing one replica (SIGKILL) under enrollment and OCSP load through HAProxy loses nothing and issues nothing twice', async () => {
    const ids = Array.from({ length: 199 }, (_, i) => `rep-${String(i + 1).padStart(3, '0')}`);
    const good = await enroll(proxy.url, ids[0]!);
    assert.equal(good.status, 201);
    files.good = writeTemp(dir, 'good.pem', good.body.certificate);
    const reqFile = join(dir, 'good.req');
    assert.equal(
      (await runAsync('openssl', ['ocsp', '-issuer', files.issuing!, '-cert', files.good, '-no_nonce', '-reqout', reqFile])).status,
      0,
    );
    const ocspRequest = readFileSync(reqFile);

    const received = new Map<string, string>([[ids[0]!, good.body.serial]]);
    let enrollRetries = 0;
    let ocspRetries = 0;
    let ocspAnswered = 0;
    let killed = false;
    let loadDone = false;
    // OCSP clients: each request until it has a successful answer, which openssl checks afterwards.
    const answers: Buffer[] = [];
    const ocspLoad = Promise.all(
      Array.from({ length: 4 }, async () => {
        while (!loadDone) {
          for (;;) {
            try {
              const res = await fetch(`${proxy.url}/pki/ocsp`, {
                method: 'POST',
                body: ocspRequest,
                headers: { 'Content-Type': 'application/ocsp-request' },
                signal: AbortSignal.timeout(10_000),
              });
              const der = Buffer.from(await res.arrayBuffer());
              if (res.status === 200 && parseOcspResponse(der).responseStatus === 0) {
                ocspAnswered++;
                if (answers.length < 50 || killed) answers.push(der);
                break;
              }
            } catch {
              // connection reset by the killed replica: ask again, as an OCSP client does
            }
            ocspRetries++;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      }),
    );
    await inParallel(ids.slice(1), 8, async (id) => {
      for (let attempt = 0; ; attempt++) {
        try {
          const o = await enroll(proxy.url, id);
          if (o.status === 201) {
            received.set(id, o.body.serial);
            break;
          }
          assert.ok(o.status === 409 || o.status >= 500, `${id}: ${o.status} ${JSON.stringify(o.body)}`);
          await new Promise((r) => setTimeout(r, 1000 * Math.max(1, o.retryAfter)));
        } catch (e) {
          if (e instanceof assert.AssertionError) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
        enrollRetries++;
        assert.ok(attempt < 100, `${id} got no certificate`);
      }
      if (received.size >= 60 && !killed) {
        killed = true;
        process.kill(a.proc.pid!, 'SIGKILL');
      }
    });
    loadDone = true;
    await ocspLoad;
    assert.ok(killed, 'A was killed mid-run');

    const rows = (
      await db.raw(
        `select device_id, encode(serial, 'hex') as serial, status from certificates where profile = 'device' and device_id like 'rep-%' and device_id <> 'rep-000'`,
      )
    ).rows as { device_id: string; serial: string; status: string }[];
    const issued = new Map<string, string[]>();
    for (const r of rows.filter((r) => r.status === 'issued')) issued.set(r.device_id, [...(issued.get(r.device_id) ?? []), r.serial]);
    for (const id of ids) {
      assert.deepEqual(issued.get(id), [received.get(id)], `${id}: exactly one certificate, the one its client holds`);
    }
    assert.ok(
      rows.every((r) => r.status === 'issued' || r.status === 'failed'),
      JSON.stringify(rows.filter((r) => r.status !== 'issued')),
    );
    // Every answer a client took is one openssl verifies and reads as good.
    const sample = answers.slice(-5);
    for (const [i, der] of sample.entries()) {
      const r = await runAsync('openssl', [
        'ocsp',
        '-respin',
        writeTemp(dir, `answer-${i}.der`, der),
        '-issuer',
        files.issuing!,
        '-cert',
        files.good!,
        '-CAfile',
        files.root!,
        '-verify_other',
        files.issuing!,
      ]);
      assert.match(r.stdout + r.stderr, /Response verify OK/);
      assert.match(r.stdout, /: good/);
    }
    console.log(
      `A killed after 60 certificates; ${ids.length} devices enrolled once each; enrollment retries ${enrollRetries}; OCSP answers ${ocspAnswered}, retries ${ocspRetries}`,
    );
  });
});
