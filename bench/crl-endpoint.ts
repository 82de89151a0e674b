/**
 * The CRL and OCSP endpoints under a broker handshake storm (issue #27 item 3): RabbitMQ's Erlang
 * crl_check fetches the root's and the issuing CA's CRL over HTTP on every TLS handshake, with no
 * cache and no conditional headers; other relying parties revalidate with If-None-Match. Full
 * GETs and conditional GETs (304) per second of the issuing CA's CRL with 10,000 revoked entries,
 * and the same for the pre-signed OCSP answer of a broker certificate, each against a bare
 * node:http server serving the same bytes (and answering the same If-None-Match) in the same run.
 */
import 'reflect-metadata';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { encodeOcspRequest } from '../src/ca/x509/ocsp-request.js';
import { encodeCertId, nameHash, publicKeyHash } from '../src/ca/x509/ocsp-response.js';
import type { Service } from '../src/main.js';
import { isEmbedded } from '../src/store/db.js';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase, SEEDED_KEY_TYPE } from './db.js';
import { bestOf, checked, commandExists, freePort, requestFile, startPinned, waitForPort, wrk, type WrkResult } from './wrk.js';

const REVOKED = 10_000;
const CONNECTIONS = 32;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const ROUNDS = 3;

export const description =
  'The CRL and OCSP endpoints under a broker handshake storm: RabbitMQ (Erlang `crl_check`) fetches the CRLs over HTTP on ' +
  'every TLS handshake, with no cache and no conditional headers; other relying parties revalidate with If-None-Match. ' +
  `The issuing CA's full CRL with ${REVOKED.toLocaleString('en-US')} revoked entries (\`GET /pki/crl/{caId}.crl\`), and the pre-signed OCSP answer ` +
  "of a broker certificate (`GET /pki/ocsp/{base64}`), each fetched whole (200) and conditionally (If-None-Match with the answer's ETag: 304). " +
  'mqtt-ca is `mqtt-ca serve` (`JOBS_IN_SERVE=false`) pinned to CPU 0 on the store this module filled; the baseline is a bare node:http ' +
  'server, pinned the same way, serving the same bytes with the same ETag (and 304 on a match) from memory; the client is wrk ' +
  `(one thread, ${CONNECTIONS} keep-alive connections, pinned to CPU 1), 1 s of warm-up, then the fastest of three 3-second windows.`;

