import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync } from 'node:fs';
import { readdir, rename, stat, unlink } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import type { Knex } from 'knex';
import type { AuditLog } from '../audit/audit-log.js';
import type { AuditCheckpoint, AuditCheckpoints, CheckpointSource } from '../audit/audit-anchor.js';
import type { ActorContext } from '../shared/actor.js';
import type { Kek } from '../ca/kek.js';
import type { Clock } from '../shared/clock.js';
import { badRequest, conflict, notFound } from '../shared/errors.js';
import { cursorText, isCanonicalCursor, timeIdCursor, type Page } from '../shared/page.js';
import type { BackupRow, BackupStore, ColumnMeta, SnapshotValue, TableMeta } from '../store/backup-store.js';
import type { Db } from '../store/db.js';
import {
  assemble,
  BackupFileError,
  FORMAT_VERSION,
  readBody,
  readHeader,
  writeBody,
  CHUNK_SIZE,
  type BackupHeader,
  type BodyLine,
} from './backup-file.js';

/** A backup as the API shows it. */
export interface BackupView {
  id: string;
  createdAt: string;
  createdBy: string;
  fileName: string;
  sizeBytes: number;
  /** lowercase hex SHA-256 of the whole file */
  sha256: string;
  formatVersion: number;
  kekId: string;
  schemaVersion: string;
  rowCounts: Record<string, number>;
  /** created: written by this instance; restored: the backup this instance was restored from */
  origin: 'created' | 'restored';
  restoredAt: string | null;
  /** When the file was pruned (BACKUP_KEEP); the record stays. */
  fileDeletedAt: string | null;
}

export const BACKUP_LIST_MAX_LIMIT = 1000;
/** Rows per snapshot read and per restore insert. */
const PAGE_ROWS = 2000;

function view(r: BackupRow): BackupView {
  return {
    id: r.id,
    createdAt: r.createdAt.toISOString(),
    createdBy: r.createdBy,
    fileName: r.fileName,
    sizeBytes: r.sizeBytes,
    sha256: r.sha256.toString('hex'),
    formatVersion: r.formatVersion,
    kekId: r.kekId,
    schemaVersion: r.schemaVersion,
    rowCounts: r.rowCounts,
    origin: r.origin,
    restoredAt: r.restoredAt?.toISOString() ?? null,
    fileDeletedAt: r.deletedAt?.toISOString() ?? null,
  };
}

const encodeCursor = (r: BackupRow) => timeIdCursor(r.createdAt, r.id);
function decodeCursor(c: string): { createdAt: Date; id: string } {
  const s = cursorText(c);
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\|(bk_[0-9a-f]{16})$/.exec(s);
  if (!m || !isCanonicalCursor(c, s)) throw badRequest('invalid cursor');
  return { createdAt: new Date(m[1]!), id: m[2]! };
}

const ID_RE = /^bk_[0-9a-f]{16}$/;
const line = (v: unknown) => Buffer.from(JSON.stringify(v) + '\n', 'utf8');

/** Reads one table of the snapshot page by page, in primary-key order. */
async function* tableLines(
  store: BackupStore,
  trx: Knex.Transaction,
  t: TableMeta,
  counts: Array<{ name: string; rows: number }>,
): AsyncGenerator<Buffer> {
  yield line({ table: t.name, columns: t.columns.map((c) => [c.name, c.type]), primaryKey: t.primaryKey });
  const keyIdx = t.primaryKey.map((k) => t.columns.findIndex((c) => c.name === k));
  let after: SnapshotValue[] | null = null;
  let n = 0;
  for (;;) {
    const rows = await store.page(trx, t, after, PAGE_ROWS);
    if (rows.length === 0) break;
    n += rows.length;
    yield Buffer.from(rows.map((r) => JSON.stringify(r)).join('\n') + '\n', 'utf8');
    const last = rows[rows.length - 1]!;
    after = keyIdx.map((i) => last[i]!);
    if (rows.length < PAGE_ROWS) break;
  }
  counts.push({ name: t.name, rows: n });
  yield line({ end: t.name, rows: n });
}

