import type { Knex } from 'knex';
import { migrationSource } from '../../migrations/index.js';
import type { Db, Executor } from './db.js';

/** One column of a table as a snapshot carries it: its name and its exact SQL type (format_type). */
export interface ColumnMeta {
  name: string;
  type: string;
}

export interface TableMeta {
  name: string;
  columns: ColumnMeta[];
  primaryKey: string[];
  /** Tables this one references (foreign keys), other than itself. */
  references: string[];
  /** Columns of foreign keys onto the table itself (cas.parent_id): restored after the table's rows. */
  selfReferences: string[];
  /** Columns filled from a sequence (serial, identity): the sequence is moved past the restored values. */
  sequenceColumns: string[];
}

/**
 * Not part of a snapshot: knex's own bookkeeping of the schema. The migration names are in the
 * backup's header instead, and the target is migrated to them before the rows go in.
 */
export const NOT_BACKED_UP = ['knex_migrations', 'knex_migrations_lock'] as const;

/**
 * Rows a freshly migrated database already holds (seeded by a migration). A target with only
 * these is empty; restoring replaces them with the backup's rows.
 */
export const SEEDED_BY_MIGRATIONS: Record<string, string> = {
  revocation_epoch: 'id = 1 and seq = 0',
};

export const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** A value as a snapshot carries it: text in PostgreSQL's own output format, bytea as base64, null as null. */
export type SnapshotValue = string | null;

export interface BackupRow {
  id: string;
  createdAt: Date;
  createdBy: string;
  fileName: string;
  sizeBytes: number;
  sha256: Buffer;
  formatVersion: number;
  kekId: string;
  schemaVersion: string;
  rowCounts: Record<string, number>;
  origin: 'created' | 'restored';
  restoredAt: Date | null;
  deletedAt: Date | null;
}

const BACKUP_COLUMNS = [
  'id',
  'created_at',
  'created_by',
  'file_name',
  'size_bytes',
  'sha256',
  'format_version',
  'kek_id',
  'schema_version',
  'row_counts',
  'origin',
  'restored_at',
  'deleted_at',
];

const dateOrNull = (v: unknown): Date | null => (v == null ? null : new Date(v as string | Date));

function toBackupRow(r: Record<string, unknown>): BackupRow {
  return {
    id: r.id as string,
    createdAt: new Date(r.created_at as string | Date),
    createdBy: r.created_by as string,
    fileName: r.file_name as string,
    sizeBytes: Number(r.size_bytes),
    sha256: Buffer.from(r.sha256 as Uint8Array),
    formatVersion: Number(r.format_version),
    kekId: r.kek_id as string,
    schemaVersion: r.schema_version as string,
    rowCounts: (typeof r.row_counts === 'string' ? JSON.parse(r.row_counts) : r.row_counts) as Record<string, number>,
    origin: r.origin as BackupRow['origin'],
    restoredAt: dateOrNull(r.restored_at),
    deletedAt: dateOrNull(r.deleted_at),
  };
}

const isBytea = (c: ColumnMeta) => c.type === 'bytea';

/** SQL of backups and restores: schema introspection, the consistent snapshot, bulk inserts, and the backups table. */
export class BackupStore {
  /** The migrations applied to this database, oldest first (none when it was never migrated). */
  async appliedMigrations(ex: Executor): Promise<string[]> {
    const exists = await ex.raw(`select to_regclass('knex_migrations') is not null as present`);
    if (!exists.rows[0].present) return [];
    const r = await ex.raw('select name from knex_migrations order by id');
    return (r.rows as Array<{ name: string }>).map((x) => x.name);
  }

  /** Every migration this code knows, in order. */
  async knownMigrations(): Promise<string[]> {
    return migrationSource.getMigrations([]);
  }

  /** Runs every pending migration (one knex run: much faster than one per name). */
  async migrateAll(db: Db): Promise<void> {
    await db.migrate.latest({ migrationSource });
  }

  /** Runs the named migrations up (in order) or down (in the given order) on db. */
  async migrate(db: Db, names: string[], direction: 'up' | 'down'): Promise<void> {
    for (const name of names) {
      if (direction === 'up') await db.migrate.up({ migrationSource, name });
      else await db.migrate.down({ migrationSource, name });
    }
  }

