import type { Executor } from './db.js';

export interface KeyMaterialRow {
  id: string;
  algorithm: string;
  kekId: string;
  wrappedDek: Buffer;
  ciphertext: Buffer;
  publicKey: Buffer;
  createdAt: Date;
}

const buf = (v: unknown): Buffer => Buffer.from(v as Uint8Array);

/** Wrapped private keys; rows hold only ciphertext. */
export class KeyMaterialStore {
  async insert(db: Executor, row: KeyMaterialRow): Promise<void> {
    await db('key_material').insert({
      id: row.id,
      algorithm: row.algorithm,
      kek_id: row.kekId,
      wrapped_dek: row.wrappedDek,
      ciphertext: row.ciphertext,
      public_key: row.publicKey,
      created_at: row.createdAt,
    });
  }

  async get(db: Executor, id: string): Promise<KeyMaterialRow | undefined> {
    const r = await db('key_material')
      .select('id', 'algorithm', 'kek_id', 'wrapped_dek', 'ciphertext', 'public_key', 'created_at')
      .where({ id })
      .first();
    if (!r) return undefined;
    return {
      id: r.id,
      algorithm: r.algorithm,
      kekId: r.kek_id,
      wrappedDek: buf(r.wrapped_dek),
      ciphertext: buf(r.ciphertext),
      publicKey: buf(r.public_key),
      createdAt: new Date(r.created_at),
    };
  }

  async count(db: Executor): Promise<number> {
    const [r] = await db('key_material').count({ n: 'id' });
    return Number(r?.n ?? 0);
  }

  async kekIds(db: Executor): Promise<string[]> {
    const rows = await db('key_material').distinct('kek_id');
    return rows.map((r: { kek_id: string }) => r.kek_id);
  }
}

export class SettingsStore {
  async get<T>(db: Executor, key: string): Promise<T | undefined> {
    const r = await db('settings').select('value').where({ key }).first();
    return r ? (r.value as T) : undefined;
  }

  async set(db: Executor, key: string, value: unknown): Promise<void> {
    await db('settings')
      .insert({ key, value: JSON.stringify(value), updated_at: new Date() })
      .onConflict('key')
      .merge(['value', 'updated_at']);
  }
}