/**
 * Backups (Recover): a consistent snapshot of every table, compressed and sealed under a key
 * derived from the KEK (see backup-file.ts), written under BACKUP_DIR and recorded in `backups`
 * with an audit entry. The CA keys inside stay as they are: wrapped under the KEK.
 */
export class Backups {
  constructor(
    private readonly db: Db,
    private readonly store: BackupStore,
    private readonly kek: Kek,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly opts: { dir: string; keep: number; checkpoints?: AuditCheckpoints | undefined },
  ) {}

  get dir(): string {
    return this.opts.dir;
  }

  /** Writes a backup (to `out`, else a new file under BACKUP_DIR) and records it. */
  async create(ctx: ActorContext, o: { out?: string | undefined } = {}): Promise<BackupView> {
    const id = `bk_${randomBytes(8).toString('hex')}`;
    const createdAt = this.clock.now();
    const inDir = o.out === undefined;
    if (inDir) mkdirSync(this.opts.dir, { recursive: true, mode: 0o700 });
    const stamp = createdAt
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d{3}/, '');
    const path = inDir ? join(this.opts.dir, `mqtt-ca-${stamp}-${id}.backup`) : resolve(o.out!);
    if (existsSync(path)) throw conflict(`${path} exists: a backup never overwrites a file`);
    const bodyPath = `${path}.${id}.body`;
    const partPath = `${path}.${id}.part`;
    let header: BackupHeader;
    let written: { sizeBytes: number; sha256: Buffer };
    try {
      const trx = await this.store.openSnapshot(this.db);
      const counts: Array<{ name: string; rows: number }> = [];
      let body: { bodySha256: string; chunks: number };
      let migrations: string[];
      let auditCheckpoint: AuditCheckpoint | undefined;
      try {
        migrations = await this.store.appliedMigrations(trx);
        // The head of the chain in this snapshot, signed: a copy of it kept away from the database.
        auditCheckpoint = this.opts.checkpoints?.sign(await this.audit.head(trx), createdAt);
        const tables = await this.store.tables(trx);
        const store = this.store;
        async function* lines() {
          for (const t of tables) yield* tableLines(store, trx, t, counts);
        }
        body = await writeBody(this.kek, id, lines(), bodyPath);
        await trx.commit();
      } catch (e) {
        await trx.rollback();
        throw e;
      }
      header = {
        format: 'mqtt-ca-backup',
        formatVersion: FORMAT_VERSION,
        id,
        createdAt: createdAt.toISOString(),
        createdBy: ctx.actor,
        kekId: this.kek.id,
        migrations,
        tables: counts,
        compression: 'gzip',
        cipher: 'AES-256-GCM',
        chunkSize: CHUNK_SIZE,
        chunks: body.chunks,
        bodySha256: body.bodySha256,
        ...(auditCheckpoint ? { auditCheckpoint } : {}),
      };
      written = await assemble(this.kek, header, bodyPath, partPath);
      await rename(partPath, path);
    } finally {
      await unlink(bodyPath).catch(() => undefined);
      await unlink(partPath).catch(() => undefined);
    }
    const row: BackupRow = {
      id,
      createdAt,
      createdBy: ctx.actor,
      fileName: inDir ? basename(path) : path,
      sizeBytes: written.sizeBytes,
      sha256: written.sha256,
      formatVersion: FORMAT_VERSION,
      kekId: this.kek.id,
      schemaVersion: header.migrations[header.migrations.length - 1] ?? '',
      rowCounts: Object.fromEntries(header.tables.map((t) => [t.name, t.rows])),
      origin: 'created',
      restoredAt: null,
      deletedAt: null,
    };
    await this.db.transaction(async (tx) => {
      await this.store.insertBackup(tx, row);
      await this.audit.append(tx, [
        {
          ...ctx,
          action: 'backup.created',
          targetType: 'backup',
          targetId: id,
          details: {
            fileName: row.fileName,
            sizeBytes: row.sizeBytes,
            sha256: row.sha256.toString('hex'),
            schemaVersion: row.schemaVersion,
            rows: header.tables.reduce((n, t) => n + t.rows, 0),
          },
        },
      ]);
    });
    return view(row);
  }

  async list(q: { cursor?: string | undefined; limit: number }): Promise<Page<BackupView>> {
    if (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > BACKUP_LIST_MAX_LIMIT)
      throw badRequest(`limit must be an integer from 1 to ${BACKUP_LIST_MAX_LIMIT}`);
    const rows = await this.store.list(this.db, {
      before: q.cursor === undefined ? undefined : decodeCursor(q.cursor),
      limit: q.limit + 1,
    });
    const page = rows.slice(0, q.limit);
    return { items: page.map(view), nextCursor: rows.length > q.limit ? encodeCursor(page[page.length - 1]!) : null };
  }

  async get(id: string): Promise<BackupView> {
    const r = ID_RE.test(id) ? await this.store.get(this.db, id) : undefined;
    if (!r) throw notFound(`no backup ${id}`);
    return view(r);
  }

  /** The newest backup recorded (made here, or the one this instance was restored from): for the age of the last backup. */
  async latest(): Promise<BackupView | undefined> {
    const r = await this.store.latest(this.db);
    return r ? view(r) : undefined;
  }

  /** The file of a backup kept under BACKUP_DIR. */
  async file(id: string): Promise<{ path: string; sizeBytes: number; fileName: string }> {
    const b = await this.get(id);
    if (b.origin !== 'created' || b.fileDeletedAt || b.fileName.includes('/') || b.fileName.includes('\\')) {
      throw notFound(`the file of backup ${id} is not kept under the backup directory`);
    }
    const path = join(this.opts.dir, b.fileName);
    const s = await stat(path).catch(() => undefined);
    if (!s || s.size !== b.sizeBytes) throw notFound(`the file of backup ${id} is no longer in the backup directory`);
    return { path, sizeBytes: s.size, fileName: b.fileName };
  }

  /** The audit checkpoints in the headers of the backup files under BACKUP_DIR (for `audit verify`), and the files that could not be read. */
  async checkpoints(): Promise<{ sources: CheckpointSource[]; skipped: string[] }> {
    const sources: CheckpointSource[] = [];
    const skipped: string[] = [];
    const files = await readdir(this.opts.dir).catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? [] : Promise.reject(e)));
    for (const f of files.filter((n) => n.endsWith('.backup')).sort()) {
      try {
        const { header } = await readHeader(join(this.opts.dir, f), this.kek);
        if (header.auditCheckpoint) sources.push({ source: `backup ${header.id} (${f})`, value: header.auditCheckpoint });
      } catch (e) {
        skipped.push(`backup file ${f}: ${(e as Error).message}`);
      }
    }
    return { sources, skipped };
  }

  /** Deletes the files of all but the newest BACKUP_KEEP backups made here (0: keep all); their records stay. */
  async prune(ctx: ActorContext): Promise<{ pruned: string[] }> {
    if (this.opts.keep <= 0) return { pruned: [] };
    const old = (await this.store.kept(this.db)).slice(this.opts.keep).filter((b) => !b.fileName.includes('/'));
    if (old.length === 0) return { pruned: [] };
    for (const b of old)
      await unlink(join(this.opts.dir, b.fileName)).catch((e: NodeJS.ErrnoException) =>
        e.code === 'ENOENT' ? undefined : Promise.reject(e),
      );
    const ids = old.map((b) => b.id);
    await this.db.transaction(async (tx) => {
      await this.store.markDeleted(tx, ids, this.clock.now());
      await this.audit.append(
        tx,
        ids.map((id) => ({ ...ctx, action: 'backup.pruned', targetType: 'backup', targetId: id, details: { keep: this.opts.keep } })),
      );
    });
    return { pruned: ids };
  }
}

