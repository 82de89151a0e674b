/**
 * `mqtt-ca serve` with one process against `serve` with every core (SERVE_PROCESSES, node:cluster
 * sharing the port): enrollment and pre-signed OCSP throughput, the same wrk client, the same store.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeOcspRequest } from '../src/ca/x509/ocsp-request.js';
import { encodeCertId, nameHash, publicKeyHash } from '../src/ca/x509/ocsp-response.js';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase } from './db.js';
import { csrBody } from './enrollment.js';
import { bestOf, checked, commandExists, freePort, requestFile, wrk, type WrkResult } from './wrk.js';

const PROCESSES = availableParallelism();

export const description =
  `One \`mqtt-ca serve\` process against \`serve\` with SERVE_PROCESSES=${PROCESSES} (every core of this machine; node:cluster, the ` +
  "processes share the port), on the same PostgreSQL store, job workers off (`JOBS_IN_SERVE=false`, as behind a deployment's " +
  '`mqtt-ca worker` processes). The same client for both: wrk, one thread, 32 keep-alive connections, unpinned, sharing the ' +
  'machine with the service and PostgreSQL. OCSP: pre-signed POSTs over 2,000 issued certificates (SHA-1 CertIDs, no nonce), 1 s ' +
  'of warm-up, the best of two 4 s windows. Enrollment: `POST /v1/enroll`, a distinct device and CSR per request, 3 s of warm-up ' +
  'on other devices, one 6 s window; the certificates recorded are counted against the answers wrk saw. The ratio is what the ' +
  'extra processes bring on this machine; on a 2-core machine that also runs the client and PostgreSQL it is bounded by them.';

const CERTS = 2_000;
const CONNECTIONS = 32;
const OCSP_SECONDS = 4;
const ENROLL_WARMUP_SECONDS = 3;
const ENROLL_SECONDS = 6;
/** More than a run can use at this machine's rate: wrk must never come round to a device already enrolled. */
const WARMUP_DEVICES = 8_000;
const RUN_DEVICES = 16_000;
const GOOD = Buffer.from([0x80, 0x00, 0x18, 0x0f]);

/** `mqtt-ca serve` with `processes` processes; resolves once every one of them listens. */
async function startServe(processes: number, env: NodeJS.ProcessEnv, port: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(import.meta.dirname, '..', 'src', 'cli.ts'), 'serve', '--processes', String(processes)],
    {
      env: {
        ...env,
        PORT: String(port),
        HOST: '127.0.0.1',
        NODE_ENV: 'production',
        JOBS_IN_SERVE: 'false',
        REDIS_URL: '',
        LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve --processes ${processes} did not start:\n${out}`)), 120_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      if ((out.match(/mqtt-ca listening on/g) ?? []).length >= processes) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve --processes ${processes} exited (${code}):\n${out}`));
    });
  });
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

