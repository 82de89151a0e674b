import { randomBytes } from 'node:crypto';
import knexFactory from 'knex';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { createDb, migrateLatest, type Db } from '../src/store/db.js';
import { loadConfig } from '../src/config/config.js';
import { buildService, type Service } from '../src/main.js';
import { bootstrap } from '../src/bootstrap.js';

/** A fresh, migrated database for one benchmark: PostgreSQL from DATABASE_URL, else embedded PGlite. */
export async function freshDatabase(poolMax = 10): Promise<{ db: Db; label: string; drop(): Promise<void> }> {
  const url = process.env.DATABASE_URL;
  if (!url) {
    const db = createDb({});
    await migrateLatest(db);
    return { db, label: 'PGlite (embedded; set DATABASE_URL for PostgreSQL)', drop: () => db.destroy() };
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
    async drop() {
      await db.destroy();
      await admin.raw(`drop database if exists ${name} with (force)`);
      await admin.destroy();
    },
  };
}

/** A bootstrapped service (silent, its own KEK and data dir) on a benchmark's database, and its default issuing CA. */
export async function benchService(db: Db): Promise<{ svc: Service; issuingId: string }> {
  const config = loadConfig({ MQTT_CA_KEK: randomBytes(32).toString('base64'), DATA_DIR: mkdtempSync(join(tmpdir(), 'mqttca-bench-')), LOG_LEVEL: 'silent' });
  const svc = await buildService(config, { db, logger: pino({ level: 'silent' }) });
  return { svc, issuingId: (await bootstrap(svc)).issuingId! };
}
