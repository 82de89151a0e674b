import knexFactory, { type Knex } from 'knex';
import ClientPgLite from 'knex-pglite';
import type pg from 'pg';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { migrationSource } from '../../migrations/index.js';

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
  if (opts.pgliteDir) mkdirSync(opts.pgliteDir, { recursive: true });
  return knexFactory({
    client: ClientPgLite as unknown as typeof knexFactory.Client,
    dialect: 'postgres',
    connection: opts.pgliteDir ? { filename: opts.pgliteDir } : {},
  });
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
  if (typeof code === 'string' && (code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'ETIMEDOUT' || code === 'EPIPE' || code.startsWith('57P') || code.startsWith('08'))) return true;
  if (name === 'KnexTimeoutError') return true;
  // knex puts the statement before pg's message: "<sql> - Connection terminated unexpectedly".
  return typeof message === 'string' && /Connection terminated|Client has encountered a connection error|Connection ended unexpectedly|terminating connection due to/.test(message);
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