function fetchOnce(port: number, path: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: Buffer; headers: Record<string, string | string[] | undefined> }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'GET', path, agent: false, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers }));
    });
    req.setTimeout(5000, () => req.destroy(new Error(`GET ${path}: no answer in 5 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** What both servers must answer: the bytes, and 304 for the ETag. */
async function spotCheck(what: string, port: number, path: string, der: Buffer, etag: string): Promise<void> {
  const full = await fetchOnce(port, path);
  if (full.status !== 200 || !full.body.equals(der)) throw new Error(`${what}: HTTP ${full.status}, not the expected ${der.length} bytes`);
  if (full.headers.etag !== etag) throw new Error(`${what}: ETag ${String(full.headers.etag)}, expected ${etag}`);
  const cond = await fetchOnce(port, path, { 'If-None-Match': etag });
  if (cond.status !== 304 || cond.body.length !== 0) throw new Error(`${what}: a conditional GET answered ${cond.status}`);
}

export async function run(): Promise<BenchResult[]> {
  for (const cmd of ['wrk', 'taskset']) {
    if (!(await commandExists(cmd))) throw new Error(`the CRL endpoint benchmark needs ${cmd} (apt-get install wrk util-linux)`);
  }
  const store = await freshDatabase(16, { shareable: true });
  const dir = mkdtempSync(join(tmpdir(), 'mqttca-bench-crl-endpoint-'));
  const children: ReturnType<typeof startPinned>[] = [];
  let svc: Service | undefined;
  try {
    const started = await benchService(store.db, { dataDir: store.env.DATA_DIR });
    svc = started.svc;
    const { issuingId } = started;
    // Revoked certificates straight into the table, as bench/crl.ts does; then one CRL of them.
    await store.db.raw(
      `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, tbs_der, der, spki_sha256, key_type, not_before, not_after,
                                 created_at, issued_at, revoked_at, revocation_reason)
       select decode(md5('crl-endpoint-' || i), 'hex'), ?, 'device', 'revoked', 'dev-' || i, 'dev-' || i, '\\x00', '\\x00', '\\x00', ?,
              now() - interval '1 day', now() + interval '365 days', now(), now(), now() - (i || ' seconds')::interval,
              (array['keyCompromise', 'superseded', 'unspecified'])[1 + i % 3]
         from generate_series(1, ?::int) as i`,
      [issuingId, SEEDED_KEY_TYPE, REVOKED],
    );
    const { full } = await svc.crls.publish(issuingId);
    if (full.entries !== REVOKED) throw new Error(`the CRL has ${full.entries} entries, expected ${REVOKED}`);
    const crlDer = (await svc.crls.der({ caId: issuingId, shard: 0, crlNumber: full.crlNumber }))!;
    const crlPath = `/pki/crl/${issuingId}.crl`;

    const broker = await svc.issuance.issue(
      {
        profile: 'broker',
        dnsNames: ['broker.bench'],
        subjectPublicKeyInfo: generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }),
      },
      { actor: 'bench' },
    );
    const issuer = await svc.hierarchy.issuer(issuingId);
    const ocspRequest = encodeOcspRequest([
      encodeCertId({
        hashAlgorithm: 'sha1',
        issuerNameHash: nameHash(issuer.subjectDer, 'sha1'),
        issuerKeyHash: publicKeyHash(issuer.signer.publicKey, 'sha1'),
        serial: Buffer.from(broker.serial, 'hex'),
      }),
    ]);
    const ocspPath = `/pki/ocsp/${encodeURIComponent(ocspRequest.toString('base64'))}`;

    if (isEmbedded(store.db)) await svc.close();
    else await svc.stop();
    svc = undefined;

    const port = await freePort();
    const ours = startPinned(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'src', 'cli.ts'), 'serve'], {
      ...process.env,
      ...started.env,
      ...store.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      NODE_ENV: 'production',
      JOBS_IN_SERVE: 'false',
      REDIS_URL: '',
    });
    children.push(ours);
    await waitForPort(port, ours, 'mqtt-ca serve');
    const crlFirst = await fetchOnce(port, crlPath);
    const crlEtag = String(crlFirst.headers.etag);
    const ocspFirst = await fetchOnce(port, ocspPath);
    const ocspDer = ocspFirst.body;
    const ocspEtag = String(ocspFirst.headers.etag);
    await spotCheck('mqtt-ca CRL', port, crlPath, crlDer, crlEtag);
    await spotCheck('mqtt-ca OCSP', port, ocspPath, ocspDer, ocspEtag);

    const files = { crl: requestFile(dir, 'crl', [{ path: crlPath }]), ocsp: requestFile(dir, 'ocsp', [{ path: ocspPath }]) };
    const measure = async (p: number, file: string, headers: string[] = []) => {
      const o = { port: p, method: 'GET' as const, file, connections: CONNECTIONS, seconds: SECONDS, headers };
      await wrk({ ...o, seconds: 1 });
      return bestOf(ROUNDS, () => wrk(o));
    };
    const ourCrl = checked('CRL GET', await measure(port, files.crl));
    const ourCrl304 = checked('CRL 304', await measure(port, files.crl, [`If-None-Match: ${crlEtag}`]));
    const ourOcsp = checked('OCSP GET', await measure(port, files.ocsp));
    const ourOcsp304 = checked('OCSP 304', await measure(port, files.ocsp, [`If-None-Match: ${ocspEtag}`]));
    await new Promise((r) => {
      ours.once('exit', r);
      ours.kill();
    });

    // The bare server: the same bytes and ETags from memory, 304 on a match, nothing else.
    writeFileSync(join(dir, 'crl.der'), crlDer);
    writeFileSync(join(dir, 'ocsp.der'), ocspDer);
    const barePort = await freePort();
    const bareChild = startPinned(process.execPath, [
      '-e',
      `const fs=require('fs');` +
        `const crl={b:fs.readFileSync(${JSON.stringify(join(dir, 'crl.der'))}),t:'application/pkix-crl',e:${JSON.stringify(crlEtag)}};` +
        `const ocsp={b:fs.readFileSync(${JSON.stringify(join(dir, 'ocsp.der'))}),t:'application/ocsp-response',e:${JSON.stringify(ocspEtag)}};` +
        `require('http').createServer((q,s)=>{const r=q.url.startsWith('/pki/crl/')?crl:ocsp;` +
        `if(q.headers['if-none-match']===r.e){s.writeHead(304,{ETag:r.e});return s.end()}` +
        `s.writeHead(200,{'Content-Type':r.t,'Content-Length':r.b.length,ETag:r.e});s.end(r.b)}).listen(${barePort},'127.0.0.1')`,
    ]);
    children.push(bareChild);
    await waitForPort(barePort, bareChild, 'bare node:http');
    await spotCheck('bare CRL', barePort, crlPath, crlDer, crlEtag);
    await spotCheck('bare OCSP', barePort, ocspPath, ocspDer, ocspEtag);
    const bareCrl = checked('bare CRL GET', await measure(barePort, files.crl));
    const bareCrl304 = checked('bare CRL 304', await measure(barePort, files.crl, [`If-None-Match: ${crlEtag}`]));
    const bareOcsp = checked('bare OCSP GET', await measure(barePort, files.ocsp));
    const bareOcsp304 = checked('bare OCSP 304', await measure(barePort, files.ocsp, [`If-None-Match: ${ocspEtag}`]));
    bareChild.kill();

    const spread = (r: { rates: number[] }) => `windows ${r.rates.map((x) => Math.round(x).toLocaleString('en-US')).join(' / ')}`;
    const note = (r: WrkResult & { rates: number[] }, extra = '') =>
      `${extra}p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms; ${spread(r)}`;
    const kb = (crlDer.length / 1024).toFixed(0);
    const out: BenchResult[] = [];
    const pair = (name: string, ours: WrkResult & { rates: number[] }, bare: WrkResult & { rates: number[] }, unit: string) => {
      const base = { name: `bare node:http, ${name}, same bytes`, value: bare.rps };
      out.push(result(base.name, unit, bare.rps, base, note(bare, 'one core; ')));
      out.push(result(`mqtt-ca ${name}`, unit, ours.rps, base, note(ours, `${store.label}; `)));
    };
    pair(`CRL full GET (${kb} KiB, ${REVOKED.toLocaleString('en-US')} revoked)`, ourCrl, bareCrl, 'responses/s');
    pair('CRL conditional GET (If-None-Match: 304)', ourCrl304, bareCrl304, 'responses/s');
    pair(`OCSP pre-signed GET (${ocspDer.length} B, broker certificate)`, ourOcsp, bareOcsp, 'responses/s');
    pair('OCSP conditional GET (If-None-Match: 304)', ourOcsp304, bareOcsp304, 'responses/s');
    return out;
  } finally {
    for (const c of children) c.kill();
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
