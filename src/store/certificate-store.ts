import type { Knex } from 'knex';
import { prepared, type Executor } from './db.js';
import { packedBytea } from './packed-bytea.js';
import { AUDIT_APPEND_LOCK, auditPayload, type AuditRow } from './audit-store.js';

export type CertificateStatus = 'pending' | 'issued' | 'failed' | 'revoked';

/** The intended certificate, recorded before anything is signed. */
export interface IntentRow {
  serial: Buffer;
  caId: string;
  profile: string;
  subjectCn: string;
  deviceId: string | null;
  tbsDer: Buffer;
  spkiSha256: Buffer;
  /** The subject key's type as the crypto inventory counts it: keyTypeLabel (src/ca/x509/spki.ts) of the SPKI. */
  keyType: string;
  notBefore: Date;
  notAfter: Date;
  createdAt: Date;
  /** The certificate this one renews, for the lineage. */
  renewedFrom?: Buffer | null;
  /** The CRL shard its CRL distribution point names (0: the CA's one CRL). */
  crlShard?: number;
}

/** A device's newest certificate, and the status registration expects it in when that commits. */
export interface DeviceIssuedRow {
  deviceId: string;
  serial: Buffer;
  notAfter: Date;
  expectedStatus: 'registered' | 'active';
}

export type CompletionOutcome =
  | { done: true }
  | { done: false; reason: 'head-moved'; head: { seq: number; hash: Buffer } | undefined }
  | { done: false; reason: 'registration-changed' };

export interface CertificateRow {
  serial: Buffer;
  caId: string;
  profile: string;
  status: CertificateStatus;
  subjectCn: string;
  deviceId: string | null;
  der: Buffer | null;
  notBefore: Date;
  notAfter: Date;
  createdAt: Date;
  issuedAt: Date | null;
  failure: string | null;
  renewedFrom: Buffer | null;
  revokedAt: Date | null;
  revocationReason: string | null;
  invalidityDate: Date | null;
}

export interface CertificateFilter {
  caId?: string | undefined;
  status?: CertificateStatus | undefined;
  profile?: string | undefined;
  deviceId?: string | undefined;
  expiringBefore?: Date | undefined;
}

const COLUMNS = [
  'serial',
  'ca_id',
  'profile',
  'status',
  'subject_cn',
  'device_id',
  'der',
  'not_before',
  'not_after',
  'created_at',
  'issued_at',
  'failure',
  'renewed_from',
  'revoked_at',
  'revocation_reason',
  'invalidity_date',
];

function fromRow(r: Record<string, unknown>): CertificateRow {
  return {
    serial: Buffer.from(r.serial as Uint8Array),
    caId: r.ca_id as string,
    profile: r.profile as string,
    status: r.status as CertificateStatus,
    subjectCn: r.subject_cn as string,
    deviceId: (r.device_id as string | null) ?? null,
    der: r.der == null ? null : Buffer.from(r.der as Uint8Array),
    notBefore: new Date(r.not_before as string),
    notAfter: new Date(r.not_after as string),
    createdAt: new Date(r.created_at as string),
    issuedAt: r.issued_at == null ? null : new Date(r.issued_at as string),
    failure: (r.failure as string | null) ?? null,
    renewedFrom: r.renewed_from == null ? null : Buffer.from(r.renewed_from as Uint8Array),
    revokedAt: r.revoked_at == null ? null : new Date(r.revoked_at as string),
    revocationReason: (r.revocation_reason as string | null) ?? null,
    invalidityDate: r.invalidity_date == null ? null : new Date(r.invalidity_date as string),
  };
}

/** Which certificates a bulk revocation takes: every given criterion must hold. */
export interface RevocationSelector {
  serials?: Buffer[] | undefined;
  deviceIds?: string[] | undefined;
  lot?: string | undefined;
  caId?: string | undefined;
  issuedAfter?: Date | undefined;
  issuedBefore?: Date | undefined;
  /** Every certificate of this one's renewal lineage: its ancestors and all their descendants. */
  lineageOf?: Buffer | undefined;
  /**
   * A key compromise: the certificates the other criteria match, and with them every certificate
   * still unexpired at this time of a device they belong to or of their renewal lineages.
   */
  withDevicesUnexpiredAt?: Date | undefined;
}

