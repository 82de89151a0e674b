/**
 * Backups at fleet scale: a backup (consistent snapshot, gzip, AES-256-GCM chunks) of a store
 * holding 100,000 issued certificates with their devices, and its restore into a fresh database,
 * against pg_dump -Fc / pg_restore of the same database in the same run (on PostgreSQL).
 */
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { AuditLog } from '../src/audit/audit-log.js';
import { deriveKey, parseKek } from '../src/ca/kek.js';
import { restoreBackup } from '../src/respond/backups.js';
import { systemClock } from '../src/shared/clock.js';
import { AuditStore } from '../src/store/audit-store.js';
import { BackupStore } from '../src/store/backup-store.js';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase, SEEDED_KEY_TYPE } from './db.js';

export const description =
  'Backup and restore of a store with 100,000 issued certificates (about 1 KB of DER each, the CA certificate bytes with a ' +
  'per-row part) and their 100,000 devices: `Backups.create` (one REPEATABLE READ READ ONLY snapshot read in primary-key ' +
  'pages, gzip, AES-256-GCM chunks, written and fsynced) and `restoreBackup` into a fresh, unmigrated database (the whole ' +
  'file checked first, then every row inserted in one transaction). Baseline from the same run: `pg_dump -Fc` of the same ' +
  'database and `pg_restore` of its output into another fresh database (PostgreSQL only; on PGlite the baseline is the backup itself).';

const N = 100_000;

export async function run(): Promise<BenchResult[]> {
  const source = await freshDatabase();
  const target = await freshDatabase();
  const dir = mkdtempSync(join(tmpdir(), 'mqttca-bench-backup-'));
  try {
    const { svc, issuingId, env } = await benchService(source.db);
    const caDer = (await source.db('cas').select('certificate_der').where({ id: issuingId }).first()).certificate_der as Uint8Array;
    await source.db.raw(
      `insert into devices (id, kind, lot, status, labels, created_at, updated_at, activated_at)
       select 'dev-' || i, 'client', 'lot-' || (i % 50), 'active', '{}', now(), now(), now() from generate_series(1, ?::int) as i`,
      [N],
    );
    await source.db.raw(
      `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, tbs_der, der, spki_sha256, key_type, not_before, not_after,
                                 created_at, issued_at)
       select decode(md5('s' || i), 'hex'), ?, 'device', 'issued', 'dev-' || i, 'dev-' || i,
              ?::bytea || decode(md5('t' || i) || md5('u' || i), 'hex'), ?::bytea || decode(md5('d' || i) || md5('e' || i) || md5('f' || i), 'hex'),
              sha256(('k' || i)::bytea), ?, clock_timestamp() - interval '1 day', clock_timestamp() + interval '365 days', clock_timestamp(), clock_timestamp()
         from generate_series(1, ?::int) as i`,
      [issuingId, Buffer.from(caDer).subarray(0, 400), Buffer.from(caDer), SEEDED_KEY_TYPE, N],
    );
    await source.db.raw('analyze');

    let t0 = performance.now();
    const b = await svc.backups.create({ actor: 'bench' });
    const backupS = (performance.now() - t0) / 1000;
    const file = join(svc.backups.dir, b.fileName);
    const rows = Object.values(b.rowCounts).reduce((n, x) => n + x, 0);
    const heapMb = process.memoryUsage().rss / 2 ** 20;
    await svc.close();

    // Restore into a fresh database with nothing applied: what the CLI does.
    await target.db.raw('drop schema public cascade');
    await target.db.raw('create schema public');
    const kek = parseKek(env.MQTT_CA_KEK!, 'bench');
    const audit = new AuditLog(new AuditStore(target.db), deriveKey(kek, 'audit chain'), systemClock);
    t0 = performance.now();
    await restoreBackup({ db: target.db, store: new BackupStore(), kek, audit, clock: systemClock }, file, { actor: 'bench' });
    const restoreS = (performance.now() - t0) / 1000;
    const restored = Number((await target.db('certificates').count({ n: '*' }))[0]!.n);
    if (restored !== b.rowCounts.certificates || restored < N)
      throw new Error(`restored ${restored} certificates, the backup has ${b.rowCounts.certificates}`);

    const out: BenchResult[] = [];
    const label = `${source.label}; ${rows.toLocaleString('en-US')} rows, file ${(b.sizeBytes / 2 ** 20).toFixed(1)} MiB`;
    const url = source.env.DATABASE_URL;
    if (url) {
      const dump = join(dir, 'pg.dump');
      t0 = performance.now();
      const d = spawnSync('pg_dump', ['-Fc', '-f', dump, url], { encoding: 'utf8' });
      if (d.status !== 0) throw new Error(`pg_dump: ${d.stderr}`);
      const dumpS = (performance.now() - t0) / 1000;
      const again = await freshDatabase();
      try {
        await again.db.raw('drop schema public cascade');
        await again.db.raw('create schema public');
        t0 = performance.now();
        const r = spawnSync('pg_restore', ['--no-owner', '-d', again.env.DATABASE_URL!, '--single-transaction', dump], {
          encoding: 'utf8',
        });
        if (r.status !== 0) throw new Error(`pg_restore: ${r.stderr}`);
        const pgRestoreS = (performance.now() - t0) / 1000;
        const dumpBase = { name: 'pg_dump -Fc of the same database', value: rows / dumpS };
        const restoreBase = { name: 'pg_restore --single-transaction of that dump', value: rows / pgRestoreS };
        out.push(
          result(
            dumpBase.name,
            'rows/s',
            dumpBase.value,
            dumpBase,
            `${dumpS.toFixed(2)} s, ${(statSync(dump).size / 2 ** 20).toFixed(1)} MiB`,
          ),
          result(
            'mqtt-ca backup (snapshot, gzip, AES-256-GCM)',
            'rows/s',
            rows / backupS,
            dumpBase,
            `${label}; ${backupS.toFixed(2)} s; process RSS ${heapMb.toFixed(0)} MiB after`,
          ),
          result(restoreBase.name, 'rows/s', restoreBase.value, restoreBase, `${pgRestoreS.toFixed(2)} s`),
          result(
            'mqtt-ca restore into an empty database (file checked, migrated, one transaction)',
            'rows/s',
            rows / restoreS,
            restoreBase,
            `${restoreS.toFixed(2)} s`,
          ),
        );
      } finally {
        await again.drop();
      }
    } else {
      const base = { name: 'mqtt-ca backup (snapshot, gzip, AES-256-GCM)', value: rows / backupS };
      out.push(
        result(base.name, 'rows/s', base.value, base, `${label}; ${backupS.toFixed(2)} s`),
        result('mqtt-ca restore into an empty database', 'rows/s', rows / restoreS, base, `${restoreS.toFixed(2)} s`),
      );
    }
    return out;
  } finally {
    await source.drop();
    await target.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}