  /** The tables of the current schema (except knex's own), in dependency order: a table comes after every table it references. */
  async tables(ex: Executor): Promise<TableMeta[]> {
    const cols = await ex.raw(
      `select c.relname as table_name, a.attname as column_name, format_type(a.atttypid, a.atttypmod) as type,
              pg_get_serial_sequence(quote_ident(c.relname), a.attname) is not null as from_sequence
         from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        where n.nspname = current_schema() and c.relkind = 'r'
        order by c.relname, a.attnum`,
    );
    const keys = await ex.raw(
      `select c.relname as table_name, con.contype as kind, ref.relname as referenced,
              array(select a.attname from unnest(con.conkey) with ordinality k(attnum, ord)
                      join pg_attribute a on a.attrelid = con.conrelid and a.attnum = k.attnum order by k.ord)::text as columns
         from pg_constraint con
         join pg_class c on c.oid = con.conrelid
         join pg_namespace n on n.oid = c.relnamespace
         left join pg_class ref on ref.oid = con.confrelid
        where n.nspname = current_schema() and con.contype in ('p', 'f')`,
    );
    const byName = new Map<string, TableMeta>();
    for (const r of cols.rows as Array<{ table_name: string; column_name: string; type: string; from_sequence: boolean }>) {
      if ((NOT_BACKED_UP as readonly string[]).includes(r.table_name)) continue;
      let t = byName.get(r.table_name);
      if (!t)
        byName.set(
          r.table_name,
          (t = { name: r.table_name, columns: [], primaryKey: [], references: [], selfReferences: [], sequenceColumns: [] }),
        );
      t.columns.push({ name: r.column_name, type: r.type });
      if (r.from_sequence) t.sequenceColumns.push(r.column_name);
    }
    for (const r of keys.rows as Array<{ table_name: string; kind: string; referenced: string | null; columns: string }>) {
      const t = byName.get(r.table_name);
      if (!t) continue;
      const columns = parseTextArray(r.columns);
      if (r.kind === 'p') t.primaryKey = columns;
      else if (r.referenced === r.table_name) t.selfReferences.push(...columns);
      else if (r.referenced && !t.references.includes(r.referenced)) t.references.push(r.referenced);
    }
    for (const t of byName.values()) {
      if (t.primaryKey.length === 0) throw new Error(`table ${t.name} has no primary key: a snapshot pages every table by its primary key`);
    }
    return dependencyOrder([...byName.values()]);
  }

  /**
   * Opens the snapshot: one read-only REPEATABLE READ transaction (every read sees the same
   * committed state), with the session settings that make text output exact and portable.
   */
  async openSnapshot(db: Db): Promise<Knex.Transaction> {
    const trx = await db.transaction({ isolationLevel: 'repeatable read', readOnly: true });
    try {
      await trx.raw(`select set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, YMD', true),
                            set_config('IntervalStyle', 'iso_8601', true), set_config('extra_float_digits', '3', true)`);
      return trx;
    } catch (e) {
      await trx.rollback();
      throw e;
    }
  }

  /**
   * One page of a table in primary-key order, after the row whose key values are `after` (null:
   * from the start). Every column named; bytea comes as bytes (base64 here), the rest as text.
   */
  async page(ex: Executor, t: TableMeta, after: SnapshotValue[] | null, limit: number): Promise<SnapshotValue[][]> {
    // Output columns are aliased c0, c1, ...; ORDER BY and WHERE name the table's own columns
    // (src.x): a bare name in ORDER BY would mean the text output column and sort '10' before '9'.
    const select = t.columns
      .map((c, i) => `${isBytea(c) ? `src.${quoteIdent(c.name)}` : `src.${quoteIdent(c.name)}::text`} as c${i}`)
      .join(', ');
    const pk = t.primaryKey.map((k) => `src.${quoteIdent(k)}`).join(', ');
    const bindings: Knex.RawBinding[] = [];
    let where = '';
    if (after) {
      const types = t.primaryKey.map((k) => t.columns.find((c) => c.name === k)!);
      where = `where (${pk}) > (${types.map((c) => (isBytea(c) ? `decode(?, 'base64')` : `?::${c.type}`)).join(', ')})`;
      bindings.push(...(after as string[]));
    }
    bindings.push(limit);
    const r = await ex.raw(`select ${select} from ${quoteIdent(t.name)} as src ${where} order by ${pk} limit ?`, bindings);
    const names = t.columns.map((_c, i) => `c${i}`);
    const bytea = t.columns.map(isBytea);
    return (r.rows as Array<Record<string, unknown>>).map((row) =>
      names.map((n, i) => {
        const v = row[n];
        if (v === null || v === undefined) return null;
        return bytea[i] ? Buffer.from(v as Uint8Array).toString('base64') : (v as string);
      }),
    );
  }