/** A selector by lot and/or devices alone already takes every certificate of its devices (and a device's renewals are its own). */
export function takesWholeDevices(sel: RevocationSelector): boolean {
  return (
    (sel.lot !== undefined || sel.deviceIds !== undefined) &&
    [sel.serials, sel.caId, sel.issuedAfter, sel.issuedBefore, sel.lineageOf].every((c) => c === undefined)
  );
}

/**
 * The serials a key compromise takes, for `seeds` (a query of serial, device_id, renewed_from of
 * the matched certificates): the seeds, every certificate of their devices and of their renewal
 * lineages (ancestors and all their descendants) unexpired at the time bound twice after the
 * seeds' bindings. By device_id's and renewed_from's indexes.
 */
const withDevicesSql = (seeds: string) => `with recursive seeds as (${seeds}),
  up(serial, renewed_from) as (
    select serial, renewed_from from seeds
    union select p.serial, p.renewed_from from certificates p join up on p.serial = up.renewed_from),
  lineage(serial) as (
    select serial from up
    union select k.serial from certificates k join lineage on k.renewed_from = lineage.serial)
  select serial from seeds
  union select k.serial from certificates k where k.device_id in (select device_id from seeds) and k.not_after > ?
  union select k.serial from lineage l join certificates k on k.serial = l.serial where k.not_after > ?`;

/** One certificate's key-compromise set (see withDevicesSql), locked in serial order. */
const LOCK_KEY_COMPROMISE_SET = `select ${COLUMNS.join(', ')} from certificates
  where profile <> 'ca' and serial in (${withDevicesSql('select serial, device_id, renewed_from from certificates where serial = ?')})
  order by serial for update`;

/** Revocable by `reason`: issued, or on hold when the reason makes the hold permanent. */
function revocable(q: Knex.QueryBuilder, reason: string): void {
  q.where((w) => {
    w.where('c.status', 'issued');
    if (reason !== 'certificateHold') w.orWhere((h) => h.where('c.status', 'revoked').andWhere('c.revocation_reason', 'certificateHold'));
  });
}

/** A revocation's state, as set on the certificates it takes. */
export interface Revoking {
  reason: string;
  at: Date;
  invalidityDate: Date | null;
}

/** A certificate a revocation took. */
export interface RevokedRow {
  serial: Buffer;
  caId: string;
  deviceId: string | null;
}

/** Keyset cursor over (created_at, serial), newest first. */
export interface CertificateCursor {
  createdAt: Date;
  serial: Buffer;
}

export class CertificateStore {
  /**
   * One statement for the whole batch. A duplicate serial fails the statement, so nothing half-lands.
   * With `asyncCommit` (only on the root executor, never inside a transaction whose commit releases
   * something), committed without waiting for the WAL flush (`synchronous_commit` off for this
   * statement's own transaction): a signed certificate is released only after completeIssued()'s transaction
   * commits synchronously, WAL is flushed in order, so by then the intent is durable too; an
   * intent lost in a database crash before that makes completeIssued() find fewer rows than it
   * was given, and the batch fails without releasing anything.
   */
  async insertIntents(db: Executor, rows: IntentRow[], opts: { asyncCommit?: boolean } = {}): Promise<void> {
    if (rows.length === 0) return;
    if (opts.asyncCommit && (db as Knex.Transaction).isTransaction)
      throw new Error('insertIntents: asyncCommit is for a statement of its own');
    await prepared(
      db,
      opts.asyncCommit ? 'certificate-intents-async' : 'certificate-intents',
      `${opts.asyncCommit ? "with async_commit as (select set_config('synchronous_commit', 'off', true) as v)" : ''}
       insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, tbs_der, spki_sha256, key_type,
                                 not_before, not_after, created_at, renewed_from, crl_shard)
       select serial, ca_id, profile, 'pending', subject_cn, device_id, tbs_der, spki_sha256, key_type,
              not_before, not_after, created_at, renewed_from, crl_shard
         from ${opts.asyncCommit ? 'async_commit, ' : ''}unnest(bytea_split(?::bytea, ?::int[]), ?::text[], ?::text[], ?::text[], ?::text[],
                     bytea_split(?::bytea, ?::int[]), bytea_split(?::bytea, ?::int[]), ?::text[],
                     ?::timestamptz[], ?::timestamptz[], ?::timestamptz[], bytea_split(?::bytea, ?::int[]), ?::int[])
           as r(serial, ca_id, profile, subject_cn, device_id, tbs_der, spki_sha256, key_type, not_before, not_after, created_at, renewed_from, crl_shard)`,
      [
        ...packedBytea(rows.map((r) => r.serial)),
        rows.map((r) => r.caId),
        rows.map((r) => r.profile),
        rows.map((r) => r.subjectCn),
        rows.map((r) => r.deviceId),
        ...packedBytea(rows.map((r) => r.tbsDer)),
        ...packedBytea(rows.map((r) => r.spkiSha256)),
        rows.map((r) => r.keyType),
        rows.map((r) => r.notBefore),
        rows.map((r) => r.notAfter),
        rows.map((r) => r.createdAt),
        ...packedBytea(rows.map((r) => r.renewedFrom ?? null)),
        rows.map((r) => r.crlShard ?? 0),
      ],
    );
  }

