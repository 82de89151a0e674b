/**
 * The OCSP responder under a fleet's polling, and how fast a revocation becomes visible.
 *
 * Rates: every server in its own process pinned to CPU 0, the same wrk client (one thread, 32
 * keep-alive connections) pinned to CPU 1, the same OCSPRequests. mqtt-ca runs as `mqtt-ca serve`
 * on the store this module filled; baselines from the same run: a bare node:http server
 * answering a fixed body of the same size, CFSSL's `cfssl ocspserve` serving the same pre-signed
 * responses from a file, and `openssl ocsp` as a responder (index file, the same responder key)
 * for nonce requests. Revoke-to-visible: from the start of a revoke call until OCSP answers
 * revoked, in process and on a second replica; the baseline is the same revoke call without the
 * OCSP hooks (what OCSP adds to a revocation).
 */
import 'reflect-metadata';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import knexFactory from 'knex';
import { pino } from 'pino';
import { buildService, type Service } from '../src/main.js';
import { encodeOcspRequest } from '../src/ca/x509/ocsp-request.js';
import { encodeCertId, nameHash, publicKeyHash } from '../src/ca/x509/ocsp-response.js';
import { toPem } from '../src/ca/x509/pem.js';
import { Revocations } from '../src/revoke/revocation.js';
import { CertificateStore } from '../src/store/certificate-store.js';
import type { Serial } from '../src/shared/ids.js';
import { isEmbedded } from '../src/store/db.js';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase } from './db.js';
import {
  bestOf,
  checked,
  commandExists,
  freePort,
  requestFile,
  startPinned,
  waitForPort,
  wrk,
  type WrkRequest,
  type WrkResult,
} from './wrk.js';

export const description =
  'OCSP, every server on one core: each in its own process pinned to CPU 0 (taskset), the same client — wrk, one thread, ' +
  '32 keep-alive connections, pinned to CPU 1 — sending the same real OCSPRequests (SHA-1 CertIDs over 2,000 issued ' +
  "certificates, taken in turn), 1 s of warm-up, then three 3-second windows, of which the fastest counts (every window's rate is in the note). mqtt-ca is `mqtt-ca serve` on the store this " +
  'benchmark filled, with its job workers off (`JOBS_IN_SERVE=false`: the responder alone; housekeeping runs in `mqtt-ca worker` processes) (`POST /pki/ocsp` and `GET /pki/ocsp/{base64}` on the lean node:http handler). Pre-signed: no nonce, ' +
  'answered from the in-process cache after the warm-up (misses read the shared store). Nonce: 20,000 requests with distinct ' +
  'nonces, each signed on the spot with the delegated responder key (ECDSA P-256). Baselines: a bare node:http server answering ' +
  'a fixed body of the same size (target: pre-signed >= 40% of it); `cfssl ocspserve` (Debian golang-cfssl, GOMAXPROCS=1) ' +
  'serving the same pre-signed responses from a file (target: pre-signed at least its rate); `openssl ocsp` as a responder with ' +
  'an index file and the same responder key (target: the nonce path ahead of it, and >= 10,000/s). Revoke-to-visible: from the ' +
  'start of `Revocations.revoke` until `OcspResponder.respond` answers revoked, 50 revocations, in process and on a second ' +
  'replica (its own pool, cache and LISTEN connection; PostgreSQL only), against the same revoke call without the OCSP hooks.';

const CONNECTIONS = 32;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
/** Every figure is the best of this many windows (the same for every server). */
const ROUNDS = 3;
const CERTS = 2_000;
const NONCE_BODIES = 20_000;
const REVOCATIONS = 50;
const OCSP_REQUEST = 'application/ocsp-request';

const GOOD = Buffer.from([0x80, 0x00, 0x18, 0x0f]);
const isRevoked = (der: Buffer) =>
  der.includes(Buffer.from([0xa1, 0x16, 0x18, 0x0f])) || der.includes(Buffer.from([0xa1, 0x11, 0x18, 0x0f]));
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

