import type { Knex } from 'knex';
import type { RevocationSelectorJson } from '../shared/revocation-selector.js';
import type { Executor } from './db.js';
import type { RevocationSelector } from './certificate-store.js';

export type BulkRevocationStatus = 'running' | 'done' | 'failed';

/** One bulk revocation run (migration 0023). */
export interface BulkRevocationRow {
  id: string;
  /** The frozen selection: what the run takes, whenever it resumes. */
  selector: RevocationSelector;
  reason: string;
  invalidityDate: Date | null;
  actor: string;
  requestId: string | null;
  origin: string | null;
  status: BulkRevocationStatus;
  /** Revocable when the run started. */
  matched: number;
  revoked: number;
  alreadyRevoked: number;
  chunks: number;
  /** The last serial of the last chunk done (what GET shows; the walk itself goes by position, see freeze). */
  cursor: Buffer | null;
  error: string | null;
  leaseOwner: string | null;
  leaseUntil: Date | null;
  startedAt: Date;
  updatedAt: Date;
  finishedAt: Date | null;
}

export type NewBulkRevocation = Pick<
  BulkRevocationRow,
  | 'id'
  | 'selector'
  | 'reason'
  | 'invalidityDate'
  | 'actor'
  | 'requestId'
  | 'origin'
  | 'alreadyRevoked'
  | 'leaseOwner'
  | 'leaseUntil'
  | 'startedAt'
>;

interface SelectorJson extends RevocationSelectorJson {
  withDevicesUnexpiredAt?: string;
}

function selectorToJson(s: RevocationSelector): SelectorJson {
  const out: SelectorJson = {};
  if (s.serials) out.serials = s.serials.map((b) => b.toString('hex'));
  if (s.deviceIds) out.deviceIds = s.deviceIds;
  if (s.lot !== undefined) out.lot = s.lot;
  if (s.caId !== undefined) out.caId = s.caId;
  if (s.issuedAfter) out.issuedAfter = s.issuedAfter.toISOString();
  if (s.issuedBefore) out.issuedBefore = s.issuedBefore.toISOString();
  if (s.lineageOf) out.lineageOf = s.lineageOf.toString('hex');
  if (s.withDevicesUnexpiredAt) out.withDevicesUnexpiredAt = s.withDevicesUnexpiredAt.toISOString();
  return out;
}

function selectorFromJson(j: SelectorJson): RevocationSelector {
  const date = (v: string | undefined) => (v === undefined ? undefined : new Date(v));
  return {
    serials: j.serials?.map((x) => Buffer.from(x, 'hex')),
    deviceIds: j.deviceIds,
    lot: j.lot,
    caId: j.caId,
    issuedAfter: date(j.issuedAfter),
    issuedBefore: date(j.issuedBefore),
    lineageOf: j.lineageOf === undefined ? undefined : Buffer.from(j.lineageOf, 'hex'),
    withDevicesUnexpiredAt: date(j.withDevicesUnexpiredAt),
  };
}

function fromRow(r: Record<string, unknown>): BulkRevocationRow {
  const date = (v: unknown) => (v === null || v === undefined ? null : new Date(v as string | Date));
  return {
    id: r.id as string,
    selector: selectorFromJson(r.selector as SelectorJson),
    reason: r.reason as string,
    invalidityDate: date(r.invalidity_date),
    actor: r.actor as string,
    requestId: (r.request_id as string | null) ?? null,
    origin: (r.origin as string | null) ?? null,
    status: r.status as BulkRevocationStatus,
    matched: Number(r.matched),
    revoked: Number(r.revoked),
    alreadyRevoked: Number(r.already_revoked),
    chunks: Number(r.chunks),
    cursor: r.cursor ? Buffer.from(r.cursor as Uint8Array) : null,
    error: (r.error as string | null) ?? null,
    leaseOwner: (r.lease_owner as string | null) ?? null,
    leaseUntil: date(r.lease_until),
    startedAt: date(r.started_at)!,
    updatedAt: date(r.updated_at)!,
    finishedAt: date(r.finished_at),
  };
}

export class BulkRevocationStore {
  async insert(ex: Executor, run: NewBulkRevocation): Promise<BulkRevocationRow> {
    const [row] = await ex('bulk_revocations')
      .insert({
        id: run.id,
        selector: JSON.stringify(selectorToJson(run.selector)),
        reason: run.reason,
        invalidity_date: run.invalidityDate,
        actor: run.actor,
        request_id: run.requestId,
        origin: run.origin,
        status: 'running',
        matched: 0,
        already_revoked: run.alreadyRevoked,
        lease_owner: run.leaseOwner,
        lease_until: run.leaseUntil,
        started_at: run.startedAt,
        updated_at: run.startedAt,
      })
      .returning('*');
    return fromRow(row as Record<string, unknown>);
  }

  /**
   * Freezes a run's selection: the certificates `certificates` (a query of certificates `c`, its
   * `serial` selected) yields now, numbered in the order they lie in the table, so a chunk of
   * consecutive numbers touches a few of its pages rather than pages all over it. Returns how many.
   */
  async freeze(tx: Executor, id: string, certificates: Knex.QueryBuilder): Promise<number> {
    const r = await tx.raw(
      'insert into bulk_revocation_serials (run_id, pos, serial) select ?, row_number() over (order by q.ctid), q.serial from (?) q',
      [id, certificates.clone().select('c.ctid')],
    );
    const n = (r as { rowCount?: number | null }).rowCount;
    if (typeof n === 'number') return n;
    return Number(((await tx('bulk_revocation_serials').where({ run_id: id }).count({ n: 'serial' })) as { n: string | number }[])[0]!.n);
  }

