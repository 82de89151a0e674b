/**
 * CRL generation at fleet scale: a CA's revoked certificates read from PostgreSQL, encoded,
 * signed and stored by the CRL publisher, for 10k, 100k and 1M entries; wall time, size and
 * the process's peak memory growth. Baseline from the same run: @peculiar/x509's
 * X509CrlGenerator on a small CRL (it is quadratic in the number of entries).
 */
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase, SEEDED_KEY_TYPE } from './db.js';

export const description =
  "CRL generation: the publisher reads a CA's revoked, unexpired certificates from the database, encodes the CRL with the " +
  'two-pass DER encoder, signs it with the CA key and stores it (one transaction) — for 10,000, 100,000 and 1,000,000 entries ' +
  "(one in three with a reason code). Peak memory is the growth of the process's resident set during the publish, sampled every " +
  '20 ms. Baseline from the same run: @peculiar/x509 `X509CrlGenerator.create` on 2,000 entries. Target: 1M entries in under ' +
  '15 s and under 1 GiB. Then the same million spread over 64 CRL shards (CRL_SHARDS, as issuance assigns them): each ' +
  "shard's full CRL built, its size and build time against the CA's one CRL of the same run.";

const LIBRARY_ENTRIES = 2_000;

async function libraryRate(): Promise<number> {
  const x509 = await import('@peculiar/x509');
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = (await webcrypto.subtle.generateKey(alg, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const entries = Array.from({ length: LIBRARY_ENTRIES }, () => ({
    serialNumber: randomBytes(16).toString('hex'),
    revocationDate: new Date(),
    reason: x509.X509CrlReason.keyCompromise,
  }));
  const t0 = performance.now();
  await x509.X509CrlGenerator.create({
    issuer: 'CN=Bench CA',
    thisUpdate: new Date(),
    nextUpdate: new Date(Date.now() + 86_400_000),
    entries,
    signingAlgorithm: alg,
    signingKey: keys.privateKey as never,
  });
  return LIBRARY_ENTRIES / ((performance.now() - t0) / 1000);
}

/** Runs `f`, sampling the resident set size; returns its wall time and the peak growth. */
async function withPeakRss<T>(f: () => Promise<T>): Promise<{ value: T; seconds: number; peakBytes: number }> {
  const base = process.memoryUsage().rss;
  let peak = base;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const t0 = performance.now();
  try {
    const value = await f();
    peak = Math.max(peak, process.memoryUsage().rss);
    return { value, seconds: (performance.now() - t0) / 1000, peakBytes: peak - base };
  } finally {
    clearInterval(timer);
  }
}

/**
 * Partitioned CRLs (#29 item 3): the same million revoked certificates spread over SHARDS shards
 * as issuance assigns them (from the serial's last four octets), each shard's full CRL built and
 * signed; its size and build time against the one CRL of the whole CA from the same run.
 */
const SHARDS = 64;
async function shards(
  db: Awaited<ReturnType<typeof freshDatabase>>['db'],
  svc: Awaited<ReturnType<typeof benchService>>['svc'],
  caId: string,
  label: string,
  whole: { seconds: number; bytes: number },
): Promise<BenchResult[]> {
  await db.raw(
    `update certificates set crl_shard = 1 + (('x' || substr(encode(serial, 'hex'), 25, 8))::bit(32)::bigint % ?) where ca_id = ?`,
    [SHARDS, caId],
  );
  const sizes: number[] = [];
  let entries = 0;
  const t0 = performance.now();
  for (let shard = 1; shard <= SHARDS; shard++) {
    const { full } = await svc.crls.publish(caId, shard);
    sizes.push(full.der.length);
    entries += full.entries;
  }
  const perShard = (performance.now() - t0) / 1000 / SHARDS;
  if (entries !== 1_000_000) throw new Error(`the shards list ${entries} entries, expected 1,000,000`);
  const mean = sizes.reduce((a, b) => a + b, 0) / SHARDS;
  const max = Math.max(...sizes);
  const mib = (b: number) => (b / 1048576).toFixed(2);
  return [
    result(
      `CRL shard of a CA with 1,000,000 revoked, ${SHARDS} shards (mean size)`,
      'MiB',
      mean / 1048576,
      { name: 'the CA’s one CRL of 1,000,000 entries', value: whole.bytes / 1048576 },
      `${label}; largest shard ${mib(max)} MiB, smallest ${mib(Math.min(...sizes))} MiB; ${entries.toLocaleString('en-US')} entries in all`,
    ),
    result(
      `CRL shard build (read + encode + sign + store), ${SHARDS} shards of 1,000,000 revoked`,
      's',
      perShard,
      { name: 'the CA’s one CRL of 1,000,000 entries', value: whole.seconds },
      `${label}; mean of ${SHARDS} shard builds, one after another`,
    ),
  ];
}

export async function run(): Promise<BenchResult[]> {
  const { db, label, drop } = await freshDatabase();
  try {
    const { svc, issuingId: caId } = await benchService(db);
    const library = await libraryRate();
    const libBase = { name: `@peculiar/x509 X509CrlGenerator.create, ${LIBRARY_ENTRIES.toLocaleString('en-US')} entries`, value: library };
    const out: BenchResult[] = [result(libBase.name, 'entries/s', library, libBase)];
    let seeded = 0;
    let whole: { seconds: number; bytes: number } | undefined;
    for (const size of [10_000, 100_000, 1_000_000]) {
      // Revoked certificates straight into the table, set-based: the publisher's read is what is measured.
      await db.raw(
        `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, tbs_der, der, spki_sha256, key_type, not_before, not_after,
                                   created_at, issued_at, revoked_at, revocation_reason)
         select decode(md5('crl-bench-' || i), 'hex'), ?, 'device', 'revoked', 'dev-' || i, 'dev-' || i, '\\x00', '\\x00', '\\x00', ?,
                now() - interval '1 day', now() + interval '365 days', now(), now(), now() - (i || ' seconds')::interval,
                (array['keyCompromise', 'superseded', 'unspecified'])[1 + i % 3]
           from generate_series(?::int, ?::int) as i`,
        [caId, SEEDED_KEY_TYPE, seeded + 1, size],
      );
      seeded = size;
      const {
        value: { full: crl },
        seconds,
        peakBytes,
      } = await withPeakRss(() => svc.crls.publish(caId));
      if (crl.entries !== size) throw new Error(`the CRL has ${crl.entries} entries, expected ${size}`);
      const rate = size / seconds;
      out.push(
        result(
          `CRL of ${size.toLocaleString('en-US')} entries, read + encoded + signed + stored`,
          'entries/s',
          rate,
          libBase,
          `${label}; ${seconds.toFixed(2)} s; ${(crl.der.length / 1048576).toFixed(1)} MiB DER; peak RSS growth ${(peakBytes / 1048576).toFixed(0)} MiB`,
        ),
      );
      if (size === 1_000_000) {
        whole = { seconds, bytes: crl.der.length };
        out.push(result('1M-entry CRL, wall time', 's', seconds, { name: 'target', value: 15 }, 'ratio < 1 meets the target'));
        out.push(
          result(
            '1M-entry CRL, peak RSS growth',
            'MiB',
            peakBytes / 1048576,
            { name: 'target', value: 1024 },
            'ratio < 1 meets the target',
          ),
        );
      }
    }
    out.push(...(await shards(db, svc, caId, label, whole!)));
    await svc.close();
    return out;
  } finally {
    await drop();
  }
}