/** One request on a connection of its own, closed after it (`openssl ocsp` serves one connection at a time). */
function fetchOnce(port: number, method: string, path: string, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent: false,
        headers: body ? { 'Content-Type': OCSP_REQUEST, 'Content-Length': body.length } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      },
    );
    req.setTimeout(5000, () => req.destroy(new Error(`${method} ${path}: no answer in 5 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** A few requests of a run, checked one by one: a rate of wrong answers is no rate. */
async function spotCheck(
  what: string,
  port: number,
  requests: WrkRequest[],
  method: 'GET' | 'POST',
  expect: (der: Buffer) => boolean,
): Promise<void> {
  for (const r of requests.slice(0, 20)) {
    const res = await fetchOnce(port, method, r.path, r.body);
    if (res.status !== 200 || !expect(res.body))
      throw new Error(`${what}: HTTP ${res.status}, not the expected OCSP answer (${res.body.subarray(0, 16).toString('hex')}…)`);
  }
}

export async function run(): Promise<BenchResult[]> {
  for (const cmd of ['wrk', 'taskset', 'openssl']) {
    if (!(await commandExists(cmd))) throw new Error(`the OCSP benchmark needs ${cmd} (apt-get install wrk util-linux openssl)`);
  }
  const store = await freshDatabase(16, { shareable: true });
  const dir = mkdtempSync(join(tmpdir(), 'mqttca-bench-ocsp-'));
  const children: ReturnType<typeof startPinned>[] = [];
  let replica: Service | undefined;
  let svc: Service | undefined;
  try {
    const started = await benchService(store.db, { dataDir: store.env.DATA_DIR });
    svc = started.svc;
    const { issuingId } = started;
    const ctx = { actor: 'bench' };
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    const issued = await svc.issuance.issueBatch(
      Array.from({ length: CERTS + 3 * REVOCATIONS }, (_, i) => ({
        profile: 'device' as const,
        deviceId: `ocsp-${i}`,
        subjectPublicKeyInfo: spki,
      })),
      ctx,
    );
    const issuer = await svc.hierarchy.issuer(issuingId);
    const certId = (serial: Serial) =>
      encodeCertId({
        hashAlgorithm: 'sha1',
        issuerNameHash: nameHash(issuer.subjectDer, 'sha1'),
        issuerKeyHash: publicKeyHash(issuer.signer.publicKey, 'sha1'),
        serial: Buffer.from(serial, 'hex'),
      });
    const out: BenchResult[] = [];

    // ---- revoke-to-visible, in this process ------------------------------------------------------
    const rest = issued.slice(CERTS);
    const reqOf = (serial: Serial) => encodeOcspRequest([certId(serial)]);
    const withoutOcsp = new Revocations(svc.db, new CertificateStore(), svc.devices, svc.audit, svc.clock, [svc.crls]);
    const plainRevoke: number[] = [];
    for (const c of rest.slice(0, REVOCATIONS)) {
      const t0 = performance.now();
      await withoutOcsp.revoke(c.serial, { reason: 'keyCompromise' }, ctx);
      plainRevoke.push(performance.now() - t0);
    }
    const local: number[] = [];
    for (const c of rest.slice(REVOCATIONS, 2 * REVOCATIONS)) {
      const req = reqOf(c.serial);
      if (!(await svc.ocsp.respond(req)).der.includes(GOOD)) throw new Error('not good before the revocation');
      const t0 = performance.now();
      await svc.revocations.revoke(c.serial, { reason: 'keyCompromise' }, ctx);
      if (!isRevoked((await svc.ocsp.respond(req)).der)) throw new Error('OCSP did not say revoked when revoke returned');
      local.push(performance.now() - t0);
    }
    const revokeBase = { name: 'revoke call without the OCSP hooks (CRL only), p50', value: percentile(plainRevoke, 0.5) };
    out.push(result(revokeBase.name, 'ms', revokeBase.value, revokeBase));
    out.push(
      result(
        'revoke-to-visible, same process (revoke returns, OCSP says revoked), p50',
        'ms',
        percentile(local, 0.5),
        revokeBase,
        `p99 ${percentile(local, 0.99).toFixed(1)} ms`,
      ),
    );
    if (!isEmbedded(store.db)) {
      replica = await buildService(svc.config, {
        db: knexFactory({ client: 'pg', connection: store.db.client.config.connection, pool: { min: 0, max: 4 } }),
        logger: pino({ level: 'silent' }),
      });
      for (let i = 0; i < 200 && !replica.ocsp.cache.enabled; i++) await new Promise((r) => setTimeout(r, 10));
      const remote: number[] = [];
      for (const c of rest.slice(2 * REVOCATIONS)) {
        const req = reqOf(c.serial);
        if (!(await replica.ocsp.respond(req)).der.includes(GOOD)) throw new Error('not good on the replica before the revocation');
        const t0 = performance.now();
        const revoking = svc.revocations.revoke(c.serial, { reason: 'keyCompromise' }, ctx);
        while (!isRevoked((await replica.ocsp.respond(req)).der)) await new Promise((r) => setImmediate(r));
        remote.push(performance.now() - t0);
        await revoking;
      }
      out.push(
        result(
          'revoke-to-visible on a second replica (polled until revoked), p50',
          'ms',
          percentile(remote, 0.5),
          revokeBase,
          `p99 ${percentile(remote, 0.99).toFixed(1)} ms; both replicas in this process`,
        ),
      );
      await replica.close();
      replica = undefined;
    }

    // ---- the requests, and every pre-signed response stored as after a fleet's first poll ------------
    const polled = issued.slice(0, CERTS);
    const plain = polled.map((c) => encodeOcspRequest([certId(c.serial)]));
    const presigned: Buffer[] = [];
    for (const r of plain) {
      const a = await svc.ocsp.respond(r);
      if (a.error || !a.der.includes(GOOD)) throw new Error(`warm-up: ${a.error ?? 'not good'}`);
      presigned.push(a.der);
    }
    const posts: WrkRequest[] = plain.map((body) => ({ path: '/pki/ocsp', body }));
    const gets: WrkRequest[] = plain.map((r) => ({ path: `/pki/ocsp/${encodeURIComponent(r.toString('base64'))}` }));
    const nonces: WrkRequest[] = Array.from({ length: NONCE_BODIES }, (_, i) => ({
      path: '/pki/ocsp',
      body: encodeOcspRequest([certId(polled[i % CERTS]!.serial)], randomBytes(16)),
    }));
    const atRoot = (rs: WrkRequest[]) => rs.map((r) => ({ ...r, path: '/' }));
    const files = {
      posts: requestFile(dir, 'posts', posts),
      gets: requestFile(dir, 'gets', gets),
      nonces: requestFile(dir, 'nonces', nonces),
      postsAtRoot: requestFile(dir, 'posts-root', atRoot(posts)),
      noncesAtRoot: requestFile(dir, 'nonces-root', atRoot(nonces)),
    };
    const window = { contentType: OCSP_REQUEST, connections: CONNECTIONS, seconds: SECONDS };
    const measure = async (port: number, method: 'GET' | 'POST', file: string) => {
      await wrk({ port, method, file, ...window, seconds: 1 }); // warm-up, not counted
      return bestOf(ROUNDS, () => wrk({ port, method, file, ...window }));
    };

    // openssl ocsp's inputs: the index of the polled certificates, our responder's key and certificate.
    const responder = await svc.ocspResponders.responder(issuingId);
    const ref = (await svc.settings.get<{ signerRef: string }>(svc.db, `ocsp_responder:${issuingId}`))!;
    const ossl = { index: join(dir, 'index.txt'), rsigner: join(dir, 'rsigner.pem'), rkey: join(dir, 'rkey.pem'), ca: join(dir, 'ca.pem') };
    writeFileSync(
      ossl.index,
      polled
        .map(
          (c) =>
            `V\t${c.notAfter.toISOString().replace(/[-:T]/g, '').slice(2, 14)}Z\t\t${c.serial.toUpperCase()}\tunknown\t/CN=${c.serial}`,
        )
        .join('\n') + '\n',
    );
    writeFileSync(ossl.rsigner, toPem(responder.certificateDer));
    writeFileSync(ossl.rkey, await svc.vault.tlsPrivateKeyPem(svc.db, ref.signerRef), { mode: 0o600 });
    writeFileSync(ossl.ca, toPem(issuer.certificateDer));

    // The embedded store is one process's: hand it over to the server process.
    if (isEmbedded(store.db)) await svc.close();
    else await svc.stop();
    svc = undefined;

    // ---- mqtt-ca serve on one core -------------------------------------------------------------------
    const port = await freePort();
    // BENCH_CPU_PROF=<dir>: a CPU profile of the server process, written when it stops.
    const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
    const ours = startPinned(process.execPath, [...profile, '--import', 'tsx', join(import.meta.dirname, '..', 'src', 'cli.ts'), 'serve'], {
      ...process.env,
      ...started.env,
      ...store.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      NODE_ENV: 'production',
      // The responder alone: housekeeping jobs would run in `mqtt-ca worker` processes of a deployment this busy.
      JOBS_IN_SERVE: 'false',
      REDIS_URL: '',
    });
    children.push(ours);
    await waitForPort(port, ours, 'mqtt-ca serve');
    await spotCheck('mqtt-ca GET', port, gets, 'GET', (d) => d.includes(GOOD));
    await spotCheck('mqtt-ca POST', port, posts, 'POST', (d) => d.includes(GOOD));
    await spotCheck('mqtt-ca nonce', port, nonces, 'POST', (d) => d.includes(GOOD) && d.length > presigned[0]!.length);
    const post = checked('POST', await measure(port, 'POST', files.posts));
    const get = checked('GET', await measure(port, 'GET', files.gets));
    const nonce = checked('nonce', await measure(port, 'POST', files.nonces));
    await new Promise((r) => {
      ours.once('exit', r);
      ours.kill();
    });

    // ---- bare node:http -------------------------------------------------------------------------------
    const barePort = await freePort();
    const bareChild = startPinned(process.execPath, [
      '-e',
      `const b=Buffer.alloc(${presigned[0]!.length},1);require('http').createServer((q,s)=>{q.resume();q.on('end',()=>{s.writeHead(200,{'Content-Type':'application/ocsp-response','Content-Length':b.length});s.end(b)})}).listen(${barePort},'127.0.0.1')`,
    ]);
    children.push(bareChild);
    await waitForPort(barePort, bareChild, 'bare node:http');
    const bare = checked('bare', await measure(barePort, 'POST', files.postsAtRoot));
    bareChild.kill();

    const bareBase = { name: 'bare node:http, fixed body of the same size', value: bare.rps };
    const spread = (r: { rates: number[] }) => `windows ${r.rates.map((x) => Math.round(x).toLocaleString('en-US')).join(' / ')}`;
    const note = (r: WrkResult & { rates: number[] }) =>
      `${store.label}; p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms; ${spread(r)}`;
    out.push(result(bareBase.name, 'requests/s', bare.rps, bareBase, `one core; p99 ${bare.p99.toFixed(1)} ms; ${spread(bare)}`));
    out.push(result('OCSP pre-signed, GET /pki/ocsp/{base64}', 'responses/s', get.rps, bareBase, `${note(get)}; target ratio >= 0.40`));
    out.push(result('OCSP pre-signed, POST /pki/ocsp', 'responses/s', post.rps, bareBase, `${note(post)}; target ratio >= 0.40`));

    // ---- cfssl ocspserve, the same responses ------------------------------------------------------
    if (await commandExists('cfssl')) {
      const file = join(dir, 'responses.txt');
      writeFileSync(file, presigned.map((d) => d.toString('base64')).join('\n') + '\n');
      const cfPort = await freePort();
      const cf = startPinned(
        'cfssl',
        ['ocspserve', '-address', '127.0.0.1', '-port', String(cfPort), '-responses', file, '-loglevel', '5'],
        { ...process.env, GOMAXPROCS: '1' },
      );
      children.push(cf);
      await waitForPort(cfPort, cf, 'cfssl ocspserve');
      await spotCheck('cfssl POST', cfPort, atRoot(posts), 'POST', (d) => d.includes(GOOD));
      // POST only: cfssl 1.2 (Debian's) unescapes a GET path as a query string, so the '+' that
      // these requests' base64 carries (in the issuer hashes) becomes a space and it answers 400.
      const cfPost = checked('cfssl POST', await measure(cfPort, 'POST', files.postsAtRoot));
      cf.kill();
      const cfBase = { name: 'cfssl ocspserve, same responses from a file, POST', value: cfPost.rps };
      out.push(result(cfBase.name, 'responses/s', cfPost.rps, bareBase, `one core; p99 ${cfPost.p99.toFixed(1)} ms; ${spread(cfPost)}`));
      out.push(result('OCSP pre-signed POST, against cfssl ocspserve', 'responses/s', post.rps, cfBase, 'target ratio >= 1'));
      out.push(
        result(
          'OCSP pre-signed GET, against cfssl ocspserve POST',
          'responses/s',
          get.rps,
          cfBase,
          'target ratio >= 1 (cfssl 1.2 cannot answer these GETs at all)',
        ),
      );
    } else {
      out.push(result('cfssl ocspserve (not installed: apt-get install golang-cfssl)', 'responses/s', 0, bareBase, 'not measured'));
    }

    // ---- openssl ocsp as a nonce responder, with our responder's key and certificate ------------------
    // A fresh process for every window, and no warm-up run: when a run ends, the connections still
    // in openssl's backlog close unserved, and openssl 3.0 spins forever on the first of them.
    let osslChecked = false;
    const osslNonce = checked(
      'openssl ocsp',
      await bestOf(ROUNDS, async () => {
        const osslPort = await freePort();
        const osslChild = startPinned('openssl', [
          'ocsp',
          '-index',
          ossl.index,
          '-port',
          String(osslPort),
          '-rsigner',
          ossl.rsigner,
          '-rkey',
          ossl.rkey,
          '-CA',
          ossl.ca,
          '-ndays',
          '1',
        ]);
        children.push(osslChild);
        try {
          await waitForPort(osslPort, osslChild, 'openssl ocsp', { readyText: 'waiting for OCSP client connections' });
          if (!osslChecked) await spotCheck('openssl ocsp', osslPort, atRoot(nonces), 'POST', (d) => d.includes(GOOD));
          osslChecked = true;
          return await wrk({ port: osslPort, method: 'POST', file: files.noncesAtRoot, ...window });
        } finally {
          osslChild.kill();
        }
      }),
    );
    const osslBase = { name: 'openssl ocsp responder, nonce requests, same responder key', value: osslNonce.rps };
    out.push(
      result(
        osslBase.name,
        'responses/s',
        osslNonce.rps,
        bareBase,
        `one core; p99 ${osslNonce.p99.toFixed(1)} ms; one request at a time; ${spread(osslNonce)}`,
      ),
    );
    out.push(
      result(
        'OCSP with a nonce (signed per request), POST /pki/ocsp',
        'responses/s',
        nonce.rps,
        osslBase,
        `${note(nonce)}; target ratio > 1 and >= 10,000/s`,
      ),
    );
    return out;
  } finally {
    for (const c of children) c.kill();
    await replica?.close();
    if (svc) await (isEmbedded(store.db) ? svc.close() : svc.stop());
    await store.drop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await run())
    console.log(
      `${r.name}: ${r.value.toFixed(1)} ${r.unit} (ratio ${r.ratio.toFixed(3)} to ${r.baselineName})${r.note ? ` — ${r.note}` : ''}`,
    );
}
