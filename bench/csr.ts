/**
 * CSR parse + proof-of-possession check per second for the enrollment hot path:
 * src/ca/x509/csr.ts (`parseCsrDer` + `verifyCsr`: node:crypto on worker threads) against
 * @peculiar/x509's `new Pkcs10CertificateRequest(der)` + `await verify()` (WebCrypto), same CSR,
 * same run, one at a time and 64 in flight (as a loaded server has them).
 *
 * Workload: a P-256 CSR made by `openssl req` (CN, O, a SAN extension).
 *
 *   npm run bench -- csr
 */
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { webcrypto } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { csrFromBody, parseCsrDer, verifyCsr } from '../src/ca/x509/csr.js';
import { toPem } from '../src/ca/x509/pem.js';
import { concurrently, measureRate, result, type BenchResult } from './lib.js';

export const description =
  'Parse + signature check of one P-256 CSR made by `openssl req` (CN, O, one DNS SAN), one at a time and 64 in flight. ' +
  "Baseline: @peculiar/x509 `new Pkcs10CertificateRequest(der)` + `await verify()` (Node's WebCrypto as provider), at the " +
  'same concurrency. Ours: `parseCsrDer` (a strict single-pass DER walk, no object model) on the event loop + `verifyCsr` ' +
  "(the key imported from its raw point and verified by node:crypto on worker threads, each event-loop turn's checks sent as " +
  'one message): one at a time it pays the trip to the worker; in flight it is what an enrollment server gets. The fields ' +
  'both sides read are compared in test/unit/csr.test.ts.';

function opensslP256Csr(): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'bench-csr-'));
  try {
    const key = join(dir, 'k.pem');
    const cnf = join(dir, 'req.cnf');
    const out = join(dir, 'req.der');
    writeFileSync(
      cnf,
      [
        '[req]',
        'distinguished_name = dn',
        'prompt = no',
        'req_extensions = ext',
        '[dn]',
        'O = Acme Fleet',
        'CN = dev-1',
        '[ext]',
        'subjectAltName = DNS:dev-1.devices.example',
        '',
      ].join('\n'),
    );
    for (const args of [
      ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key],
      ['req', '-new', '-key', key, '-config', cnf, '-outform', 'DER', '-out', out],
    ]) {
      const r = spawnSync('openssl', args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
    }
    return readFileSync(out);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<BenchResult[]> {
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const der = opensslP256Csr();
  const pem = toPem(der, 'CERTIFICATE REQUEST');

  const library = async () => {
    const csr = new x509.Pkcs10CertificateRequest(der);
    if (!(await csr.verify())) throw new Error('library: the CSR does not verify');
  };
  const ours = async () => {
    if (!(await verifyCsr(parseCsrDer(der)))) throw new Error('ours: the CSR does not verify');
  };
  const oursFromPem = async () => {
    if (!(await verifyCsr(parseCsrDer(csrFromBody(pem))))) throw new Error('ours: the CSR does not verify');
  };
  const oursParseOnly = () => parseCsrDer(der);
  // Outside the timed windows: both sides accept the CSR.
  await library();
  await ours();
  await oursFromPem();

  const unit = 'CSRs/s';
  const baselineName = '@peculiar/x509 Pkcs10CertificateRequest + verify()';
  const baselineValue = await measureRate(library);
  const baseline = { name: baselineName, value: baselineValue };
  const inFlightName = `${baselineName}, 64 in flight`;
  const inFlight = { name: inFlightName, value: await measureRate(concurrently(64, library)) };
  return [
    result(baselineName, unit, baselineValue, baseline),
    result('parseCsrDer + verifyCsr (P-256), one at a time', unit, await measureRate(ours), baseline),
    result(inFlightName, unit, inFlight.value, inFlight),
    result('parseCsrDer + verifyCsr (P-256), 64 in flight', unit, await measureRate(concurrently(64, ours)), inFlight),
    result('csrFromBody(PEM) + parseCsrDer + verifyCsr, 64 in flight', unit, await measureRate(concurrently(64, oursFromPem)), inFlight),
    result('parseCsrDer alone (no signature check)', unit, await measureRate(oursParseOnly), baseline, 'structure only'),
  ];
}