  /**
   * Stores the signed DER of pending intents, in one statement; returns how many rows it completed.
   * Planned on every call, not prepared: the general commit path is the rare one, and a plan kept
   * from when the table was small would scan it whole (migration 0018).
   */
  async completeIssued(db: Executor, rows: { serial: Buffer; der: Buffer }[], issuedAt: Date): Promise<number> {
    if (rows.length === 0) return 0;
    const result = await db.raw(
      `update certificates as c set der = v.der, tbs_der = null, status = 'issued', issued_at = ?
         from unnest(bytea_split(?::bytea, ?::int[]), bytea_split(?::bytea, ?::int[])) as v(serial, der)
        where c.serial = v.serial and c.status = 'pending'`,
      [issuedAt, ...packedBytea(rows.map((r) => r.serial)), ...packedBytea(rows.map((r) => r.der))],
    );
    return Number(result.rowCount ?? result.affectedRows ?? 0);
  }

  /**
   * A batch's whole commit as one statement in its own transaction (migration 0017): the DER of
   * each pending intent, each device's newest certificate (and registered → active), and the
   * audit rows, chained on `head`. Nothing changes unless all of it holds: a device not in its
   * expected status, or an audit head other than `head`, is an outcome to act on; an intent no
   * longer pending is an error.
   */
  async completeWithRegistration(
    db: Executor,
    c: {
      certificates: { serial: Buffer; der: Buffer }[];
      issuedAt: Date;
      devices: DeviceIssuedRow[];
      head: { seq: number; hash: Buffer } | undefined;
      audit: AuditRow[];
    },
  ): Promise<CompletionOutcome> {
    if ((db as Knex.Transaction).isTransaction)
      throw new Error('completeWithRegistration: a statement of its own, not inside a transaction');
    try {
      await prepared(
        db,
        'issuance-complete',
        `select issuance_complete(?::bigint, ?::bigint, ?::bytea, ?::jsonb, bytea_split(?::bytea, ?::int[]), bytea_split(?::bytea, ?::int[]),
                                  ?::timestamptz, ?::text[], bytea_split(?::bytea, ?::int[]), ?::timestamptz[], ?::text[])`,
        [
          AUDIT_APPEND_LOCK,
          c.head?.seq ?? 0,
          c.head?.hash ?? null,
          auditPayload(c.audit),
          ...packedBytea(c.certificates.map((r) => r.serial)),
          ...packedBytea(c.certificates.map((r) => r.der)),
          c.issuedAt,
          c.devices.map((d) => d.deviceId),
          ...packedBytea(c.devices.map((d) => d.serial)),
          c.devices.map((d) => d.notAfter),
          c.devices.map((d) => d.expectedStatus),
        ],
      );
      return { done: true };
    } catch (e) {
      const { code, detail } = e as { code?: string; detail?: string };
      if (code === 'MCA02') return { done: false, reason: 'registration-changed' };
      if (code === 'MCA03') {
        const [seq, hash] = (detail ?? '').split(':');
        return {
          done: false,
          reason: 'head-moved',
          head: Number(seq) > 0 ? { seq: Number(seq), hash: Buffer.from(hash!, 'hex') } : undefined,
        };
      }
      throw e;
    }
  }

