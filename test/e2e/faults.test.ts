import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { databaseUrlOf, disposeDb, postgresTarget } from '../helpers/db.js';
import { p256Csr, type TestCsr } from '../helpers/csr.js';
import { freePort, startPostgres, startRedis, startServe, type Child, type OwnPostgres, type Served } from '../helpers/processes.js';
import { listenOnLoopback, writeCaFiles } from '../helpers/http.js';
import { makeApiService } from '../helpers/service.js';
import { runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { envSkip, toolSkip } from '../helpers/tools.js';
import { parseOcspResponse, pemDer } from '../helpers/load.js';
import { createHttpHandler } from '../../src/main.js';
import { createDb, migrateLatest, type Db } from '../../src/store/db.js';

const CLI = join(import.meta.dirname, '../../src/cli.ts');

/** What a factory line's client saw for one device. */
type Outcome =
  { status: number; serial?: string; certificate?: string; detail?: string; retryAfter?: number } | { status: 'no answer'; error: string };

interface Line {
  url: () => string;
  token: string;
  csrs: Map<string, TestCsr>;
  /** One enrollment; with `keyed`, under the device's own Idempotency-Key. */
  enroll(id: string, keyed: boolean): Promise<Outcome>;
}

function factoryLine(url: () => string, token: string, csrs: Map<string, TestCsr>): Line {
  return {
    url,
    token,
    csrs,
    async enroll(id, keyed) {
      try {
        const res = await fetch(`${url()}/v1/enroll`, {
          method: 'POST',
          headers: {
            Authorization: `Bearer ${token}`,
            'Content-Type': 'application/json',
            ...(keyed ? { 'Idempotency-Key': `line-7:${id}` } : {}),
          },
          body: JSON.stringify({ csr: csrs.get(id)!.pem }),
          signal: AbortSignal.timeout(30_000),
        });
        const body = (await res.json()) as { serial?: string; certificate?: string; detail?: string };
        return {
          status: res.status,
          serial: body.serial,
          certificate: body.certificate,
          detail: body.detail,
          retryAfter: Number(res.headers.get('retry-after') ?? 0),
        };
      } catch (e) {
        return { status: 'no answer', error: e instanceof Error ? e.message : String(e) };
      }
    },
  };
}

/** Runs `work` over `items` with `clients` at once. */
async function inParallel<T>(items: T[], clients: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

/** An OCSP answer's responseStatus (0 successful, 3 tryLater, ...), or -1 when it is not an OCSPResponse. */
function responseStatusOf(der: Buffer): number {
  try {
    return parseOcspResponse(der).responseStatus;
  } catch {
    return -1;
  }
}

async function certificatesOf(db: Db) {
  const rows = (await db.raw(`select encode(serial, 'hex') as serial, device_id, status, der from certificates where profile = 'device'`))
    .rows as { serial: string; device_id: string; status: string; der: Uint8Array | null }[];
  return rows.map((r) => ({ ...r, der: r.der ? Buffer.from(r.der) : null }));
}

function auditVerify(env: Record<string, string>): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, 'audit', 'verify'], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, out: r.stdout + r.stderr };
}