export interface RestoreResult {
  header: BackupHeader;
  /** Migrations run on the target before the rows went in, and after (to this code's schema). */
  migratedBefore: string[];
  migratedAfter: string[];
  rows: number;
}

async function fileSha256(path: string): Promise<{ sha256: Buffer; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const b of createReadStream(path)) {
    h.update(b as Buffer);
    size += (b as Buffer).length;
  }
  return { sha256: h.digest(), size };
}

/**
 * Walks the body's lines checking their structure against the header: the tables in the
 * header's order, each row as wide as its table, each table's count as announced.
 */
function structureChecker(
  header: BackupHeader,
  on: {
    table?(name: string, columns: ColumnMeta[]): Promise<void>;
    rows?(rows: SnapshotValue[][]): Promise<void>;
    end?(): Promise<void>;
  } = {},
) {
  let i = 0;
  let current: { name: string; width: number; rows: number } | undefined;
  let batch: SnapshotValue[][] = [];
  const flush = async () => {
    if (batch.length && on.rows) await on.rows(batch);
    batch = [];
  };
  return {
    async line(l: BodyLine): Promise<void> {
      if (Array.isArray(l)) {
        if (!current || l.length !== current.width || !l.every((v) => v === null || typeof v === 'string'))
          throw new BackupFileError('the backup body is not valid: a row outside a table or of the wrong width');
        current.rows += 1;
        batch.push(l);
        if (batch.length >= PAGE_ROWS) await flush();
      } else if ('table' in l) {
        const expected = header.tables[i];
        if (current || !expected || expected.name !== l.table || !Array.isArray(l.columns))
          throw new BackupFileError(
            `the backup body is not valid: table ${l.table} where the header has ${expected?.name ?? 'no more tables'}`,
          );
        current = { name: l.table, width: l.columns.length, rows: 0 };
        await on.table?.(
          l.table,
          l.columns.map(([name, type]) => ({ name, type })),
        );
      } else if ('end' in l) {
        if (!current || l.end !== current.name || l.rows !== current.rows || header.tables[i]!.rows !== current.rows) {
          throw new BackupFileError(
            `the backup body is not valid: table ${l.end} ends with ${current?.rows} rows, the header says ${header.tables[i]?.rows}`,
          );
        }
        await flush();
        await on.end?.();
        current = undefined;
        i += 1;
      } else {
        throw new BackupFileError('the backup body is not valid: an unknown line');
      }
    },
    finish(): void {
      if (current || i !== header.tables.length) throw new BackupFileError('the backup body ends before all its tables');
    },
  };
}

