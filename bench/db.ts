import { generateKeyPairSync, randomBytes } from 'node:crypto';
import knexFactory from 'knex';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createDb, migrateLatest, pgliteDirUnder, type Db } from '../src/store/db.js';
import { loadConfig } from '../src/config/config.js';
import { buildService, type Service } from '../src/main.js';
import { bootstrap } from '../src/bootstrap.js';
import { keyTypeLabel } from '../src/ca/x509/spki.js';

/**
 * certificates.key_type (migration 0029) of rows seeded set-based with placeholder DER: what
 * issuance records for a P-256 key, so a seeded row is what an issued one is, not one from before
 * the column (the posture report reads those rows' DER).
 */
export const SEEDED_KEY_TYPE = keyTypeLabel(
  generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }),
);

export interface BenchDatabase {
  db: Db;
  label: string;
  /** What another process needs to open the same store (DATABASE_URL, or a DATA_DIR holding the PGlite files). */
  env: Record<string, string>;
  drop(): Promise<void>;
}

/**
 * A fresh, migrated database for one benchmark: PostgreSQL from DATABASE_URL, else embedded
 * PGlite (in memory, or with `shareable` in files under a DATA_DIR, for a server process of its
 * own once this one has closed it).
 */
export async function freshDatabase(poolMax = 10, opts: { shareable?: boolean } = {}): Promise<BenchDatabase> {
  const url = process.env.DATABASE_URL;
  if (!url) {
    const dataDir = mkdtempSync(join(tmpdir(), 'mqttca-bench-data-'));
    const db = createDb({ pgliteDir: opts.shareable ? pgliteDirUnder(dataDir) : undefined });
    await migrateLatest(db);
    return { db, label: 'PGlite (embedded; set DATABASE_URL for PostgreSQL)', env: { DATA_DIR: dataDir }, drop: () => db.destroy() };
  }
  const name = `mqttca_bench_${randomBytes(4).toString('hex')}`;
  const admin = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 1 } });
  await admin.raw(`create database ${name}`);
  const u = new URL(url);
  u.pathname = `/${name}`;
  const db = createDb({ databaseUrl: u.toString(), poolMax });
  await migrateLatest(db);
  return {
    db,
    label: 'PostgreSQL',
    env: { DATABASE_URL: u.toString() },
    async drop() {
      await db.destroy().catch(() => undefined);
      await admin.raw(`drop database if exists ${name} with (force)`);
      await admin.destroy();
    },
  };
}

/**
 * A bootstrapped service (silent, its own KEK and data dir) on a benchmark's database, its default
 * issuing CA, and the environment under which `mqtt-ca serve` in another process opens it.
 */
export async function benchService(
  db: Db,
  opts: { dataDir?: string; env?: Record<string, string> } = {},
): Promise<{ svc: Service; issuingId: string; env: Record<string, string> }> {
  const env = {
    MQTT_CA_KEK: randomBytes(32).toString('base64'),
    DATA_DIR: opts.dataDir ?? mkdtempSync(join(tmpdir(), 'mqttca-bench-')),
    LOG_LEVEL: 'silent',
    ...opts.env,
  };
  const svc = await buildService(loadConfig(env), { db, logger: pino({ level: 'silent' }) });
  return { svc, issuingId: (await bootstrap(svc)).issuingId!, env };
}

/** The rate limits off: what a benchmark measures is the service's capacity, not its per-key allowance. */
export const NO_RATE_LIMITS = { API_RATE_PER_SOURCE: '0', API_RATE_PER_KEY: '0', ENROLL_RATE_PER_SOURCE: '0' };

/**
 * The steady state of a fleet this size, not the aftermath of a bulk insert: without it,
 * autovacuum of the new rows (and the devices' statistics left stale) ran during what is
 * measured next, and the checkpointer flushed the bulk write's pages under it.
 */
export async function steadyState(db: Db): Promise<void> {
  await db.raw('vacuum (analyze) certificates, devices');
  await db.raw('checkpoint');
}