describe(
  'the server killed mid-bulk-enrollment (SIGKILL, then started again)',
  { skip: envSkip('DATABASE_URL', 'this fault test (the server on PostgreSQL) is') },
  () => {
    let db: Db | undefined;
    let served: Served | undefined;
    after(async () => {
      await served?.stop('SIGKILL');
      if (db) await disposeDb(db);
    });

    it('every certificate a client received is recorded; retries get the same one or a first one, and every device ends with exactly one', async () => {
      db = await postgresTarget.create();
      const env = {
        DATABASE_URL: databaseUrlOf(db),
        MQTT_CA_KEK: randomBytes(32).toString('base64'),
        DATA_DIR: mkdtempSync(join(tmpdir(), 'mqttca-kill-')),
        PUBLIC_URL: 'http://ca.test:8080',
        ENROLL_RATE_PER_SOURCE: '0',
        // An attempt in flight this long is taken to have died with its process (the default is 120 s).
        ENROLL_RECOVERY_SECONDS: '3',
      };
      served = await startServe(env);
      const admin = { Authorization: `Bearer ${served.adminKey}`, 'Content-Type': 'application/json' };
      const ids = Array.from({ length: 600 }, (_, i) => `kill-${String(i).padStart(3, '0')}`);
      const imported = await fetch(`${served.url}/v1/devices/import`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ devices: ids.map((id) => ({ id, kind: 'client', lot: 'lot-k' })) }),
      });
      assert.equal(imported.status, 201, await imported.text());
      const tokenRes = await fetch(`${served.url}/v1/enrollment-tokens`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ lot: 'lot-k', maxUses: ids.length }),
      });
      assert.equal(tokenRes.status, 201);
      const { token } = (await tokenRes.json()) as { token: string };
      const csrs = new Map(ids.map((id) => [id, p256Csr(id)]));
      const line = factoryLine(() => served!.url, token, csrs);
      // Even devices retry under an Idempotency-Key, odd ones without.
      const keyed = (id: string) => Number(id.slice(-3)) % 2 === 0;

      const received = new Map<string, { serial: string; certificate: string }>();
      const firstRound = new Map<string, Outcome>();
      let killedAt = -1;
      await inParallel(ids, 32, async (id) => {
        const o = await line.enroll(id, keyed(id));
        firstRound.set(id, o);
        if (o.status === 201) received.set(id, { serial: o.serial!, certificate: o.certificate! });
        if (received.size >= 150 && killedAt < 0) {
          killedAt = received.size;
          served!.proc.kill('SIGKILL');
        }
      });
      const unanswered = [...firstRound.values()].filter((o) => o.status === 'no answer').length;
      assert.ok(killedAt > 0 && unanswered > 0, `killed mid-run (${killedAt} delivered, ${unanswered} unanswered)`);
      assert.ok(
        [...firstRound.values()].every((o) => o.status === 201 || o.status === 'no answer'),
        'before the kill, only certificates',
      );

      // Nothing a client holds is unrecorded: each is in the database, issued, byte for byte.
      const afterKill = new Map((await certificatesOf(db)).map((c) => [c.serial, c]));
      for (const [id, r] of received) {
        const row = afterKill.get(r.serial);
        assert.ok(row, `${id}'s certificate ${r.serial} is recorded`);
        assert.equal(row.status, 'issued');
        assert.equal(row.device_id, id);
        assert.ok(row.der!.equals(pemDer(r.certificate)), `${id}: the recorded DER is the one delivered`);
      }

      served = await startServe(env);
      // The line retries every device it holds no certificate for, as a line does, until each has an answer.
      const retried = new Map<string, Outcome>();
      const deadline = Date.now() + 60_000;
      await inParallel(
        ids.filter((id) => !received.has(id)),
        16,
        async (id) => {
          for (;;) {
            const o = await line.enroll(id, keyed(id));
            if (o.status === 409 && Date.now() < deadline) {
              await new Promise((r) => setTimeout(r, 1000 * Math.max(1, o.retryAfter ?? 1)));
              continue;
            }
            retried.set(id, o);
            return;
          }
        },
      );
      // Devices the line holds a certificate for, retried under their key, get that same certificate again.
      for (const id of [...received.keys()].filter(keyed).slice(0, 20)) {
        const o = await line.enroll(id, true);
        assert.equal(o.status, 201);
        assert.equal((o as { serial: string }).serial, received.get(id)!.serial, `${id}: a replay, not a second certificate`);
      }

      const certs = await certificatesOf(db);
      const issuedPer = new Map<string, string[]>();
      for (const c of certs.filter((c) => c.status === 'issued'))
        issuedPer.set(c.device_id, [...(issuedPer.get(c.device_id) ?? []), c.serial]);
      const notIssued = certs.filter((c) => c.status !== 'issued');
      for (const id of ids) {
        const mine = issuedPer.get(id) ?? [];
        const o = received.has(id) ? { status: 201, serial: received.get(id)!.serial } : retried.get(id)!;
        assert.equal(
          mine.length,
          1,
          `${id} (${keyed(id) ? 'keyed' : 'no key'}) has exactly one certificate; ${JSON.stringify(o)}, recorded: ${mine.join(',')}`,
        );
        if (o.status === 201) assert.equal((o as { serial: string }).serial, mine[0], `${id}: the client holds the recorded certificate`);
        else {
          // Only a device that enrolled without a key can lose its answer for good: its certificate is recorded, and the token refuses a second.
          assert.ok(!keyed(id), `${id} is keyed and got ${JSON.stringify(o)}`);
          assert.equal(o.status, 403, JSON.stringify(o));
          assert.match((o as { detail: string }).detail, /already enrolled/);
        }
      }
      // What the killed process left unsigned is closed as failed, never left pending nor released.
      assert.ok(
        notIssued.every((c) => c.status === 'failed' && c.der === null),
        JSON.stringify(notIssued.map((c) => [c.serial, c.status])),
      );

      const devices = (await db.raw(`select status, count(*)::int as n from devices group by status`)).rows as {
        status: string;
        n: number;
      }[];
      assert.deepEqual(devices, [{ status: 'active', n: ids.length }]);
      const audited = new Set(
        ((await db.raw(`select target_id from audit_log where action = 'certificate.issued'`)).rows as { target_id: string }[]).map(
          (r) => r.target_id,
        ),
      );
      for (const serials of issuedPer.values()) for (const s of serials) assert.ok(audited.has(s), `certificate.issued audited for ${s}`);
      const verified = auditVerify(env);
      assert.equal(verified.status, 0, verified.out);
      console.log(
        `killed after ${killedAt} delivered, ${unanswered} unanswered; retried ${retried.size}: ${JSON.stringify(tally(retried))}; failed intents ${notIssued.length}`,
      );
    });
  },
);

