/**
 * The posture report (GET /v1/posture) over a fleet of 100,000 active devices, each with a
 * current certificate: the inventory counts, the renewal points, and the crypto inventory counted
 * by the key type issuance records (migration 0029); then the same report with the key types
 * cleared, as rows issued before that migration are, whose DER it reads.
 */
import 'reflect-metadata';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { keyTypeLabel, spkiOfCertificate } from '../src/ca/x509/spki.js';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase } from './db.js';

export const description =
  'The posture report (`Posture.report`, what GET /v1/posture returns) over 100,000 active devices, each with a current ' +
  'P-256 certificate (real DER, its key type recorded as issuance records it), one report at a time: inventory and renewal ' +
  'counts in PostgreSQL, and the crypto inventory counted by key type in one query. Then the same report with every key type ' +
  "cleared (rows issued before migration 0029 have none): the inventory reads each such certificate's DER, a page at a time, " +
  'and walks it to the SubjectPublicKeyInfo. Baseline from the same run: reading the key type of the same 100,000 ' +
  'certificates with node:crypto `X509Certificate` (a full parse), the straightforward way.';

const N = 100_000;

export async function run(): Promise<BenchResult[]> {
  const source = await freshDatabase();
  try {
    const { svc, issuingId } = await benchService(source.db);
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    const sample = await svc.issuance.issue(
      { profile: 'device', deviceId: 'posture-sample', subjectPublicKeyInfo: spki },
      { actor: 'bench' },
    );
    await source.db.raw(
      `insert into devices (id, kind, model, firmware_version, site, lot, status, labels, current_serial, current_not_after, created_at, updated_at, activated_at)
       select 'dev-' || i, 'client', 'M1', '1.0', 'north', 'lot-' || (i % 50), 'active', '{}', decode(md5('s' || i), 'hex'), clock_timestamp() + interval '365 days', now(), now(), now()
         from generate_series(1, ?::int) as i`,
      [N],
    );
    await source.db.raw(
      `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, der, spki_sha256, key_type, not_before, not_after, created_at,
                                 issued_at)
       select decode(md5('s' || i), 'hex'), ?, 'device', 'issued', 'dev-' || i, 'dev-' || i, ?::bytea,
              sha256(('k' || i)::bytea), ?, clock_timestamp() - interval '1 day', clock_timestamp() + interval '365 days', clock_timestamp(),
              clock_timestamp()
         from generate_series(1, ?::int) as i`,
      [issuingId, sample.der, keyTypeLabel(spkiOfCertificate(sample.der)), N],
    );
    await source.db.raw('analyze');

    /** One report after an uncounted one (plans, pages), timed; it must count the whole fleet (fresh: not a count reused). */
    const timedReport = async () => {
      await svc.posture.report({ fresh: true });
      const t0 = performance.now();
      const report = await svc.posture.report({ fresh: true });
      const seconds = (performance.now() - t0) / 1000;
      const counted = report.figures.crypto.certificatesByKey['EC P-256'] ?? 0;
      if (counted < N) throw new Error(`the report counted ${counted} P-256 certificates, the fleet has ${N}`);
      return { seconds, counted };
    };
    const { seconds: reportS, counted } = await timedReport();
    await source.db('certificates').update({ key_type: null });
    await source.db.raw('vacuum (analyze) certificates');
    const { seconds: unrecordedS } = await timedReport();

    const ders = (await source.db('certificates').select('der').limit(N)).map((r: { der: Uint8Array }) => Buffer.from(r.der));
    const t1 = performance.now();
    for (const der of ders) void new X509Certificate(der).publicKey.asymmetricKeyDetails;
    const parseS = (performance.now() - t1) / 1000;
    await svc.close();

    const base = { name: 'node:crypto X509Certificate key type, same certificates (parse only, no database)', value: N / parseS };
    return [
      result(base.name, 'certificates/s', base.value, base, `${parseS.toFixed(2)} s for ${N.toLocaleString('en-US')}`),
      result(
        'posture report, whole fleet (database and crypto inventory by recorded key type)',
        'certificates/s',
        counted / reportS,
        base,
        `${source.label}; ${reportS.toFixed(2)} s for ${counted.toLocaleString('en-US')} devices`,
      ),
      result(
        'posture report, whole fleet, key types not recorded (rows from before migration 0029: every DER read)',
        'certificates/s',
        counted / unrecordedS,
        base,
        `${source.label}; ${unrecordedS.toFixed(2)} s for ${counted.toLocaleString('en-US')} devices`,
      ),
    ];
  } finally {
    await source.drop();
  }
}
