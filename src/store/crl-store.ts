import type { Knex } from 'knex';
import { prepared, type Executor } from './db.js';
import { packedBytea } from './packed-bytea.js';

export type CrlKind = 'full' | 'delta';

/**
 * What one CRL family covers: a CA's certificates (shard 0: its one CRL, named by every
 * certificate issued without sharding) or one of its CRL shards (1..n). Each has its own number
 * sequence, base and deltas.
 */
export interface CrlPartition {
  caId: string;
  shard: number;
}

export const partitionKey = (p: CrlPartition) => (p.shard === 0 ? p.caId : `${p.caId}/${p.shard}`);

/** What is known of a published CRL without its body. */
export interface CrlHeader extends CrlPartition {
  kind: CrlKind;
  crlNumber: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  entries: number;
  /** A delta's BaseCRLNumber. */
  baseNumber: bigint | null;
  /** The revocation clock value its snapshot covers (null: published before the clock existed). */
  coversSeq: bigint | null;
  /** A full CRL that deltas are computed against. */
  isBase: boolean;
}

/** A CRL as the endpoints serve it. */
export interface ServedCrl extends CrlHeader {
  /**
   * No other CRL of its partition and kind has a thisUpdate in the same second: its HTTP
   * Last-Modified (whole seconds) names it alone, so an If-Modified-Since can be answered 304.
   */
  secondUnique: boolean;
}

export interface CrlRow extends CrlHeader {
  der: Buffer;
}

const HEADER_COLUMNS = [
  'ca_id',
  'shard',
  'kind',
  'crl_number',
  'this_update',
  'next_update',
  'entries',
  'base_number',
  'covers_seq',
  'is_base',
];

/** A row of a CRL snapshot: the clock, an entry of a full CRL, or an entry of a delta. */
export type SnapshotRow =
  | { part: 'epoch'; seq: bigint }
  | { part: 'full'; serial: Buffer; revokedAt: Date; reason: string; invalidityDate: Date | null }
  /** Changed since the delta's base: revoked (reason set) or released from hold (reason null). */
  | { part: 'delta'; serial: Buffer; revokedAt: Date | null; reason: string | null; invalidityDate: Date | null };

const big = (v: unknown): bigint | null => (v == null ? null : BigInt(v as string | number));

function headerFromRow(r: Record<string, unknown>): CrlHeader {
  return {
    caId: r.ca_id as string,
    shard: Number(r.shard),
    kind: r.kind as CrlKind,
    crlNumber: BigInt(r.crl_number as string | number),
    thisUpdate: new Date(r.this_update as string),
    nextUpdate: new Date(r.next_update as string),
    entries: Number(r.entries),
    baseNumber: big(r.base_number),
    coversSeq: big(r.covers_seq),
    isBase: Boolean(r.is_base),
  };
}

const date = (v: unknown): Date | null => (v == null ? null : new Date(v as string));

/** Published CRLs (full and delta), and the snapshot the next ones are built from. */
export class CrlStore {
  /**
   * The newest CRL of a kind as the endpoints serve it (a prepared statement: every fetch of a
   * broker handshake storm may read it), and whether it alone has its second.
   */
  async served(ex: Executor, p: CrlPartition, kind: CrlKind): Promise<ServedCrl | undefined> {
    const r = await prepared(
      ex,
      'crl-served',
      `select ${HEADER_COLUMNS.join(', ')}, shares_second
         from crls where ca_id = ? and shard = ? and kind = ? order by crl_number desc limit 1`,
      [p.caId, p.shard, kind],
    );
    const row = r.rows[0] as Record<string, unknown> | undefined;
    return row ? { ...headerFromRow(row), secondUnique: !row.shares_second } : undefined;
  }

  /** The newest CRL of a kind, without its body (a large CRL is tens of MB). */
  async latest(ex: Executor, p: CrlPartition, kind: CrlKind = 'full'): Promise<CrlHeader | undefined> {
    const r = await ex('crls').select(HEADER_COLUMNS).where({ ca_id: p.caId, shard: p.shard, kind }).orderBy('crl_number', 'desc').first();
    return r ? headerFromRow(r) : undefined;
  }

