import type { Executor } from './db.js';

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
  notBefore: Date;
  notAfter: Date;
  createdAt: Date;
  /** The certificate this one renews, for the lineage. */
  renewedFrom?: Buffer | null;
}

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
}

export interface CertificateFilter {
  caId?: string | undefined;
  status?: CertificateStatus | undefined;
  profile?: string | undefined;
  deviceId?: string | undefined;
  expiringBefore?: Date | undefined;
}

const COLUMNS = [
  'serial', 'ca_id', 'profile', 'status', 'subject_cn', 'device_id', 'der', 'not_before', 'not_after',
  'created_at', 'issued_at', 'failure', 'renewed_from',
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
  };
}

/** Keyset cursor over (created_at, serial), newest first. */
export interface CertificateCursor {
  createdAt: Date;
  serial: Buffer;
}

export class CertificateStore {
  /** One statement for the whole batch. A duplicate serial fails the statement, so nothing half-lands. */
  async insertIntents(db: Executor, rows: IntentRow[]): Promise<void> {
    if (rows.length === 0) return;
    await db('certificates').insert(
      rows.map((r) => ({
        serial: r.serial,
        ca_id: r.caId,
        profile: r.profile,
        status: 'pending',
        subject_cn: r.subjectCn,
        device_id: r.deviceId,
        tbs_der: r.tbsDer,
        spki_sha256: r.spkiSha256,
        not_before: r.notBefore,
        not_after: r.notAfter,
        created_at: r.createdAt,
        renewed_from: r.renewedFrom ?? null,
      })),
    );
  }

  /** Stores the signed DER of pending intents, in one statement; returns how many rows it completed. */
  async completeIssued(db: Executor, rows: { serial: Buffer; der: Buffer }[], issuedAt: Date): Promise<number> {
    if (rows.length === 0) return 0;
    const values = rows.map(() => '(?::bytea, ?::bytea)').join(', ');
    const bindings: (Date | Buffer)[] = [issuedAt];
    for (const r of rows) bindings.push(r.serial, r.der);
    const result = await db.raw(
      `update certificates as c set der = v.der, status = 'issued', issued_at = ?
         from (values ${values}) as v(serial, der)
        where c.serial = v.serial and c.status = 'pending'`,
      bindings,
    );
    return Number(result.rowCount ?? result.affectedRows ?? 0);
  }

  async markFailed(db: Executor, serials: Buffer[], failure: string): Promise<void> {
    if (serials.length === 0) return;
    await db('certificates').whereIn('serial', serials).andWhere({ status: 'pending' }).update({ status: 'failed', failure });
  }

  /**
   * Intents whose process died between recording and signing. Nothing was released for them
   * (the signed DER is only returned after it is stored), so they are closed as failed.
   */
  async failStalePending(db: Executor, createdBefore: Date, failure: string): Promise<Buffer[]> {
    const rows = await db('certificates')
      .where('status', 'pending')
      .andWhere('created_at', '<', createdBefore)
      .update({ status: 'failed', failure })
      .returning('serial');
    return rows.map((r: { serial: Uint8Array }) => Buffer.from(r.serial));
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
    const rows = await q.orderBy([{ column: 'created_at', order: 'desc' }, { column: 'serial', order: 'desc' }]).limit(page.limit);
    return rows.map(fromRow);
  }

  async countByStatus(db: Executor): Promise<Record<string, number>> {
    const rows = (await db('certificates').select('status').count({ n: 'serial' }).groupBy('status')) as { status: string; n: unknown }[];
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }
}
