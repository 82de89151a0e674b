import type { Executor } from './db.js';

/** One-time proofs: a digest can be used once until it expires. */
export class ReplayStore {
  /** True when the digest was not seen before (and is now recorded). */
  async useOnce(db: Executor, digest: Buffer, expiresAt: Date): Promise<boolean> {
    const r = await db.raw('insert into replay_guard (digest, expires_at) values (?, ?) on conflict do nothing returning digest', [
      digest,
      expiresAt,
    ]);
    return r.rows.length === 1;
  }

  async purge(db: Executor, now: Date): Promise<number> {
    return db('replay_guard').where('expires_at', '<', now).delete();
  }
}