  /** The newest full CRL that deltas are computed against. */
  async currentBase(ex: Executor, p: CrlPartition): Promise<CrlHeader | undefined> {
    const r = await ex('crls')
      .select(HEADER_COLUMNS)
      .where({ ca_id: p.caId, shard: p.shard, kind: 'full', is_base: true })
      .orderBy('crl_number', 'desc')
      .first();
    return r ? headerFromRow(r) : undefined;
  }

  /**
   * Holds the partition's CRL number sequence until `tx` ends (so two publishers never take the
   * same number) and returns the highest number taken, full or delta (they share one sequence).
   * Shard 0 locks the CA's row, as before shards existed; a shard takes an advisory lock of its own.
   */
  async lockSequence(tx: Knex.Transaction, p: CrlPartition): Promise<bigint> {
    if (p.shard === 0) await tx.raw('select id from cas where id = ? for update', [p.caId]);
    else await tx.raw(`select pg_advisory_xact_lock(hashtextextended('crl-seq:' || ? || '/' || ?, 0))`, [p.caId, p.shard]);
    const r = (await tx('crls').max({ n: 'crl_number' }).where({ ca_id: p.caId, shard: p.shard }).first()) as
      { n: string | number | null } | undefined;
    return big(r?.n) ?? 0n;
  }

  /** The body of one published CRL (immutable once stored). */
  async der(ex: Executor, crl: CrlPartition & { crlNumber: bigint }): Promise<Buffer | undefined> {
    const r = await ex('crls').select('der').where({ ca_id: crl.caId, shard: crl.shard, crl_number: crl.crlNumber.toString() }).first();
    return r ? Buffer.from(r.der as Uint8Array) : undefined;
  }

  /** The highest CRL shard any of the CA's certificates names (0: none is sharded). */
  async highestShard(ex: Executor, caId: string): Promise<number> {
    const r = (await ex('certificates').max({ n: 'crl_shard' }).where({ ca_id: caId }).andWhere('crl_shard', '>', 0).first()) as
      { n: number | null } | undefined;
    return Number(r?.n ?? 0);
  }

  /** The CRL shards (0: the CA's one CRL) that the CA's certificates with these serials name. */
  async shardsOf(ex: Executor, caId: string, serials: readonly Buffer[]): Promise<number[]> {
    if (serials.length === 0) return [];
    const rows = await ex.raw(
      `select distinct crl_shard from certificates where ca_id = ? and serial = any(bytea_split(?::bytea, ?::int[]))`,
      [caId, ...packedBytea(serials)],
    );
    return (rows.rows as { crl_shard: number }[]).map((r) => Number(r.crl_shard)).sort((a, b) => a - b);
  }

  /**
   * Deletes the bodies of superseded CRLs published before `before`: every CRL but the newest full
   * and delta of each partition (the newest full is the current base; the newest numbers keep the
   * sequences). Nobody is served a superseded CRL; at a million revoked each full build stores
   * tens of MB, so without this the table grows with every rebuild. The audit log keeps each
   * publication's number and times.
   */
  async pruneSuperseded(ex: Executor, before: Date): Promise<number> {
    const r = await ex.raw(
      `delete from crls c
        where c.this_update < ?
          and c.crl_number < (select max(n.crl_number) from crls n where n.ca_id = c.ca_id and n.shard = c.shard and n.kind = c.kind)`,
      [before],
    );
    return Number(r.rowCount ?? 0);
  }