function tally(m: Map<string, Outcome>): Record<string, number> {
  const t: Record<string, number> = {};
  for (const o of m.values()) t[String(o.status)] = (t[String(o.status)] ?? 0) + 1;
  return t;
}

type ApiService = Awaited<ReturnType<typeof makeApiService>>;

/**
 * Enrollment (8 clients, each device until it has its certificate), revocation (10 certificates,
 * each until confirmed) and OCSP polling (4 clients, openssl-made requests) against a service
 * over real HTTP, with `fault` injected 3 s in and the load going on 6 s after it.
 */
async function mixedLoad(s: ApiService, fault: () => Promise<void>) {
  const svc = s.svc;
  const server = await listenOnLoopback(createHttpHandler(svc, { validateResponses: true }));
  try {
    const base = server.url;
    const admin = { Authorization: `Bearer ${s.keys.admin}`, 'Content-Type': 'application/json' };
    const ids = Array.from({ length: 3000 }, (_, i) => `ld-${String(i).padStart(4, '0')}`);
    assert.equal(
      (
        await fetch(`${base}/v1/devices/import`, {
          method: 'POST',
          headers: admin,
          body: JSON.stringify({ devices: ids.map((id) => ({ id, kind: 'client', lot: 'lot-ld' })) }),
        })
      ).status,
      201,
    );
    const { token } = (await (
      await fetch(`${base}/v1/enrollment-tokens`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ lot: 'lot-ld', maxUses: ids.length }),
      })
    ).json()) as { token: string };
    const line = factoryLine(() => base, token, new Map(ids.map((id) => [id, p256Csr(id)])));

    // Certificates to poll: the first 20, enrolled before the load.
    const dir = tempDir();
    const ca = await writeCaFiles(svc, s.issuingId, dir);
    const received = new Map<string, { serial: string; certificate: string }>();
    for (const id of ids.slice(0, 20)) {
      const o = await line.enroll(id, true);
      assert.equal(o.status, 201);
      received.set(id, { serial: (o as { serial: string }).serial, certificate: (o as { certificate: string }).certificate });
    }
    const polled = await Promise.all(
      ids.slice(0, 20).map(async (id) => {
        const req = join(dir, `${id}.req`);
        assert.equal(
          (
            await runAsync('openssl', [
              'ocsp',
              '-issuer',
              ca.issuing,
              '-cert',
              writeTemp(dir, `${id}.pem`, received.get(id)!.certificate),
              '-no_nonce',
              '-reqout',
              req,
            ])
          ).status,
          0,
        );
        return { id, request: readFileSync(req) };
      }),
    );

    const seen = { enroll: new Map<string, number>(), revoke: new Map<string, number>(), ocsp: new Map<string, number>() };
    const count = (m: Map<string, number>, k: string | number) => m.set(String(k), (m.get(String(k)) ?? 0) + 1);
    const revoked = new Set<string>();
    let after = false;
    let running = true;
    let next = 20;
    let deliveredAfter = 0;
    const enroller = async () => {
      while (running && next < ids.length) {
        const id = ids[next++]!;
        for (;;) {
          const o = await line.enroll(id, true);
          count(seen.enroll, o.status);
          if (o.status === 201) {
            received.set(id, { serial: o.serial!, certificate: o.certificate! });
            if (after) deliveredAfter++;
            break;
          }
          if (o.status !== 503 && o.status !== 409) break; // anything else is counted, and fails below
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    };
    const revoker = async () => {
      for (const { id } of polled.filter((_, i) => i % 2 === 1)) {
        for (;;) {
          let status: number | string;
          try {
            status = (
              await fetch(`${base}/v1/certificates/${received.get(id)!.serial}/revoke`, {
                method: 'POST',
                headers: admin,
                body: JSON.stringify({ reason: 'keyCompromise' }),
              })
            ).status;
          } catch (e) {
            status = `no answer: ${(e as Error).message}`;
          }
          count(seen.revoke, status);
          if (status === 200) {
            revoked.add(id);
            break;
          }
          if (status !== 503 || !running) break;
          await new Promise((r) => setTimeout(r, 200));
        }
        await new Promise((r) => setTimeout(r, 300));
      }
    };
    const poller = async () => {
      while (running) {
        const p = polled[Math.floor(Math.random() * polled.length)]!;
        try {
          const res = await fetch(`${base}/pki/ocsp`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/ocsp-request' },
            body: p.request,
          });
          const body = Buffer.from(await res.arrayBuffer());
          count(
            seen.ocsp,
            res.status === 200 && res.headers.get('content-type') === 'application/ocsp-response'
              ? `status ${responseStatusOf(body)}`
              : `http ${res.status}`,
          );
        } catch (e) {
          count(seen.ocsp, `no answer: ${(e as Error).message}`);
        }
      }
    };
    const load = Promise.all([...Array.from({ length: 8 }, enroller), revoker(), ...Array.from({ length: 4 }, poller)]);
    await new Promise((r) => setTimeout(r, 3000));
    const beforeFault = received.size;
    await fault();
    after = true;
    await new Promise((r) => setTimeout(r, 6000));
    running = false;
    await load;
    const summary = `enroll ${JSON.stringify(Object.fromEntries(seen.enroll))}, revoke ${JSON.stringify(Object.fromEntries(seen.revoke))}, ocsp ${JSON.stringify(Object.fromEntries(seen.ocsp))}; ${received.size} delivered (${beforeFault} before the fault, ${deliveredAfter} after it was over)`;

    // Recorded: every certificate delivered, byte for byte; every confirmed revocation; one certificate per device.
    const rows = new Map((await certificatesOf(svc.db)).map((c) => [c.serial, c]));
    for (const [id, r] of received) {
      const row = rows.get(r.serial);
      assert.ok(row && row.device_id === id && row.der!.equals(pemDer(r.certificate)), `${id}'s delivered certificate is recorded`);
      assert.equal(row.status, revoked.has(id) ? 'revoked' : 'issued', id);
    }
    const perDevice = new Map<string, number>();
    for (const c of rows.values())
      if (c.status === 'issued' || c.status === 'revoked') perDevice.set(c.device_id, (perDevice.get(c.device_id) ?? 0) + 1);
    assert.deepEqual(
      [...perDevice.entries()].filter(([, n]) => n > 1),
      [],
      'no device has two certificates',
    );
    assert.equal(perDevice.size, received.size, 'no certificate recorded that a client did not get');
    assert.equal((await svc.audit.verify(svc.db)).ok, true, 'the audit chain verifies');
    assert.equal(revoked.size, 10, 'every revocation confirmed in the end');
    assert.ok(deliveredAfter > 100, `enrollment went on after the fault (${deliveredAfter}): ${summary}`);

    // OCSP, read by openssl, tells a revoked certificate from a good one afterwards.
    for (const { id, request } of polled.slice(0, 4)) {
      const res = await fetch(`${base}/pki/ocsp`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/ocsp-request' },
        body: request,
      });
      const text = (
        await runAsync('openssl', [
          'ocsp',
          '-respin',
          writeTemp(dir, `${id}.resp`, Buffer.from(await res.arrayBuffer())),
          '-resp_text',
          '-noverify',
        ])
      ).stdout;
      assert.match(text, revoked.has(id) ? /Cert Status: revoked/ : /Cert Status: good/, id);
    }
    return { seen, summary };
  } finally {
    await server.close();
  }
}

