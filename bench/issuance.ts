/**
 * Issuance throughput of the core: certificates signed and recorded (intent before signing, DER
 * and audit entry after) per second, P-256 device leaves under a P-256 issuing CA, on PostgreSQL
 * (DATABASE_URL; embedded PGlite when unset, and the result says so). The baseline is the raw
 * signing rate of the same issuing key, measured in the same run.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { loadConfig } from '../src/config/config.js';
import { buildService } from '../src/main.js';
import { concurrently, measureRate, result, type BenchResult } from './lib.js';
import { freshDatabase } from './db.js';

export const description =
  'Issuance throughput: P-256 device certificates signed **and recorded** (intent row before signing, DER + audit entry after, ' +
  'one transaction per batch) per second, against the raw ECDSA P-256 signing rate of the same issuing key in the same run ' +
  '(target: at least 10% of the raw rate). "batch" is the bulk API a factory lot uses; "concurrent" is single requests ' +
  'in flight at once, gathered into batches by the issuer.';

export async function run(): Promise<BenchResult[]> {
  const { db, label, drop } = await freshDatabase();
  try {
    const config = loadConfig({
      MQTT_CA_KEK: randomBytes(32).toString('base64'),
      DATA_DIR: '/tmp/mqttca-bench',
      PUBLIC_URL: 'https://ca.example',
      LOG_LEVEL: 'silent',
    });
    const svc = await buildService(config, { db, logger: pino({ level: 'silent' }) });
    const ctx = { actor: 'bench' };
    const root = await svc.hierarchy.createRoot({ name: 'bench root', keyAlgorithm: 'EC-P384' }, ctx);
    const issuing = await svc.hierarchy.createIntermediate({ name: 'bench issuing', parentId: root.id, keyAlgorithm: 'EC-P256' }, ctx);
    const signer = (await svc.hierarchy.issuer(issuing.id)).signer;
    const tbsLike = randomBytes(420); // about the size of a device certificate's TBS

    // The baseline is the best raw rate of the same key: one at a time or 64 in flight, whichever is faster.
    const sequential = await measureRate(() => signer.sign(tbsLike));
    const parallel = await measureRate(concurrently(64, () => signer.sign(tbsLike)));
    const raw = {
      name: 'raw ECDSA P-256 signing, same issuing key (Signer.sign, best of sequential and 64 in flight)',
      value: Math.max(sequential, parallel),
    };

    const keys = Array.from({ length: 64 }, () =>
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }),
    );
    let n = 0;
    const request = () => ({
      profile: 'device' as const,
      caId: issuing.id,
      deviceId: `bench-${n++}`,
      subjectPublicKeyInfo: keys[n % keys.length]!,
    });

    // Bulk: lots of 1,000 through issueBatch (batches of 500 inside).
    await svc.issuance.issueBatch(Array.from({ length: 500 }, request), ctx); // warm-up
    const lots = 8;
    let t = performance.now();
    for (let i = 0; i < lots; i++) await svc.issuance.issueBatch(Array.from({ length: 1000 }, request), ctx);
    const batchRate = (lots * 1000) / ((performance.now() - t) / 1000);

    // Concurrent single requests: 256 in flight, each awaiting its own certificate.
    const total = 8000;
    let started = 0;
    const worker = async () => {
      while (started < total) {
        started++;
        await svc.issuance.issue(request(), ctx);
      }
    };
    t = performance.now();
    await Promise.all(Array.from({ length: 256 }, worker));
    const concurrentRate = total / ((performance.now() - t) / 1000);

    const stored = await db('certificates').where({ ca_id: issuing.id, status: 'issued' }).count({ n: 'serial' });
    const note = `${label}; ${Number(stored[0]!.n).toLocaleString('en-US')} certificates recorded in the run`;
    await svc.close();
    return [
      result('raw signing, Signer.sign one at a time', 'signatures/s', sequential, raw),
      result('raw signing, Signer.sign 64 in flight', 'signatures/s', parallel, raw),
      result(`issuance, batch API (lots of 1,000), ${label}`, 'certificates/s', batchRate, raw, note),
      result(`issuance, 256 concurrent single requests, ${label}`, 'certificates/s', concurrentRate, raw, note),
    ];
  } finally {
    await drop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await run())
    console.log(`${r.name}: ${Math.round(r.value)} ${r.unit} (${(r.ratio * 100).toFixed(1)}% of ${r.baselineName})`);
}