  /**
   * Removes intents that will never be signed because registration refused their requests while
   * they were recorded: nothing was signed for them, so there is nothing to account for, and a
   * refused enrollment leaves no certificate row, as one refused before its intent does.
   */
  async discardUnsigned(db: Executor, serials: Buffer[]): Promise<void> {
    if (serials.length === 0) return;
    await db('certificates').whereIn('serial', serials).andWhere({ status: 'pending' }).whereNull('der').delete();
  }

  async markFailed(db: Executor, serials: Buffer[], failure: string): Promise<void> {
    if (serials.length === 0) return;
    await db('certificates').whereIn('serial', serials).andWhere({ status: 'pending' }).update({ status: 'failed', failure });
  }

  /**
   * Intents whose process died between recording and signing. Nothing was released for them
   * (the signed DER is only returned after it is stored), so they are closed as failed.
   */
  async failStalePending(db: Executor, createdBefore: Date, failure: string, deviceId?: string): Promise<Buffer[]> {
    const rows = await db('certificates')
      .where('status', 'pending')
      .andWhere('created_at', '<', createdBefore)
      .modify((q) => (deviceId === undefined ? q : q.andWhere('device_id', deviceId)))
      .update({ status: 'failed', failure })
      .returning('serial');
    return rows.map((r: { serial: Uint8Array }) => Buffer.from(r.serial));
  }

  /**
   * The newest certificate recorded for the device since `since` (issued, or revoked since), and
   * of that key when `spkiSha256` is given. Found by device_id's index: a device has few.
   */
  async recordedForDevice(db: Executor, deviceId: string, since: Date, spkiSha256?: Buffer): Promise<CertificateRow | undefined> {
    const r = await db('certificates')
      .select(COLUMNS)
      .where('device_id', deviceId)
      .whereIn('status', ['issued', 'revoked'])
      .andWhere('created_at', '>=', since)
      .modify((q) => (spkiSha256 === undefined ? q : q.andWhere('spki_sha256', spkiSha256)))
      .orderBy('created_at', 'desc')
      .first();
    return r ? fromRow(r) : undefined;
  }

  /** The row, locked until `tx` ends. */
  async getForUpdate(tx: Executor, serial: Buffer): Promise<CertificateRow | undefined> {
    const r = await tx('certificates').select(COLUMNS).where({ serial }).forUpdate().first();
    return r ? fromRow(r) : undefined;
  }

  /** Marks an issued (or held) certificate revoked; returns the row as it is now. */
  async setRevoked(tx: Executor, serial: Buffer, r: { reason: string; at: Date; invalidityDate: Date | null }): Promise<CertificateRow> {
    const [row] = await stamped(tx)
      .where({ serial })
      .update({
        status: 'revoked',
        revoked_at: r.at,
        revocation_reason: r.reason,
        invalidity_date: r.invalidityDate,
        revocation_seq: nextSeq(tx),
      })
      .returning(COLUMNS);
    return fromRow(row);
  }

  /** Takes a certificate off hold: issued again, with no revocation state. */
  async setReleased(tx: Executor, serial: Buffer): Promise<CertificateRow> {
    const [row] = await stamped(tx)
      .where({ serial })
      .update({ status: 'issued', revoked_at: null, revocation_reason: null, invalidity_date: null, revocation_seq: nextSeq(tx) })
      .returning(COLUMNS);
    return fromRow(row);
  }

