import { prepared, type Db, type Executor } from './db.js';

/** One audit_log row as stored. `details` is the JSON value as read back from jsonb. */
export interface AuditRow {
  seq: number;
  at: Date;
  actor: string;
  action: string;
  targetType: string;
  targetId: string;
  requestId: string | null;
  details: Record<string, unknown>;
  prevHash: Buffer;
  hash: Buffer;
}

/** A row to append; `details` must already be plain JSON (no undefined, Dates, ...). */
export type NewAuditRow = AuditRow;

/** What a page of the log may be narrowed to. */
export interface AuditFilter {
  action?: string | undefined;
  targetType?: string | undefined;
  targetId?: string | undefined;
  actor?: string | undefined;
  /** at >= since */
  since?: Date | undefined;
  /** at < until */
  until?: Date | undefined;
}

export interface AuditPageQuery extends AuditFilter {
  /** Only rows with seq < beforeSeq (keyset paging, newest first). */
  beforeSeq?: number | undefined;
  limit: number;
}

const COLUMNS = ['seq', 'at', 'actor', 'action', 'target_type', 'target_id', 'request_id', 'details', 'prev_hash', 'hash'];

/**
 * Serializes appenders to the audit chain. Any constant works as long as nothing else uses it;
 * this one is 'mqca' 'audt' in ASCII.
 */
export const AUDIT_APPEND_LOCK = '7886193692400510068'; // 0x6d716361_61756474, passed as text, cast to bigint

function fromRow(r: Record<string, unknown>): AuditRow {
  const d = r.details;
  return {
    seq: Number(r.seq),
    at: new Date(r.at as string | Date),
    actor: r.actor as string,
    action: r.action as string,
    targetType: r.target_type as string,
    targetId: r.target_id as string,
    requestId: (r.request_id as string | null) ?? null,
    details: (typeof d === 'string' ? JSON.parse(d) : d) as Record<string, unknown>,
    prevHash: Buffer.from(r.prev_hash as Uint8Array),
    hash: Buffer.from(r.hash as Uint8Array),
  };
}

/** The rows as the one JSON parameter that audit_append and issuance_complete read with jsonb_to_recordset. */
export function auditPayload(rows: NewAuditRow[]): string {
  return JSON.stringify(
    rows.map((r) => ({
      seq: r.seq,
      at: r.at.toISOString(),
      actor: r.actor,
      action: r.action,
      target_type: r.targetType,
      target_id: r.targetId,
      request_id: r.requestId,
      details: r.details,
      prev_hash: r.prevHash.toString('hex'),
      hash: r.hash.toString('hex'),
    })),
  );
}

/** SQL for the append-only audit chain (audit_log). */
export class AuditStore {
  /** `db` is used by reads that are not given an executor (the list endpoint). */
  constructor(private readonly db: Db) {}

  /**
   * Takes the append lock (held to the end of the transaction) and inserts the rows, chained on
   * `expected` (undefined: an empty log), in ONE round trip (see migration 0016) — if the head is
   * still `expected`. Otherwise inserts nothing and returns the head as it is under the lock.
   * Must be called on a transaction.
   */
  async appendAt(
    tx: Executor,
    expected: { seq: number; hash: Buffer } | undefined,
    rows: NewAuditRow[],
  ): Promise<{ appended: true } | { appended: false; head: { seq: number; hash: Buffer } | undefined }> {
    const r = await prepared(tx, 'audit-append', 'select appended, seq, hash from audit_append(?::bigint, ?::bigint, ?::bytea, ?::jsonb)', [
      AUDIT_APPEND_LOCK,
      expected?.seq ?? 0,
      expected?.hash ?? null,
      auditPayload(rows),
    ]);
    const row = (r.rows as { appended: boolean; seq: string | number | null; hash: Uint8Array | null }[])[0]!;
    if (row.appended) return { appended: true };
    return { appended: false, head: row.seq == null ? undefined : { seq: Number(row.seq), hash: Buffer.from(row.hash!) } };
  }

  /** Rows with seq > afterSeq in ascending seq order, at most `limit` of them (for verification). */
  async rangeAfter(ex: Executor, afterSeq: number, limit: number): Promise<AuditRow[]> {
    const rows = await ex('audit_log').select(COLUMNS).where('seq', '>', afterSeq).orderBy('seq', 'asc').limit(limit);
    return rows.map(fromRow);
  }

  /** The hash of entry `seq`, if there is one. */
  async hashAt(ex: Executor, seq: number): Promise<Buffer | undefined> {
    const r = (await ex('audit_log').select('hash').where('seq', seq).first()) as { hash: Uint8Array } | undefined;
    return r ? Buffer.from(r.hash) : undefined;
  }

  /** The newest entry's seq and hash; undefined for an empty log. */
  async head(ex: Executor): Promise<{ seq: number; hash: Buffer } | undefined> {
    const r = (await ex('audit_log').select('seq', 'hash').orderBy('seq', 'desc').first()) as
      { seq: string | number; hash: Uint8Array } | undefined;
    return r ? { seq: Number(r.seq), hash: Buffer.from(r.hash) } : undefined;
  }

  /** A page of rows, newest first, matching all given filters. */
  async page(q: AuditPageQuery, ex: Executor = this.db): Promise<AuditRow[]> {
    const b = ex('audit_log').select(COLUMNS);
    if (q.beforeSeq !== undefined) b.where('seq', '<', q.beforeSeq);
    if (q.action !== undefined) b.where('action', q.action);
    if (q.targetType !== undefined) b.where('target_type', q.targetType);
    if (q.targetId !== undefined) b.where('target_id', q.targetId);
    if (q.actor !== undefined) b.where('actor', q.actor);
    if (q.since !== undefined) b.where('at', '>=', q.since);
    if (q.until !== undefined) b.where('at', '<', q.until);
    const rows = await b.orderBy('seq', 'desc').limit(q.limit);
    return rows.map(fromRow);
  }
}