  /**
   * Inserts a published CRL, inside the transaction that holds its partition's sequence lock
   * (lockSequence): the CRLs of its kind already there are every one before it, so whether one of
   * them has a thisUpdate in its second (shares_second, migration 0032) is settled here, for good.
   */
  async insert(ex: Executor, row: CrlRow): Promise<void> {
    await ex('crls').insert({
      shares_second: ex.raw(
        `exists (select 1 from crls o where o.ca_id = ? and o.shard = ? and o.kind = ?
                   and o.this_update >= date_trunc('second', ?::timestamptz) and o.this_update < date_trunc('second', ?::timestamptz) + interval '1 second')`,
        [row.caId, row.shard, row.kind, row.thisUpdate, row.thisUpdate],
      ),
      ca_id: row.caId,
      shard: row.shard,
      kind: row.kind,
      crl_number: row.crlNumber.toString(),
      this_update: row.thisUpdate,
      next_update: row.nextUpdate,
      entries: row.entries,
      base_number: row.baseNumber?.toString() ?? null,
      covers_seq: row.coversSeq?.toString() ?? null,
      is_base: row.isBase,
      der: row.der,
    });
  }

  /**
   * Takes the partition's full-CRL build lock until `tx` ends, if no other transaction (another
   * replica) holds it: at most one full CRL build per CA and shard at a time across processes.
   */
  async tryBuildLock(tx: Knex.Transaction, p: CrlPartition): Promise<boolean> {
    const r = await tx.raw(`select pg_try_advisory_xact_lock(hashtextextended('crl-build:' || ?, 0)) as locked`, [partitionKey(p)]);
    return Boolean((r.rows as { locked: boolean }[])[0]?.locked);
  }

  /**
   * One consistent snapshot of what a partition's (a CA's, or one shard's) next CRL holds, read through a cursor page by page
   * (a million entries are never all in memory as rows), one statement so its parts agree:
   * the revocation clock, then either (`part: 'full'`) the revoked certificates that have not
   * expired by `at` (expired ones leave the CRL, RFC 5280 §3.3; their rows stay), or (`part:
   * 'delta'`, with `sinceSeq`) every unexpired certificate whose revocation state changed after
   * it — read through the (ca_id, revocation_seq) index, so its cost is the changes', not the
   * revoked set's. The order of rows is not defined.
   */
  async *snapshot(
    tx: Knex.Transaction,
    p: CrlPartition,
    at: Date,
    part: { full: true } | { sinceSeq: bigint },
    pageSize: number,
  ): AsyncGenerator<SnapshotRow[]> {
    const entries =
      'full' in part
        ? `select 1, revocation_seq, serial, revoked_at, revocation_reason, invalidity_date from certificates
            where ca_id = ? and crl_shard = ? and status = 'revoked' and not_after > ?`
        : `select 2, revocation_seq, serial, revoked_at, revocation_reason, invalidity_date from certificates
            where ca_id = ? and crl_shard = ? and revocation_seq > ? and not_after > ? and status in ('revoked', 'issued')`;
    await tx.raw(
      `declare crl_snapshot no scroll cursor for
         select 0 as part, seq, null::bytea as serial, null::timestamptz as revoked_at, null::text as reason, null::timestamptz as invalidity_date from revocation_epoch
         union all
         ${entries}`,
      'full' in part ? [p.caId, p.shard, at] : [p.caId, p.shard, part.sinceSeq.toString(), at],
    );
    try {
      for (;;) {
        const r = await tx.raw(`fetch forward ${Math.trunc(pageSize)} from crl_snapshot`);
        const rows = r.rows as {
          part: number;
          seq: string | number | null;
          serial: Uint8Array | null;
          revoked_at: string | null;
          reason: string | null;
          invalidity_date: string | null;
        }[];
        if (rows.length === 0) return;
        yield rows.map((x): SnapshotRow => {
          if (x.part === 0) return { part: 'epoch', seq: BigInt(x.seq!) };
          const entry = { serial: Buffer.from(x.serial!), invalidityDate: date(x.invalidity_date) };
          return x.part === 1
            ? { part: 'full', ...entry, revokedAt: new Date(x.revoked_at!), reason: x.reason! }
            : { part: 'delta', ...entry, revokedAt: date(x.revoked_at), reason: x.reason };
        });
        if (rows.length < pageSize) return;
      }
    } finally {
      // After a failed statement the transaction is aborted and rolls the cursor back anyway: keep the first error.
      await tx.raw('close crl_snapshot').catch(() => undefined);
    }
  }
}
