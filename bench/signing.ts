/**
 * Raw signing rate of one key, ~300-byte messages (the size of a small TBSCertificate or an
 * OCSP ResponseData), by provider:
 *
 *   - node:crypto `sign()` with a KeyObject, DER signatures: the baseline (ECDSA P-256, SHA-256);
 *     also its callback form (runs on the libuv thread pool) with 64 in flight;
 *   - Node's WebCrypto (`globalThis.crypto.subtle.sign`), one at a time and 64 in flight;
 *   - @peculiar/webcrypto (`new Crypto().subtle.sign`), one at a time and 64 in flight;
 *   - Ed25519 and ECDSA P-384 (SHA-384) with node:crypto `sign()`.
 *
 * Every provider's signature is verified once before it is timed.
 *
 *   npm run bench            # all modules, writes docs/benchmarks.md
 *   npx tsx bench/signing.ts # this module only, prints the table
 */
import { createPublicKey, generateKeyPairSync, randomFillSync, sign, verify, type KeyObject, type webcrypto } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { pathToFileURL } from 'node:url';
import { Crypto as PeculiarCrypto } from '@peculiar/webcrypto';
import { concurrently, formatRatio, formatValue, measureRate, result, type BenchResult } from './lib.js';

export const description =
  'Raw signature rate of a single key over a fixed ~300-byte message (the size of a small ' +
  'TBSCertificate or OCSP ResponseData), by crypto provider. The baseline is node:crypto ' +
  '`sign()` with a KeyObject, ECDSA P-256 with SHA-256 and DER output, called synchronously on ' +
  'the main thread. "64 in flight" keeps 64 async calls outstanding; Node\'s WebCrypto and the ' +
  'callback form of `crypto.sign` run on the libuv thread pool (UV_THREADPOOL_SIZE, default 4), ' +
  'so they can use more than one core; @peculiar/webcrypto wraps the synchronous node:crypto ' +
  'calls in promises, passes the private key to `createSign().sign()` as a PEM string (so ' +
  'OpenSSL parses the key again for every signature: that, not the curve, is its cost) and ' +
  'converts DER signatures to the raw r||s form WebCrypto specifies.';

const MESSAGE_BYTES = 300;
const IN_FLIGHT = 64;
const UNIT = 'signatures/s';

const ECDSA_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const ECDSA_SHA256 = { name: 'ECDSA', hash: 'SHA-256' } as const;

function ecKey(namedCurve: 'P-256' | 'P-384'): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve });
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`signing bench: ${what}: signature did not verify`);
}

export async function run(): Promise<BenchResult[]> {
  const message = new Uint8Array(MESSAGE_BYTES);
  randomFillSync(message);

  // ---- node:crypto, the baseline ----------------------------------------------------------------
  const p256 = ecKey('P-256');
  const nodeSignP256 = () => sign('sha256', message, { key: p256.privateKey, dsaEncoding: 'der' });
  check(verify('sha256', message, { key: p256.publicKey, dsaEncoding: 'der' }, nodeSignP256()), 'node P-256');

  const baselineName = 'node crypto.sign ECDSA P-256';
  const baselineValue = await measureRate(nodeSignP256);
  const baseline = { name: baselineName, value: baselineValue };
  const results: BenchResult[] = [result(baselineName, UNIT, baselineValue, baseline, 'KeyObject, SHA-256, dsaEncoding der, synchronous')];

  const nodeSignP256Async = () =>
    new Promise<Buffer>((resolve, reject) =>
      sign('sha256', message, { key: p256.privateKey, dsaEncoding: 'der' }, (err, sig) => (err ? reject(err) : resolve(sig))),
    );
  check(verify('sha256', message, { key: p256.publicKey, dsaEncoding: 'der' }, await nodeSignP256Async()), 'node P-256 callback');
  results.push(
    result(
      `node crypto.sign ECDSA P-256, callback, ${IN_FLIGHT} in flight`,
      UNIT,
      await measureRate(concurrently(IN_FLIGHT, nodeSignP256Async)),
      baseline,
      `libuv thread pool (${process.env.UV_THREADPOOL_SIZE ?? 4} threads)`,
    ),
  );

  // ---- Node's WebCrypto ------------------------------------------------------------------------
  const subtle = globalThis.crypto.subtle;
  const webKeys = await subtle.generateKey(ECDSA_P256, false, ['sign', 'verify']);
  const webSign = () => subtle.sign(ECDSA_SHA256, webKeys.privateKey, message);
  check(await subtle.verify(ECDSA_SHA256, webKeys.publicKey, await webSign(), message), 'node WebCrypto P-256');
  results.push(
    result('node WebCrypto subtle.sign ECDSA P-256, sequential', UNIT, await measureRate(webSign), baseline, 'one await at a time'),
    result(
      `node WebCrypto subtle.sign ECDSA P-256, ${IN_FLIGHT} in flight`,
      UNIT,
      await measureRate(concurrently(IN_FLIGHT, webSign)),
      baseline,
    ),
  );

  // ---- @peculiar/webcrypto ---------------------------------------------------------------------
  const peculiar = new PeculiarCrypto().subtle;
  const pecKeys = (await peculiar.generateKey(ECDSA_P256, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const pecSign = () => peculiar.sign(ECDSA_SHA256, pecKeys.privateKey, message);
  check(await peculiar.verify(ECDSA_SHA256, pecKeys.publicKey, await pecSign(), message), '@peculiar/webcrypto P-256');
  results.push(
    result(
      '@peculiar/webcrypto subtle.sign ECDSA P-256, sequential',
      UNIT,
      await measureRate(pecSign),
      baseline,
      'one await at a time; hands node:crypto the key as a PEM string, parsed again on every call',
    ),
    result(
      `@peculiar/webcrypto subtle.sign ECDSA P-256, ${IN_FLIGHT} in flight`,
      UNIT,
      await measureRate(concurrently(IN_FLIGHT, pecSign)),
      baseline,
    ),
  );

  // ---- other algorithms, node:crypto -----------------------------------------------------------
  const ed = generateKeyPairSync('ed25519');
  const edSign = () => sign(null, message, ed.privateKey);
  check(verify(null, message, createPublicKey(ed.privateKey), edSign()), 'node Ed25519');
  results.push(result('node crypto.sign Ed25519', UNIT, await measureRate(edSign), baseline, 'synchronous'));

  const p384 = ecKey('P-384');
  const nodeSignP384 = () => sign('sha384', message, { key: p384.privateKey, dsaEncoding: 'der' });
  check(verify('sha384', message, { key: p384.publicKey, dsaEncoding: 'der' }, nodeSignP384()), 'node P-384');
  results.push(
    result('node crypto.sign ECDSA P-384', UNIT, await measureRate(nodeSignP384), baseline, 'SHA-384, dsaEncoding der, synchronous'),
  );

  return results;
}

// `npx tsx bench/signing.ts`: run this module alone and print its table.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(`signing bench, ${availableParallelism()} cores, Node ${process.version}`);
  for (const r of await run()) {
    console.log(`${r.name.padEnd(58)} ${formatValue(r.value).padStart(10)} ${r.unit}  ${formatRatio(r.ratio)}`);
  }
}
