import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import { PGlite } from '@electric-sql/pglite';
import type pg from 'pg';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { migrationSource } from '../../migrations/index.js';
import { makePrivate } from './data-dir.js';
import { acquireStoreLock, lockFileFor } from './store-lock.js';

export type Db = Knex;
export type Executor = Knex | Knex.Transaction;

export interface DbOptions {
  /** postgres:// URL; when absent, embedded PostgreSQL (PGlite). */
  databaseUrl?: string | undefined;
  /** Where PGlite keeps its files; omit for an in-memory database. */
  pgliteDir?: string | undefined;
  poolMax?: number;
}

export function createDb(opts: DbOptions): Db {
  if (opts.databaseUrl) {
    return knexFactory({
      client: 'pg',
      connection: opts.databaseUrl,
      pool: { min: 0, max: opts.poolMax ?? 10 },
    });
  }
  if (!opts.pgliteDir)
    return knexFactory({ client: ClientPgLite as unknown as typeof knexFactory.Client, dialect: 'postgres', connection: {} });
  return openEmbedded(opts.pgliteDir);
}

/**
 * PGlite in files: this process's alone while it is open (the store lock, StoreLockedError
 * otherwise), and private to the service user — PGlite's initdb makes its files 0666 whatever
 * the umask, so they are tightened once it is ready and again when the store closes.
 */
function openEmbedded(dir: string): Db {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const lock = acquireStoreLock(lockFileFor(dir));
  let pglite: PGlite;
  try {
    pglite = new PGlite(dir);
  } catch (e) {
    lock.release();
    throw e;
  }
  pglite.waitReady.then(() => makePrivate(dir)).catch(() => undefined); // a failed start shows on the first query
  const db = knexFactory({
    client: ClientPgLite as unknown as typeof knexFactory.Client,
    dialect: 'postgres',
    connection: { pglite } as unknown as Knex.StaticConnectionConfig,
  });
  // knex's own destroy() is read-only; it ends in the client's.
  const client = db.client as { destroy(callback?: unknown): Promise<void> };
  const destroy = client.destroy.bind(client);
  client.destroy = async (callback?: unknown) => {
    try {
      await destroy(callback);
      if (!pglite.closed) await pglite.close().catch(() => undefined);
      makePrivate(dir);
    } finally {
      lock.release();
    }
  };
  return db;
}

/** Whether an embedded store has been created in this directory (PGlite's initdb has run there). */
export function embeddedStoreExists(pgliteDir: string): boolean {
  return existsSync(join(pgliteDir, 'PG_VERSION'));
}

/** Whether the store holds a CA (any key material): a store without one is new, whatever its schema. */
export async function holdsCa(db: Db): Promise<boolean> {
  const table = await db.raw<{ rows: { name: string | null }[] }>(`select to_regclass('key_material')::text as name`);
  if (!table.rows[0]?.name) return false;
  return (await db('key_material').first('id')) !== undefined;
}

/**
 * A hot-path statement as a named prepared statement: PostgreSQL parses and plans it once per
 * connection instead of on every call (planning was most of the token spend's server time).
 * The text must be fixed — arrays through unnest, never a VALUES list that grows with the batch.
 * PGlite ignores the name.
 */
export function prepared(ex: Executor, name: string, sql: string, bindings: readonly unknown[]): Knex.Raw {
  return ex.raw(sql, bindings as Knex.RawBinding[]).options({ name });
}

export function pgliteDirUnder(dataDir: string): string {
  return join(dataDir, 'pglite');
}

/**
 * Whether an error says the database could not be reached (down, restarting, its connections
 * cut, or the pool out of connections): the request may succeed if repeated shortly.
 */
export function isDatabaseUnavailable(e: unknown): boolean {
  const { code, name, message } = (e ?? {}) as { code?: unknown; name?: unknown; message?: unknown };
  if (
    typeof code === 'string' &&
    (code === 'ECONNREFUSED' ||
      code === 'ECONNRESET' ||
      code === 'ETIMEDOUT' ||
      code === 'EPIPE' ||
      code.startsWith('57P') ||
      code.startsWith('08'))
  )
    return true;
  if (name === 'KnexTimeoutError') return true;
  // knex puts the statement before pg's message: "<sql> - Connection terminated unexpectedly".
  return (
    typeof message === 'string' &&
    /Connection terminated|Client has encountered a connection error|Connection ended unexpectedly|terminating connection due to/.test(
      message,
    )
  );
}

export function isEmbedded(db: Db): boolean {
  return db.client.config.client !== 'pg';
}

/** How a PostgreSQL-backed Db connects (for a connection of its own, such as LISTEN; knex has parsed the URL); undefined when embedded. */
export function connectionSettings(db: Db): pg.ClientConfig | undefined {
  if (isEmbedded(db)) return undefined;
  const c = db.client.config.connection as string | pg.ClientConfig;
  return typeof c === 'string' ? { connectionString: c } : { ...c };
}

export async function migrateLatest(db: Db): Promise<string[]> {
  const [, applied] = (await db.migrate.latest({ migrationSource })) as [number, string[]];
  return applied;
}

export async function pingDb(db: Db): Promise<boolean> {
  try {
    await db.raw('select 1');
    return true;
  } catch {
    return false;
  }
}
