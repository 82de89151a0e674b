import type { Executor } from './db.js';

/** What is known of a published CRL without its body. */
export interface CrlHeader {
  caId: string;
  crlNumber: bigint;
  thisUpdate: Date;
  nextUpdate: Date;
  entries: number;
}

export interface CrlRow extends CrlHeader {
  der: Buffer;
}

const HEADER_COLUMNS = ['ca_id', 'crl_number', 'this_update', 'next_update', 'entries'];

export interface RevokedEntryRow {
  serial: Buffer;
  revokedAt: Date;
  reason: string;
  invalidityDate: Date | null;
}

function headerFromRow(r: Record<string, unknown>): CrlHeader {
  return {
    caId: r.ca_id as string,
    crlNumber: BigInt(r.crl_number as string | number),
    thisUpdate: new Date(r.this_update as string),
    nextUpdate: new Date(r.next_update as string),
    entries: Number(r.entries),
  };
}

/** Published CRLs, and what goes into the next one. */
export class CrlStore {
  /**
   * The newest CRL of a CA, without its body (a large CRL is tens of MB). With `lock`, the CA's
   * CRL sequence is held until `ex` (a transaction) ends, so two publishers never take the same number.
   */
  async latest(ex: Executor, caId: string, opts: { lock?: boolean } = {}): Promise<CrlHeader | undefined> {
    if (opts.lock) await ex.raw('select id from cas where id = ? for update', [caId]);
    const r = await ex('crls').select(HEADER_COLUMNS).where({ ca_id: caId }).orderBy('crl_number', 'desc').first();
    return r ? headerFromRow(r) : undefined;
  }

  /** The body of one published CRL (immutable once stored). */
  async der(ex: Executor, caId: string, crlNumber: bigint): Promise<Buffer | undefined> {
    const r = await ex('crls').select('der').where({ ca_id: caId, crl_number: crlNumber.toString() }).first();
    return r ? Buffer.from(r.der as Uint8Array) : undefined;
  }

  async insert(ex: Executor, row: CrlRow): Promise<void> {
    await ex('crls').insert({
      ca_id: row.caId,
      crl_number: row.crlNumber.toString(),
      this_update: row.thisUpdate,
      next_update: row.nextUpdate,
      entries: row.entries,
      der: row.der,
    });
  }

  /**
   * One page of a CA's revoked certificates that have not expired by `at` (expired ones leave
   * the CRL, RFC 5280 §3.3), in serial order after `after`: keyset paging on the partial index.
   */
  async revokedPage(ex: Executor, caId: string, at: Date, after: Buffer | null, limit: number): Promise<RevokedEntryRow[]> {
    const q = ex('certificates')
      .select('serial', 'revoked_at', 'revocation_reason', 'invalidity_date')
      .where({ ca_id: caId, status: 'revoked' })
      .andWhere('not_after', '>', at);
    if (after) q.andWhere('serial', '>', after);
    const rows = await q.orderBy('serial').limit(limit);
    return rows.map((r: Record<string, unknown>) => ({
      serial: Buffer.from(r.serial as Uint8Array),
      revokedAt: new Date(r.revoked_at as string),
      reason: r.revocation_reason as string,
      invalidityDate: r.invalidity_date == null ? null : new Date(r.invalidity_date as string),
    }));
  }
}
