import knexFactory from 'knex';
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { createDb, migrateLatest, type Db } from '../../src/store/db.js';
import { envSkip } from './tools.js';

/**
 * Databases for tests: every store test runs on embedded PGlite and, when DATABASE_URL is set
 * (always in CI), on real PostgreSQL, each test file in a fresh database cloned from a migrated template.
 */
export interface DbTarget {
  name: 'pglite' | 'postgres';
  /** Why this target cannot run here, or undefined when it can. */
  skip: string | undefined;
  create(): Promise<Db>;
}

function migrationsFingerprint(): string {
  const dir = new URL('../../migrations/', import.meta.url);
  const h = createHash('sha256');
  for (const f of readdirSync(dir).sort()) h.update(f).update(readFileSync(new URL(f, dir)));
  return h.digest('hex').slice(0, 12);
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function ensureTemplate(adminUrl: string): Promise<string> {
  const name = `mqttca_tpl_${migrationsFingerprint()}`;
  const admin = knexFactory({ client: 'pg', connection: adminUrl, pool: { min: 0, max: 1 } });
  try {
    // One test process builds the template; the others wait on the lock, then find it built.
    // (pool max 1: the session lock and the queries share one connection)
    await admin.raw('select pg_advisory_lock(774411)');
    try {
      const exists = await admin.raw('select 1 from pg_database where datname = ?', [name]);
      if (exists.rows.length === 0) {
        await admin.raw(`create database ${name}`);
        const db = createDb({ databaseUrl: withDatabase(adminUrl, name), poolMax: 1 });
        try {
          await migrateLatest(db);
        } finally {
          await db.destroy();
        }
      }
      return name;
    } finally {
      await admin.raw('select pg_advisory_unlock(774411)');
    }
  } finally {
    await admin.destroy();
  }
}

const created = new Map<Db, () => Promise<void>>();

export const postgresTarget: DbTarget = {
  name: 'postgres',
  // Only the tests that run once per target use this; a test that needs PostgreSQL alone says so
  // itself with envSkip('DATABASE_URL', ...). In CI a missing DATABASE_URL fails instead.
  skip: envSkip('DATABASE_URL', 'this PostgreSQL run (the PGlite run is separate) is'),
  async create() {
    const adminUrl = process.env.DATABASE_URL;
    if (!adminUrl) throw new Error('DATABASE_URL must be set in CI');
    const template = await ensureTemplate(adminUrl);
    const name = `mqttca_t_${randomBytes(6).toString('hex')}`;
    const admin = knexFactory({ client: 'pg', connection: adminUrl, pool: { min: 0, max: 1 } });
    await admin.raw(`create database ${name} template ${template}`);
    await admin.destroy();
    const db = createDb({ databaseUrl: withDatabase(adminUrl, name), poolMax: 20 });
    created.set(db, async () => {
      await db.destroy();
      const a = knexFactory({ client: 'pg', connection: adminUrl, pool: { min: 0, max: 1 } });
      await a.raw(`drop database if exists ${name} with (force)`);
      await a.destroy();
    });
    return db;
  },
};

export const pgliteTarget: DbTarget = {
  name: 'pglite',
  skip: undefined,
  async create() {
    const db = createDb({});
    await migrateLatest(db);
    created.set(db, () => db.destroy());
    return db;
  },
};

export const dbTargets: DbTarget[] = [pgliteTarget, postgresTarget];

/** The URL another process opens a PostgreSQL test database with (its DATABASE_URL). */
export function databaseUrlOf(db: Db): string {
  const adminUrl = process.env.DATABASE_URL;
  const database = db.client.config.connection as { database?: string } | string;
  if (!adminUrl || typeof database === 'string' || !database.database) throw new Error('not a PostgreSQL test database');
  return withDatabase(adminUrl, database.database);
}

/** Closes (and for PostgreSQL drops) a database made by a target. */
export async function disposeDb(db: Db): Promise<void> {
  const dispose = created.get(db);
  created.delete(db);
  if (dispose) await dispose();
}