const unexpected = (m: Map<string, number>, allowed: string[]) => [...m.keys()].filter((k) => !allowed.includes(k));

describe(
  'PostgreSQL crashed and restarted under load',
  { skip: envSkip('DATABASE_URL', 'this fault test (it starts its own PostgreSQL from the installed server) is') ?? toolSkip('openssl') },
  () => {
    let pg: OwnPostgres | undefined;
    let s: ApiService | undefined;
    after(async () => {
      await s?.svc.dispose();
      await s?.svc.db.destroy();
      await pg?.stop();
    });

    it('answers 503 problems (OCSP: an answer or tryLater) while it is down, never a 500; afterwards every certificate delivered and every revocation confirmed is recorded, and retries issue nothing twice', async () => {
      const own = (pg = await startPostgres());
      s = await makeApiService(
        {
          name: 'postgres',
          skip: undefined,
          create: async () => {
            const db = createDb({ databaseUrl: own.url, poolMax: 20 });
            await migrateLatest(db);
            return db;
          },
        },
        { env: { ENROLL_RATE_PER_SOURCE: '0', API_RATE_PER_SOURCE: '0', API_RATE_PER_KEY: '0', ENROLL_RECOVERY_SECONDS: '3' } },
      );
      const { seen, summary } = await mixedLoad(s, () => own.crashAndRestart(2000));
      console.log(`PostgreSQL crashed for 2 s under load: ${summary}`);
      assert.deepEqual(unexpected(seen.enroll, ['201', '503', '409']), [], summary);
      assert.deepEqual(unexpected(seen.revoke, ['200', '503']), [], summary);
      assert.deepEqual(unexpected(seen.ocsp, ['status 0', 'status 3']), [], summary);
      assert.ok((seen.enroll.get('503') ?? 0) + (seen.revoke.get('503') ?? 0) > 0, `the outage was met under load: ${summary}`);
    });
  },
);