  /** The tables holding rows (beyond those a migration seeded): a restore target must have none. */
  async nonEmptyTables(ex: Executor, tables: TableMeta[]): Promise<string[]> {
    const out: string[] = [];
    for (const t of tables) {
      const seeded = SEEDED_BY_MIGRATIONS[t.name];
      const r = await ex.raw(`select exists (select 1 from ${quoteIdent(t.name)}${seeded ? ` where not (${seeded})` : ''}) as any`);
      if (r.rows[0].any) out.push(t.name);
    }
    return out;
  }

  /** Removes the rows a migration seeded, to be replaced by the backup's. */
  async clearSeeded(tx: Knex.Transaction, tables: TableMeta[]): Promise<void> {
    for (const t of tables) if (SEEDED_BY_MIGRATIONS[t.name]) await tx.raw(`delete from ${quoteIdent(t.name)}`);
  }

  /**
   * Inserts rows (values in `columns` order) in one statement: one text array per column,
   * each value cast back to its column's type. Columns in `nulled` go in as null (set later by setDeferred).
   */
  async insert(tx: Knex.Transaction, t: TableMeta, columns: ColumnMeta[], rows: SnapshotValue[][], nulled: string[] = []): Promise<void> {
    if (rows.length === 0) return;
    const names = columns.map((c) => quoteIdent(c.name)).join(', ');
    const values = columns
      .map((c, i) => (nulled.includes(c.name) ? `null::${c.type}` : isBytea(c) ? `decode(u.c${i}, 'base64')` : `u.c${i}::${c.type}`))
      .join(', ');
    const arrays = columns.map(() => '?::text[]').join(', ');
    const alias = columns.map((_c, i) => `c${i}`).join(', ');
    const bindings = columns.map((_c, i) => rows.map((r) => r[i] ?? null));
    await tx.raw(
      `insert into ${quoteIdent(t.name)} (${names}) select ${values} from unnest(${arrays}) as u(${alias})`,
      bindings as unknown as Knex.RawBinding[],
    );
  }

  /** Sets self-referencing columns after all of a table's rows are in (a parent may sort after its child). */
  async setDeferred(tx: Knex.Transaction, t: TableMeta, columns: ColumnMeta[], rows: SnapshotValue[][]): Promise<void> {
    const set = columns.filter((c) => t.selfReferences.includes(c.name));
    if (set.length === 0 || rows.length === 0) return;
    const keyCols = t.primaryKey.map((k) => columns.find((c) => c.name === k)!);
    const used = [...keyCols, ...set];
    const idx = used.map((c) => columns.indexOf(c));
    const cast = (c: ColumnMeta, i: number) => (isBytea(c) ? `decode(u.c${i}, 'base64')` : `u.c${i}::${c.type}`);
    const assignments = set.map((c, j) => `${quoteIdent(c.name)} = ${cast(c, keyCols.length + j)}`).join(', ');
    const match = keyCols.map((c, i) => `${quoteIdent(t.name)}.${quoteIdent(c.name)} = ${cast(c, i)}`).join(' and ');
    const bindings = idx.map((i) => rows.map((r) => r[i] ?? null));
    await tx.raw(
      `update ${quoteIdent(t.name)} set ${assignments} from unnest(${used.map(() => '?::text[]').join(', ')}) as u(${used.map((_c, i) => `c${i}`).join(', ')}) where ${match}`,
      bindings as unknown as Knex.RawBinding[],
    );
  }