  /**
   * The certificates a selector matches, as a query over `certificates as c` (no columns chosen).
   * CA certificates never match: a CA is revoked as a CA, under the two-person rule.
   */
  private matching(ex: Executor, sel: RevocationSelector): Knex.QueryBuilder {
    if (sel.withDevicesUnexpiredAt) {
      const seeds = this.matching(ex, { ...sel, withDevicesUnexpiredAt: undefined }).select('c.serial', 'c.device_id', 'c.renewed_from');
      return ex('certificates as c')
        .whereNot('c.profile', 'ca')
        .whereRaw(`c.serial in (${withDevicesSql('?')})`, [seeds, sel.withDevicesUnexpiredAt, sel.withDevicesUnexpiredAt]);
    }
    const q = ex('certificates as c').whereNot('c.profile', 'ca');
    if (sel.serials) q.whereIn('c.serial', sel.serials);
    if (sel.deviceIds) q.whereIn('c.device_id', sel.deviceIds);
    if (sel.lot !== undefined)
      q.whereExists((e) => e.select(ex.raw('1')).from('devices as d').whereRaw('d.id = c.device_id').andWhere('d.lot', sel.lot!));
    if (sel.caId !== undefined) q.where('c.ca_id', sel.caId);
    if (sel.issuedAfter) q.where('c.issued_at', '>=', sel.issuedAfter);
    if (sel.issuedBefore) q.where('c.issued_at', '<', sel.issuedBefore);
    if (sel.lineageOf) {
      q.whereRaw(
        `c.serial in (with recursive up(serial, renewed_from) as (
             select serial, renewed_from from certificates where serial = ?
             union select p.serial, p.renewed_from from certificates p join up on p.serial = up.renewed_from),
           lineage(serial) as (
             select serial from up
             union select k.serial from certificates k join lineage on k.renewed_from = lineage.serial)
           select serial from lineage)`,
        [sel.lineageOf],
      );
    }
    return q;
  }

  /** What a bulk revocation would do: how many it would revoke, how many are revoked already, and the first `sample` serials it would take. */
  async previewRevocation(
    ex: Executor,
    sel: RevocationSelector,
    reason: string,
    sample: number,
  ): Promise<{ revocable: number; alreadyRevoked: number; serials: Buffer[] }> {
    const counts = (await this.matching(ex, sel)
      .select(
        ex.raw(
          `count(*) filter (where c.status = 'issued' or (c.status = 'revoked' and c.revocation_reason = 'certificateHold' and ? <> 'certificateHold')) as revocable`,
          [reason],
        ),
        ex.raw(
          `count(*) filter (where c.status = 'revoked' and not (c.revocation_reason = 'certificateHold' and ? <> 'certificateHold')) as already`,
          [reason],
        ),
      )
      .first()) as { revocable: string | number; already: string | number };
    const counted = { revocable: Number(counts.revocable), alreadyRevoked: Number(counts.already) };
    if (sample === 0) return { ...counted, serials: [] };
    const q = this.matching(ex, sel).select('c.serial');
    revocable(q, reason);
    const rows = await q.orderBy('c.serial').limit(sample);
    return { ...counted, serials: rows.map((r: { serial: Uint8Array }) => Buffer.from(r.serial)) };
  }

  /**
   * A certificate and what its key compromise takes with it (the other unexpired certificates of
   * its device and of its renewal lineage), locked until the transaction ends, in serial order (so
   * two lockers of overlapping sets never deadlock). A CA's certificate is not among them.
   */
  async lockKeyCompromiseSet(tx: Executor, serial: Buffer, unexpiredAt: Date): Promise<CertificateRow[]> {
    const r = await prepared(tx, 'lock-key-compromise-set', LOCK_KEY_COMPROMISE_SET, [serial, unexpiredAt, unexpiredAt]);
    return (r.rows as Record<string, unknown>[]).map(fromRow);
  }

  /**
   * Revokes every revocable certificate the selector matches, in one statement. A hold made
   * permanent keeps its revocation time. Returns what it revoked.
   */
  async revokeMatching(tx: Executor, sel: RevocationSelector, r: Revoking): Promise<RevokedRow[]> {
    return this.revokeAmong(tx, this.matching(tx, sel).select('c.serial'), r);
  }

