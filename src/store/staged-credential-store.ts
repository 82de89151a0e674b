import type { Executor } from './db.js';

export interface StagedRow {
  renews: Buffer;
  serial: Buffer | null;
  deviceId: string;
  keyAlgorithm: string;
  csrDer: Buffer;
  sealed: { kekId: string; wrappedDek: Buffer; ciphertext: Buffer } | null;
  stagedAt: Date;
  issuedAt: Date | null;
  pickedUpAt: Date | null;
}

const COLUMNS = [
  'renews',
  'serial',
  'device_id',
  'key_algorithm',
  'csr_der',
  'kek_id',
  'wrapped_dek',
  'ciphertext',
  'staged_at',
  'issued_at',
  'picked_up_at',
];
const buf = (v: unknown) => (v == null ? null : Buffer.from(v as Uint8Array));
const date = (v: unknown) => (v == null ? null : new Date(v as string));

function fromRow(r: Record<string, unknown>): StagedRow {
  return {
    renews: buf(r.renews)!,
    serial: buf(r.serial),
    deviceId: r.device_id as string,
    keyAlgorithm: r.key_algorithm as string,
    csrDer: buf(r.csr_der)!,
    sealed: r.ciphertext == null ? null : { kekId: r.kek_id as string, wrappedDek: buf(r.wrapped_dek)!, ciphertext: buf(r.ciphertext)! },
    stagedAt: new Date(r.staged_at as string),
    issuedAt: date(r.issued_at),
    pickedUpAt: date(r.picked_up_at),
  };
}

export class StagedCredentialStore {
  async get(ex: Executor, renews: Buffer, forUpdate = false): Promise<StagedRow | undefined> {
    const q = ex('staged_credentials').select(COLUMNS).where({ renews }).first();
    const r = await (forUpdate ? q.forUpdate() : q);
    return r ? fromRow(r) : undefined;
  }

  /** The key made for `renews`, unless one was made already (then that one stands). */
  async insertPending(
    ex: Executor,
    row: Omit<StagedRow, 'serial' | 'issuedAt' | 'pickedUpAt' | 'sealed'> & { sealed: NonNullable<StagedRow['sealed']> },
  ): Promise<void> {
    await ex.raw(
      `insert into staged_credentials (renews, device_id, key_algorithm, csr_der, kek_id, wrapped_dek, ciphertext, staged_at)
       values (?, ?, ?, ?, ?, ?, ?, ?) on conflict (renews) do nothing`,
      [
        row.renews,
        row.deviceId,
        row.keyAlgorithm,
        row.csrDer,
        row.sealed.kekId,
        row.sealed.wrappedDek,
        row.sealed.ciphertext,
        row.stagedAt,
      ],
    );
  }

  /** Records the certificate issued for the staged key, and that its key too was generated here. */
  async setIssued(ex: Executor, renews: Buffer, serial: Buffer, at: Date): Promise<void> {
    await ex.raw('update staged_credentials set serial = ?, issued_at = ? where renews = ? and serial is null', [serial, at, renews]);
    await this.markServerKey(ex, serial);
  }

  async markServerKey(ex: Executor, serial: Buffer): Promise<void> {
    await ex.raw(`update certificates set key_origin = 'server' where serial = ?`, [serial]);
  }

  /** Wipes the sealed key of a picked-up credential. */
  async wipe(ex: Executor, renews: Buffer, at: Date): Promise<void> {
    await ex.raw('update staged_credentials set kek_id = null, wrapped_dek = null, ciphertext = null, picked_up_at = ? where renews = ?', [
      at,
      renews,
    ]);
  }
}
