import { AUDIT_APPEND_LOCK } from './audit-store.js';
import { prepared, type Executor } from './db.js';

/** What OCSP needs of a certificate: which CA issued it and its revocation state. */
export interface OcspStatusRow {
  serial: Buffer;
  caId: string;
  /** The certificate's profile: its OCSP responses' validity depends on it (brokers staple short-lived ones). */
  profile: string;
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

/**
 * The channel replicas LISTEN on: a payload is a comma-separated list of serials (hex), or `*` for
 * all, followed in the same transaction by `@<epoch>`, the change's number (see OcspStore.bumpEpoch).
 */
export const OCSP_CHANNEL = 'mqtt_ca_ocsp';

/** The settings row counting revocation changes, in commit order. */
const EPOCH_KEY = 'ocsp.revocation-epoch';

function statusFromRow(r: Record<string, unknown>): OcspStatusRow {
  return {
    serial: Buffer.from(r.serial as Uint8Array),
    caId: r.ca_id as string,
    profile: r.profile as string,
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
      `select c.serial, c.ca_id, c.profile, c.status, c.revoked_at, c.revocation_reason, r.der, r.this_update, r.next_update
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
    const r = await ex.raw(
      `select serial, ca_id, profile, status, revoked_at, revocation_reason from certificates where serial = any(?::bytea[])`,
      [serials],
    );
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

  /**
   * Stored responses signed before their profile's cutoff (`cutoffs[profile]`, else `otherwise`),
   * oldest first, with their certificates' states: what the refresh re-signs.
   */
  async signedBefore(
    ex: Executor,
    cutoffs: Readonly<Record<string, Date>>,
    otherwise: Date,
    limit: number,
  ): Promise<(OcspStatusRow & { hashAlgorithm: string })[]> {
    const named = Object.entries(cutoffs);
    const latest = new Date(Math.max(otherwise.getTime(), ...named.map(([, d]) => d.getTime())));
    const due = named.length
      ? `case ${named.map(() => 'when c.profile = ? then r.this_update < ?').join(' ')} else r.this_update < ? end`
      : 'r.this_update < ?';
    const r = await ex.raw(
      `select c.serial, c.ca_id, c.profile, c.status, c.revoked_at, c.revocation_reason, r.hash_algorithm
         from ocsp_responses r join certificates c on c.serial = r.serial
        where r.this_update < ? and (${due})
        order by r.this_update limit ?`,
      [latest, ...named.flatMap(([profile, d]) => [profile, d]), otherwise, limit],
    );
    return (r.rows as Record<string, unknown>[]).map((row) => ({ ...statusFromRow(row), hashAlgorithm: row.hash_algorithm as string }));
  }

  /** Drops the stored responses of certificates whose state is changing (call inside that transaction). */
  async forget(tx: Executor, serials: Buffer[]): Promise<void> {
    if (serials.length === 0) return;
    await tx.raw('delete from ocsp_responses where serial = any(?::bytea[])', [serials]);
  }

  /**
   * Counts a revocation change inside `tx` and returns its number: changes commit in this order
   * (the row is locked until `tx` ends), and the number is visible to others once `tx` commits.
   * The audit append lock is taken first: a revoking transaction appends to the audit log too, so
   * every transaction that holds the counter holds that lock already, and none waits for the
   * counter while holding the audit lock another needs (no deadlock, whatever the order of appends).
   */
  async bumpEpoch(tx: Executor): Promise<number> {
    await tx.raw('select pg_advisory_xact_lock(?::bigint)', [AUDIT_APPEND_LOCK]);
    const r = await tx.raw(
      `insert into settings (key, value, updated_at) values (?, '1'::jsonb, now())
       on conflict (key) do update set value = to_jsonb((settings.value #>> '{}')::bigint + 1), updated_at = now()
       returning (value #>> '{}')::bigint as epoch`,
      [EPOCH_KEY],
    );
    return Number((r.rows[0] as { epoch: string | number }).epoch);
  }

  /** The number of the last committed revocation change (0: none yet). */
  async epoch(ex: Executor): Promise<number> {
    const r = await prepared(ex, 'ocsp-epoch', `select (value #>> '{}')::bigint as epoch from settings where key = ?`, [EPOCH_KEY]);
    const row = r.rows[0] as { epoch: string | number } | undefined;
    return row ? Number(row.epoch) : 0;
  }

  /** Tells every replica listening on OCSP_CHANNEL; delivered when `tx` commits, not before. */
  async notify(tx: Executor, payload: string): Promise<void> {
    await tx.raw('select pg_notify(?, ?)', [OCSP_CHANNEL, payload]);
  }
}