  /** Moves every serial/identity sequence past the largest restored value. */
  async resetSequences(tx: Knex.Transaction, tables: TableMeta[]): Promise<void> {
    for (const t of tables) {
      for (const c of t.sequenceColumns) {
        await tx.raw(
          `select setval(pg_get_serial_sequence(?, ?), coalesce((select max(${quoteIdent(c)}) from ${quoteIdent(t.name)}), 0) + 1, false)`,
          [quoteIdent(t.name), c],
        );
      }
    }
  }

  async hasBackupsTable(ex: Executor): Promise<boolean> {
    const r = await ex.raw(`select to_regclass('backups') is not null as present`);
    return Boolean(r.rows[0].present);
  }

  async insertBackup(ex: Executor, b: BackupRow): Promise<void> {
    await ex('backups').insert({
      id: b.id,
      created_at: b.createdAt,
      created_by: b.createdBy,
      file_name: b.fileName,
      size_bytes: b.sizeBytes,
      sha256: b.sha256,
      format_version: b.formatVersion,
      kek_id: b.kekId,
      schema_version: b.schemaVersion,
      row_counts: JSON.stringify(b.rowCounts),
      origin: b.origin,
      restored_at: b.restoredAt,
      deleted_at: b.deletedAt,
    });
  }

  async get(ex: Executor, id: string): Promise<BackupRow | undefined> {
    const r = await ex('backups').select(BACKUP_COLUMNS).where({ id }).first();
    return r ? toBackupRow(r as Record<string, unknown>) : undefined;
  }

  /** Newest first, after the cursor (created_at, id). */
  async list(ex: Executor, q: { before?: { createdAt: Date; id: string } | undefined; limit: number }): Promise<BackupRow[]> {
    let query = ex('backups')
      .select(BACKUP_COLUMNS)
      .orderBy([
        { column: 'created_at', order: 'desc' },
        { column: 'id', order: 'desc' },
      ])
      .limit(q.limit);
    if (q.before) query = query.whereRaw('(created_at, id) < (?, ?)', [q.before.createdAt, q.before.id]);
    return (await query).map((r) => toBackupRow(r as Record<string, unknown>));
  }

  /** Backups made here whose files are still kept, newest first (for pruning). */
  async kept(ex: Executor): Promise<BackupRow[]> {
    const rows = await ex('backups')
      .select(BACKUP_COLUMNS)
      .where({ origin: 'created' })
      .whereNull('deleted_at')
      .orderBy([
        { column: 'created_at', order: 'desc' },
        { column: 'id', order: 'desc' },
      ]);
    return rows.map((r) => toBackupRow(r as Record<string, unknown>));
  }

  async markDeleted(ex: Executor, ids: string[], at: Date): Promise<void> {
    if (ids.length) await ex('backups').whereIn('id', ids).update({ deleted_at: at });
  }

  /** The newest backup made here (for the age of the last backup). */
  async latest(ex: Executor): Promise<BackupRow | undefined> {
    const r = await ex('backups')
      .select(BACKUP_COLUMNS)
      .orderBy([
        { column: 'created_at', order: 'desc' },
        { column: 'id', order: 'desc' },
      ])
      .first();
    return r ? toBackupRow(r as Record<string, unknown>) : undefined;
  }
}

/** PostgreSQL's text form of a name[]/text[] of plain identifiers: {a,b}. */
function parseTextArray(s: string): string[] {
  const inner = s.replace(/^\{|\}$/g, '');
  return inner === '' ? [] : inner.split(',').map((x) => x.replace(/^"|"$/g, ''));
}

/** Topological order over foreign keys (self-references aside); a cycle is refused. */
export function dependencyOrder(tables: TableMeta[]): TableMeta[] {
  const byName = new Map(tables.map((t) => [t.name, t]));
  const out: TableMeta[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (t: TableMeta, path: string[]) => {
    const s = state.get(t.name);
    if (s === 'done') return;
    if (s === 'visiting') throw new Error(`foreign keys form a cycle: ${[...path, t.name].join(' -> ')}`);
    state.set(t.name, 'visiting');
    for (const r of [...t.references].sort()) {
      const dep = byName.get(r);
      if (dep) visit(dep, [...path, t.name]);
    }
    state.set(t.name, 'done');
    out.push(t);
  };
  for (const t of [...tables].sort((a, b) => a.name.localeCompare(b.name))) visit(t, []);
  return out;
}