/**
 * Restores a backup into an EMPTY database (migrated or not; no CAs, keys, certificates or
 * audit entries): checks the whole file first (nothing is written for a bad one), brings the
 * schema to the backup's migrations, inserts every table in dependency order in one
 * transaction, moves the sequences on, records the restore (a `backups` row and a
 * `backup.restored` audit entry, chained onto the restored log), then migrates to this code's schema.
 */
export async function restoreBackup(
  d: { db: Db; store: BackupStore; kek: Kek; audit: AuditLog; clock: Clock },
  path: string,
  ctx: ActorContext,
): Promise<RestoreResult> {
  const { db, store, kek } = d;
  const { header, bodyOffset } = await readHeader(path, kek);
  const known = await store.knownMigrations();
  const unknown = header.migrations.filter((m) => !known.includes(m));
  if (unknown.length) {
    throw new BackupFileError(
      `the backup comes from a newer schema (${unknown.join(', ')} unknown to this mqtt-ca): restore it with the mqtt-ca version that made it, or a newer one`,
    );
  }
  if (header.migrations.some((m, i) => known[i] !== m))
    throw new BackupFileError("the backup's migrations are not in the order this mqtt-ca applies them");

  // 1. The whole file, checked before anything is written: chunks, structure, counts, digest.
  const check = structureChecker(header);
  await readBody(kek, path, header, bodyOffset, (l) => check.line(l));
  check.finish();
  const file = await fileSha256(path);

  // 2. An empty target only; its schema brought to the backup's.
  const refuseNonEmpty = async (ex: Knex | Knex.Transaction) => {
    const full = await store.nonEmptyTables(ex, await store.tables(ex));
    if (full.length)
      throw conflict(
        `the target database is not empty (rows in ${full.join(', ')}): a backup is restored only into an empty, freshly created database`,
      );
  };
  const applied = await store.appliedMigrations(db);
  if (applied.length) await refuseNonEmpty(db);
  const down = applied.filter((m) => !header.migrations.includes(m)).reverse();
  const up = header.migrations.filter((m) => !applied.includes(m));
  await store.migrate(db, down, 'down');
  if (up.length && header.migrations.length === known.length)
    await store.migrateAll(db); // the usual case: the backup is at this code's schema
  else await store.migrate(db, up, 'up');

  // 3. The rows, in one transaction.
  let rows = 0;
  await db.transaction(async (tx) => {
    await refuseNonEmpty(tx);
    const tables = new Map((await store.tables(tx)).map((t) => [t.name, t]));
    await store.clearSeeded(tx, [...tables.values()]);
    let table: TableMeta | undefined;
    let columns: ColumnMeta[] = [];
    let deferred: SnapshotValue[][] = [];
    const restore = structureChecker(header, {
      async table(name, cols) {
        table = tables.get(name);
        if (!table) throw new BackupFileError(`the backup has a table ${name} the schema at its migrations does not have`);
        const missing = cols.filter((c) => !table!.columns.some((t) => t.name === c.name && t.type === c.type));
        if (missing.length)
          throw new BackupFileError(
            `table ${name}: column ${missing[0]!.name} (${missing[0]!.type}) is not in the schema at the backup's migrations`,
          );
        columns = cols;
        deferred = [];
      },
      async rows(batch) {
        const nulled = table!.selfReferences;
        await store.insert(tx, table!, columns, batch, nulled);
        if (nulled.length) deferred.push(...batch);
        rows += batch.length;
      },
      async end() {
        await store.setDeferred(tx, table!, columns, deferred);
        deferred = [];
      },
    });
    await readBody(kek, path, header, bodyOffset, (l) => restore.line(l));
    restore.finish();
    await store.resetSequences(tx, [...tables.values()]);
    const now = d.clock.now();
    if (await store.hasBackupsTable(tx)) {
      await store.insertBackup(tx, {
        id: header.id,
        createdAt: new Date(header.createdAt),
        createdBy: header.createdBy,
        fileName: basename(path),
        sizeBytes: file.size,
        sha256: file.sha256,
        formatVersion: header.formatVersion,
        kekId: header.kekId,
        schemaVersion: header.migrations[header.migrations.length - 1] ?? '',
        rowCounts: Object.fromEntries(header.tables.map((t) => [t.name, t.rows])),
        origin: 'restored',
        restoredAt: now,
        deletedAt: null,
      });
    }
    await d.audit.append(tx, [
      {
        ...ctx,
        action: 'backup.restored',
        targetType: 'backup',
        targetId: header.id,
        details: {
          backupCreatedAt: header.createdAt,
          sha256: file.sha256.toString('hex'),
          schemaVersion: header.migrations[header.migrations.length - 1] ?? '',
          rows,
        },
      },
    ]);
  });

  // 4. On to this code's schema (a backup from an older version).
  const after = known.filter((m) => !header.migrations.includes(m));
  await store.migrate(db, after, 'up');
  return { header, migratedBefore: up, migratedAfter: after, rows };
}