  /**
   * The next window of a run's frozen selection (those not done), at most `limit` rows: how many it
   * ends (its last position and serial, and whether any row lies past it. Only its end is read: the
   * window's serials are used where they lie (`serialsIn`).
   */
  async window(
    tx: Executor,
    id: string,
    afterPos: number,
    limit: number,
  ): Promise<{ last: number; lastSerial: Buffer; more: boolean } | undefined> {
    const r = await tx.raw(
      `select pos, serial, count(*) over () as n from (
         select pos, serial from bulk_revocation_serials where run_id = ? and pos > ? order by pos limit ?
       ) w order by pos desc limit 2`,
      [id, afterPos, limit + 1],
    );
    const rows = r.rows as { pos: string | number; serial: Uint8Array; n: string | number }[];
    if (rows.length === 0) return undefined;
    const more = Number(rows[0]!.n) > limit;
    const end = more ? rows[1]! : rows[0]!;
    return { last: Number(end.pos), lastSerial: Buffer.from(end.serial), more };
  }

  /** The serials of a run's frozen selection in (afterPos, last], as a query selecting `serial`. */
  serialsIn(ex: Executor, id: string, afterPos: number, last: number): Knex.QueryBuilder {
    return ex('bulk_revocation_serials').select('serial').where({ run_id: id }).andWhere('pos', '>', afterPos).andWhere('pos', '<=', last);
  }

  /** A chunk done: its rows, the selection's up to position `last`, are struck off (a range of the key). */
  async dropWindow(tx: Executor, id: string, last: number): Promise<void> {
    await tx('bulk_revocation_serials').where({ run_id: id }).andWhere('pos', '<=', last).delete();
  }

  async get(ex: Executor, id: string): Promise<BulkRevocationRow | undefined> {
    const r = await ex('bulk_revocations').where({ id }).first();
    return r ? fromRow(r as Record<string, unknown>) : undefined;
  }

  /** The runs an origin (e.g. an incident) started, oldest first. */
  async ofOrigin(ex: Executor, origin: string): Promise<BulkRevocationRow[]> {
    const rows = await ex('bulk_revocations')
      .where({ origin })
      .orderBy([{ column: 'started_at' }, { column: 'id' }]);
    return rows.map((r: Record<string, unknown>) => fromRow(r));
  }

  /**
   * Locks a running run for its next chunk, if `owner` still holds its lease: undefined when
   * another process took it over (or it is no longer running), so this one stops.
   */
  async lockHeld(tx: Executor, id: string, owner: string): Promise<BulkRevocationRow | undefined> {
    const r = await tx('bulk_revocations').where({ id, status: 'running', lease_owner: owner }).forUpdate().first();
    return r ? fromRow(r as Record<string, unknown>) : undefined;
  }

  async setMatched(tx: Executor, id: string, matched: number): Promise<void> {
    await tx('bulk_revocations').where({ id }).update({ matched });
  }

  /** One chunk done: the cursor and counts advance, the lease is renewed. */
  async advance(tx: Executor, id: string, a: { cursor: Buffer; revoked: number; at: Date; leaseUntil: Date }): Promise<void> {
    await tx('bulk_revocations')
      .where({ id })
      .update({
        cursor: a.cursor,
        revoked: tx.raw('revoked + ?', [a.revoked]),
        chunks: tx.raw('chunks + 1'),
        updated_at: a.at,
        lease_until: a.leaseUntil,
      });
  }

  async finish(
    tx: Executor,
    id: string,
    f: { status: 'done' | 'failed'; at: Date; error?: string | undefined },
  ): Promise<BulkRevocationRow> {
    const [row] = await tx('bulk_revocations')
      .where({ id })
      .update({ status: f.status, error: f.error ?? null, updated_at: f.at, finished_at: f.at, lease_owner: null, lease_until: null })
      .returning('*');
    return fromRow(row as Record<string, unknown>);
  }

  /** The process running it gave up on a chunk it may retry: the lease goes now, so the run is resumed. */
  async release(tx: Executor, id: string, r: { at: Date; error: string }): Promise<void> {
    await tx('bulk_revocations').where({ id }).update({ error: r.error, updated_at: r.at, lease_until: r.at });
  }

  /** Takes over one running run whose lease lapsed before `now` (its process died): one taker even among replicas. */
  async claimLapsed(ex: Executor, owner: string, now: Date, leaseUntil: Date): Promise<BulkRevocationRow | undefined> {
    const r = await ex.raw(
      `update bulk_revocations set lease_owner = ?, lease_until = ?, updated_at = ?
        where id = (select id from bulk_revocations where status = 'running' and lease_until < ? order by started_at, id limit 1 for update skip locked)
        returning *`,
      [owner, leaseUntil, now, now],
    );
    const rows = (r as { rows: Record<string, unknown>[] }).rows;
    return rows[0] ? fromRow(rows[0]) : undefined;
  }
}
