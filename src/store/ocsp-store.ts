import { prepared, type Executor } from './db.js';

/** What OCSP needs of a certificate: which CA issued it and its revocation state. */
export interface OcspStatusRow {
  serial: Buffer;
  caId: string;
  status: 'pending' | 'issued' | 'failed' | 'revoked';
  revokedAt: Date | null;
  revocationReason: string | null;
}

export interface PresignedRow {
  der: Buffer;
  thisUpdate: Date;
  nextUpdate: Date;
}

export interface OcspLookup extends OcspStatusRow {
  /** The stored pre-signed response for the hash algorithm asked for, if any. */
  presigned: PresignedRow | null;
}

/** The channel replicas LISTEN on: a payload is a comma-separated list of serials (hex), or `*` for all. */
export const OCSP_CHANNEL = 'mqtt_ca_ocsp';

function statusFromRow(r: Record<string, unknown>): OcspStatusRow {
  return {
    serial: Buffer.from(r.serial as Uint8Array),
    caId: r.ca_id as string,
    status: r.status as OcspStatusRow['status'],
    revokedAt: r.revoked_at ? new Date(r.revoked_at as string) : null,
    revocationReason: (r.revocation_reason as string | null) ?? null,
  };
}

/** Pre-signed OCSP responses, shared by every responder replica (see migration 0007 for the invariant). */
export class OcspStore {
  /** A certificate's state and its stored response for one hash algorithm, in one round trip. */
  async lookup(ex: Executor, serial: Buffer, hashAlgorithm: string): Promise<OcspLookup | undefined> {
    const r = await prepared(
      ex,
      'ocsp-lookup',
      `select c.serial, c.ca_id, c.status, c.revoked_at, c.revocation_reason, r.der, r.this_update, r.next_update
         from certificates c left join ocsp_responses r on r.serial = c.serial and r.hash_algorithm = ?
        where c.serial = ?`,
      [hashAlgorithm, serial],
    );
    const row = r.rows[0] as Record<string, unknown> | undefined;
    if (!row) return undefined;
    return {
      ...statusFromRow(row),
      presigned: row.der
        ? {
            der: Buffer.from(row.der as Uint8Array),
            thisUpdate: new Date(row.this_update as string),
            nextUpdate: new Date(row.next_update as string),
          }
        : null,
    };
  }

  /** The states of several certificates (missing serials are simply absent). */
  async statuses(ex: Executor, serials: Buffer[]): Promise<OcspStatusRow[]> {
    const r = await ex.raw(`select serial, ca_id, status, revoked_at, revocation_reason from certificates where serial = any(?::bytea[])`, [
      serials,
    ]);
    return (r.rows as Record<string, unknown>[]).map(statusFromRow);
  }

  /**
   * Stores a response only while the certificate is still in the state it answers. The share lock
   * orders this against a revocation: either the revocation waits for this insert and then deletes
   * the row, or this insert waits for the revocation and then finds the state changed.
   */
  async saveIfCurrent(
    ex: Executor,
    serial: Buffer,
    hashAlgorithm: string,
    answered: { status: string; revocationReason: string | null },
    row: PresignedRow,
  ): Promise<boolean> {
    const r = await prepared(
      ex,
      'ocsp-save',
      `insert into ocsp_responses (serial, hash_algorithm, der, this_update, next_update)
       select c.serial, ?, ?, ?, ? from certificates c
        where c.serial = ? and c.status = ? and c.revocation_reason is not distinct from ?
          for share
       on conflict (serial, hash_algorithm) do update
          set der = excluded.der, this_update = excluded.this_update, next_update = excluded.next_update
        where ocsp_responses.this_update <= excluded.this_update
       returning serial`,
      [hashAlgorithm, row.der, row.thisUpdate, row.nextUpdate, serial, answered.status, answered.revocationReason],
    );
    return (r.rows as unknown[]).length > 0;
  }

  /** Stored responses signed before `before` (oldest first), with their certificates' states. */
  async signedBefore(ex: Executor, before: Date, limit: number): Promise<(OcspStatusRow & { hashAlgorithm: string })[]> {
    const r = await ex.raw(
      `select c.serial, c.ca_id, c.status, c.revoked_at, c.revocation_reason, r.hash_algorithm
         from ocsp_responses r join certificates c on c.serial = r.serial
        where r.this_update < ? order by r.this_update limit ?`,
      [before, limit],
    );
    return (r.rows as Record<string, unknown>[]).map((row) => ({ ...statusFromRow(row), hashAlgorithm: row.hash_algorithm as string }));
  }

  /** Drops the stored responses of certificates whose state is changing (call inside that transaction). */
  async forget(tx: Executor, serials: Buffer[]): Promise<void> {
    if (serials.length === 0) return;
    await tx.raw('delete from ocsp_responses where serial = any(?::bytea[])', [serials]);
  }

  /** Tells every replica listening on OCSP_CHANNEL; delivered when `tx` commits, not before. */
  async notify(tx: Executor, payload: string): Promise<void> {
    await tx.raw('select pg_notify(?, ?)', [OCSP_CHANNEL, payload]);
  }
}
