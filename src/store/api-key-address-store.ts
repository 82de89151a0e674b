import type { Executor } from './db.js';

/** SQL for api_key_addresses: the client addresses each API key has been used from. */
export class ApiKeyAddressStore {
  /** Records the pair; returns whether it is new, and how many other addresses the key was seen from before. */
  async remember(db: Executor, keyId: string, address: string, at: Date): Promise<{ added: boolean; others: number }> {
    const inserted = await db('api_key_addresses')
      .insert({ key_id: keyId, address, first_seen_at: at })
      .onConflict(['key_id', 'address'])
      .ignore()
      .returning('key_id');
    if (inserted.length === 0) return { added: false, others: 0 };
    const row = (await db('api_key_addresses').where({ key_id: keyId }).whereNot({ address }).count({ n: '*' }).first()) as
      { n: unknown } | undefined;
    return { added: true, others: Number(row?.n ?? 0) };
  }
}