  /**
   * Revokes the revocable certificates among `serials` (a query of `certificates as c` or of any
   * table, `serial` selected; a bulk run passes a range of its frozen selection, so no list of
   * serials travels), in one statement. Returns what it revoked.
   */
  async revokeAmong(tx: Executor, serials: Knex.QueryBuilder, r: Revoking): Promise<RevokedRow[]> {
    const target = tx('certificates as c').select('c.serial').whereIn('c.serial', serials);
    revocable(target, r.reason);
    const rows = await stamped(tx)
      .whereIn('serial', target)
      .update({
        status: 'revoked',
        revoked_at: tx.raw(`case when status = 'revoked' then revoked_at else ?::timestamptz end`, [r.at]),
        revocation_reason: r.reason,
        invalidity_date: r.invalidityDate,
        revocation_seq: nextSeq(tx),
      })
      .returning(['serial', 'ca_id', 'device_id']);
    return rows.map((x: { serial: Uint8Array; ca_id: string; device_id: string | null }) => ({
      serial: Buffer.from(x.serial),
      caId: x.ca_id,
      deviceId: x.device_id,
    }));
  }

  /** The serials of the revocable certificates the selector matches, as a query of `certificates as c` (a bulk revocation run freezes them). */
  revocableSerials(ex: Executor, sel: RevocationSelector, reason: string): Knex.QueryBuilder {
    const q = this.matching(ex, sel).select('c.serial');
    revocable(q, reason);
    return q;
  }

  async get(db: Executor, serial: Buffer): Promise<CertificateRow | undefined> {
    const r = await db('certificates').select(COLUMNS).where({ serial }).first();
    return r ? fromRow(r) : undefined;
  }

  async list(
    db: Executor,
    filter: CertificateFilter,
    page: { cursor?: CertificateCursor | undefined; limit: number },
  ): Promise<CertificateRow[]> {
    const q = db('certificates').select(COLUMNS);
    if (filter.caId) q.where('ca_id', filter.caId);
    if (filter.status) q.where('status', filter.status);
    if (filter.profile) q.where('profile', filter.profile);
    if (filter.deviceId) q.where('device_id', filter.deviceId);
    if (filter.expiringBefore) q.where('not_after', '<', filter.expiringBefore);
    if (page.cursor) {
      q.whereRaw('(created_at, serial) < (?, ?::bytea)', [page.cursor.createdAt, page.cursor.serial]);
    }
    const rows = await q
      .orderBy([
        { column: 'created_at', order: 'desc' },
        { column: 'serial', order: 'desc' },
      ])
      .limit(page.limit);
    return rows.map(fromRow);
  }

  /**
   * The devices that hold at least one active certificate at `at` (issued, not revoked, within
   * its validity), each once, sorted: who a broker that checks no revocation may let in.
   */
  async activeDeviceIds(db: Executor, at: Date): Promise<string[]> {
    const rows = (await db('certificates')
      .distinct('device_id')
      .where('status', 'issued')
      .whereNotNull('device_id')
      .where('not_before', '<=', at)
      .where('not_after', '>', at)
      .orderBy('device_id')) as { device_id: string }[];
    return rows.map((r) => r.device_id);
  }

  async countByStatus(db: Executor): Promise<Record<string, number>> {
    const rows = (await db('certificates').select('status').count({ n: 'serial' }).groupBy('status')) as { status: string; n: unknown }[];
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }
}

/**
 * An UPDATE of certificates that takes the revocation clock's next value (set a column to
 * nextSeq): the single row of revocation_epoch is updated in a CTE and stays locked until the
 * transaction commits, so values are handed out in commit order and a snapshot that sees value S
 * sees every change up to S. The CTE runs once per statement, so a bulk revocation stamps all its
 * rows alike.
 */
function stamped(tx: Executor): Knex.QueryBuilder {
  return tx
    .with('revocation_epoch_bump', tx.raw('update revocation_epoch set seq = seq + 1 where id = 1 returning seq'))
    .from('certificates');
}
const nextSeq = (tx: Executor) => tx.raw('(select seq from revocation_epoch_bump)');
