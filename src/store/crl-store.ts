import type { Knex } from 'knex';
import type { Executor } from './db.js';

export type CrlKind = 'full' | 'delta';

/** What is known of a published CRL without its body. */
export interface CrlHeader {
  caId: string;
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

export interface CrlRow extends CrlHeader {
  der: Buffer;
}

const HEADER_COLUMNS = ['ca_id', 'kind', 'crl_number', 'this_update', 'next_update', 'entries', 'base_number', 'covers_seq', 'is_base'];

/** A row of a CRL snapshot: the clock, an entry of the full CRL, or an entry of the delta. */
export type SnapshotRow =
  | { part: 'epoch'; seq: bigint }
  | { part: 'full'; serial: Buffer; revokedAt: Date; reason: string; invalidityDate: Date | null }
  /** Changed since the delta's base: revoked (reason set) or released from hold (reason null). */
  | { part: 'delta'; serial: Buffer; revokedAt: Date | null; reason: string | null; invalidityDate: Date | null };

const big = (v: unknown): bigint | null => (v == null ? null : BigInt(v as string | number));

function headerFromRow(r: Record<string, unknown>): CrlHeader {
  return {
    caId: r.ca_id as string,
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
  /** The newest CRL of a kind, without its body (a large CRL is tens of MB). */
  async latest(ex: Executor, caId: string, kind: CrlKind = 'full'): Promise<CrlHeader | undefined> {
    const r = await ex('crls').select(HEADER_COLUMNS).where({ ca_id: caId, kind }).orderBy('crl_number', 'desc').first();
    return r ? headerFromRow(r) : undefined;
  }

  /** The newest full CRL that deltas are computed against. */
  async currentBase(ex: Executor, caId: string): Promise<CrlHeader | undefined> {
    const r = await ex('crls')
      .select(HEADER_COLUMNS)
      .where({ ca_id: caId, kind: 'full', is_base: true })
      .orderBy('crl_number', 'desc')
      .first();
    return r ? headerFromRow(r) : undefined;
  }

  /**
   * Holds the CA's CRL number sequence until `tx` ends (so two publishers never take the same
   * number) and returns the highest number taken, full or delta (they share one sequence).
   */
  async lockSequence(tx: Knex.Transaction, caId: string): Promise<bigint> {
    await tx.raw('select id from cas where id = ? for update', [caId]);
    const r = (await tx('crls').max({ n: 'crl_number' }).where({ ca_id: caId }).first()) as { n: string | number | null } | undefined;
    return big(r?.n) ?? 0n;
  }

  /** The body of one published CRL (immutable once stored). */
  async der(ex: Executor, caId: string, crlNumber: bigint): Promise<Buffer | undefined> {
    const r = await ex('crls').select('der').where({ ca_id: caId, crl_number: crlNumber.toString() }).first();
    return r ? Buffer.from(r.der as Uint8Array) : undefined;
  }

  async insert(ex: Executor, row: CrlRow): Promise<void> {
    await ex('crls').insert({
      ca_id: row.caId,
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
   * One consistent snapshot of what a CA's next CRLs hold, read through a cursor page by page
   * (a million entries are never all in memory as rows): the revocation clock, the revoked
   * certificates that have not expired by `at` (expired ones leave the CRL, RFC 5280 §3.3), and —
   * when `sinceSeq` is given — every unexpired certificate whose revocation state changed after
   * it. One statement, so the three agree; the order of rows is not defined.
   */
  async *snapshot(tx: Knex.Transaction, caId: string, at: Date, sinceSeq: bigint | null, pageSize: number): AsyncGenerator<SnapshotRow[]> {
    const delta =
      sinceSeq === null
        ? ''
        : `union all
           select 2, revocation_seq, serial, revoked_at, revocation_reason, invalidity_date from certificates
            where ca_id = ? and revocation_seq > ? and not_after > ? and status in ('revoked', 'issued')`;
    await tx.raw(
      `declare crl_snapshot no scroll cursor for
         select 0 as part, seq, null::bytea as serial, null::timestamptz as revoked_at, null::text as reason, null::timestamptz as invalidity_date from revocation_epoch
         union all
         select 1, revocation_seq, serial, revoked_at, revocation_reason, invalidity_date from certificates
          where ca_id = ? and status = 'revoked' and not_after > ?
         ${delta}`,
      sinceSeq === null ? [caId, at] : [caId, at, caId, sinceSeq.toString(), at],
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