describe(
  'Redis stopped and started again under load',
  {
    skip:
      envSkip('DATABASE_URL', 'this fault test (the server on PostgreSQL, its own Redis) is') ??
      toolSkip('redis-server') ??
      toolSkip('openssl'),
  },
  () => {
    let redis: Child | undefined;
    let s: ApiService | undefined;
    after(async () => {
      await s?.svc.dispose();
      await redis?.stop();
    });

    it('enrollment, revocation and OCSP never need it (rate limits on, kept in Redis): every request answered; the job queues come back with it', async () => {
      const port = await freePort();
      redis = await startRedis(port);
      // Rate limits on (high), so that they are checked in Redis and fall back while it is away.
      s = await makeApiService(postgresTarget, {
        env: {
          REDIS_URL: `redis://127.0.0.1:${port}`,
          JOBS_PREFIX: `f${randomBytes(4).toString('hex')}`,
          ENROLL_RATE_PER_SOURCE: '100000',
          API_RATE_PER_SOURCE: '100000',
          API_RATE_PER_KEY: '100000',
        },
      });
      await s.svc.jobs.start();
      const { seen, summary } = await mixedLoad(s, async () => {
        await redis!.stop('SIGKILL');
        await new Promise((r) => setTimeout(r, 3000));
        redis = await startRedis(port);
      });
      console.log(`Redis killed for 3 s under load: ${summary}`);
      assert.deepEqual(unexpected(seen.enroll, ['201']), [], summary);
      assert.deepEqual(unexpected(seen.revoke, ['200']), [], summary);
      assert.deepEqual(unexpected(seen.ocsp, ['status 0']), [], summary);
      const jobs = await s.api.get('/v1/jobs').set({ Authorization: `Bearer ${s.keys.auditor}` });
      assert.equal(jobs.status, 200, jobs.text);
      assert.ok(
        jobs.body.queues.find((q: { name: string }) => q.name === 'housekeeping').schedules.length >= 7,
        'the schedules are back in the new Redis',
      );
    });
  },
);
