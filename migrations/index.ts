import type { Knex } from 'knex';
import * as foundation from './20261125_0001_foundation.js';

/** Migrations are listed here, not discovered on disk, so they run the same under tsx and from dist. */
const migrations: Record<string, Knex.Migration> = {
  '20261125_0001_foundation': foundation,
};

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations).sort(),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name]!,
};