export async function run(): Promise<BenchResult[]> {
  if (!process.env.DATABASE_URL) {
    const none = { name: "serve, 1 process (needs DATABASE_URL: the embedded store is one process's)", value: 0 };
    return [result(none.name, 'requests/s', 0, none, 'not measured')];
  }
  if (!(await commandExists('wrk'))) throw new Error('the replicas benchmark needs wrk (apt-get install wrk)');
  const store = await freshDatabase(8);
  const dir = mkdtempSync(join(tmpdir(), 'mqttca-bench-replicas-'));
  let child: ChildProcess | undefined;
  try {
    const started = await benchService(store.db);
    const { svc, issuingId } = started;
    const ctx = { actor: 'bench' };
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    const issued = await svc.issuance.issueBatch(
      Array.from({ length: CERTS }, (_, i) => ({ profile: 'device' as const, deviceId: `ocsp-${i}`, subjectPublicKeyInfo: spki })),
      ctx,
    );
    const issuer = await svc.hierarchy.issuer(issuingId);
    const posts = issued.map((c) => ({
      path: '/pki/ocsp',
      body: encodeOcspRequest([
        encodeCertId({
          hashAlgorithm: 'sha1',
          issuerNameHash: nameHash(issuer.subjectDer, 'sha1'),
          issuerKeyHash: publicKeyHash(issuer.signer.publicKey, 'sha1'),
          serial: Buffer.from(c.serial, 'hex'),
        }),
      ]),
    }));
    // Every response pre-signed and stored, as after a fleet's first poll.
    for (const p of posts) if (!(await svc.ocsp.respond(p.body)).der.includes(GOOD)) throw new Error('warm-up: not good');
    const ocspFile = requestFile(dir, 'ocsp', posts);

    const configs = [1, PROCESSES];
    const perConfig = WARMUP_DEVICES + RUN_DEVICES;
    const ids = Array.from({ length: configs.length * perConfig }, (_, i) => `rep-${i}`);
    for (let i = 0; i < ids.length; i += 20_000)
      await svc.devices.importManifest(
        ids.slice(i, i + 20_000).map((id) => ({ id, kind: 'client' as const })),
        ctx,
        { lot: 'REPLICAS' },
      );
    const token = await svc.tokens.create({ lot: 'REPLICAS', maxUses: ids.length }, ctx);
    const files = configs.map((_, k) => {
      const base = k * perConfig;
      const reqs = (from: number, to: number) => ids.slice(from, to).map((id) => ({ path: '/v1/enroll', body: csrBody(id) }));
      return {
        warmup: requestFile(dir, `enroll-warmup-${k}`, reqs(base, base + WARMUP_DEVICES)),
        run: requestFile(dir, `enroll-${k}`, reqs(base + WARMUP_DEVICES, base + perConfig)),
        devices: ids.slice(base + WARMUP_DEVICES, base + perConfig),
      };
    });
    await svc.stop();

    const figures: { ocsp: WrkResult; enroll: WrkResult }[] = [];
    for (const [k, processes] of configs.entries()) {
      const port = await freePort();
      child = await startServe(processes, { ...process.env, ...started.env, ...store.env }, port);
      const ocspWindow = {
        port,
        method: 'POST' as const,
        file: ocspFile,
        contentType: 'application/ocsp-request',
        connections: CONNECTIONS,
        pinned: false,
      };
      await wrk({ ...ocspWindow, seconds: 1 });
      const ocsp = checked(`OCSP, ${processes} processes`, await bestOf(2, () => wrk({ ...ocspWindow, seconds: OCSP_SECONDS })));
      const enrollWindow = {
        port,
        method: 'POST' as const,
        contentType: 'application/json',
        headers: [`Authorization: Bearer ${token.token}`],
        connections: CONNECTIONS,
        pinned: false,
      };
      checked(
        `enrollment warm-up, ${processes} processes`,
        await wrk({ ...enrollWindow, file: files[k]!.warmup, seconds: ENROLL_WARMUP_SECONDS }),
      );
      const enroll = checked(
        `enrollment, ${processes} processes`,
        await wrk({ ...enrollWindow, file: files[k]!.run, seconds: ENROLL_SECONDS }),
      );
      await stop(child);
      child = undefined;
      // Every answer wrk counted is a recorded certificate; requests still in flight when its window closed may be recorded too.
      const recorded = Number(
        (
          (
            await store.db.raw(`select count(*)::int as n from certificates where device_id = any(?) and status = 'issued'`, [
              files[k]!.devices,
            ])
          ).rows as { n: number }[]
        )[0]!.n,
      );
      if (recorded < enroll.requests || recorded > enroll.requests + CONNECTIONS)
        throw new Error(`enrollment, ${processes} processes: wrk saw ${enroll.requests} certificates, ${recorded} are recorded`);
      figures.push({ ocsp, enroll });
    }
    const [one, all] = figures as [(typeof figures)[0], (typeof figures)[0]];
    const note = (r: WrkResult & { rates?: number[] }) =>
      `p99 ${r.p99.toFixed(1)} ms${r.rates ? `; windows ${r.rates.map((x) => Math.round(x)).join(', ')}/s` : ''}`;
    const ocspBase = { name: 'OCSP pre-signed POST, serve with 1 process', value: one.ocsp.rps };
    const enrollBase = { name: 'enrollment, serve with 1 process', value: one.enroll.rps };
    return [
      result(ocspBase.name, 'responses/s', one.ocsp.rps, ocspBase, note(one.ocsp)),
      result(`OCSP pre-signed POST, serve with ${PROCESSES} processes`, 'responses/s', all.ocsp.rps, ocspBase, note(all.ocsp)),
      result(enrollBase.name, 'enrollments/s', one.enroll.rps, enrollBase, note(one.enroll)),
      result(`enrollment, serve with ${PROCESSES} processes`, 'enrollments/s', all.enroll.rps, enrollBase, note(all.enroll)),
    ];
  } finally {
    if (child) await stop(child);
    await store.drop();
  }
}
