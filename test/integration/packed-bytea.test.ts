import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { dbTargets, disposeDb } from '../helpers/db.js';
import type { Db } from '../../src/store/db.js';
import { packedBytea } from '../../src/store/packed-bytea.js';

/** What bytea_split (migration 0021) makes of packedBytea's blob and lengths, read back as byte strings. */
async function split(db: Db, parts: (Uint8Array | null)[]): Promise<(Buffer | null)[]> {
  const r = await db.raw('select p from unnest(bytea_split(?::bytea, ?::int[])) with ordinality as u(p, i) order by i', packedBytea(parts));
  return (r.rows as { p: Uint8Array | null }[]).map((x) => (x.p === null ? null : Buffer.from(x.p)));
}

for (const target of dbTargets) {
  describe(`byte strings as one binary parameter, on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    before(async () => {
      db = await target.create();
    });
    after(async () => db && disposeDb(db));

    it('gives back each byte string, in order, NULLs and empty strings included', async () => {
      const parts = [randomBytes(520), null, Buffer.alloc(0), randomBytes(1), null, randomBytes(20)];
      assert.deepEqual(
        await split(db, parts),
        parts.map((p) => (p === null ? null : Buffer.from(p))),
      );
    });

    it('gives back the values a bytea[] parameter carries, for a batch of hundreds', async () => {
      const parts = Array.from({ length: 500 }, (_, i) => (i % 7 === 3 ? null : randomBytes(i % 600)));
      const r = await db.raw('select bytea_split(?::bytea, ?::int[]) = ?::bytea[] as same', [
        ...packedBytea(parts),
        parts,
      ] as Knex.RawBinding[]);
      assert.equal((r.rows as { same: boolean }[])[0]!.same, true);
    });

    it('an empty list is an empty array', async () => {
      assert.deepEqual(await split(db, []), []);
    });

    it('refuses lengths that do not add up to the blob, rather than cutting it wrong', async () => {
      for (const [blob, lengths] of [
        [Buffer.alloc(10), [4, 5]],
        [Buffer.alloc(10), [6, 6]],
        [Buffer.alloc(3), []],
      ] as const) {
        await assert.rejects(db.raw('select bytea_split(?::bytea, ?::int[])', [blob, [...lengths]]), /lengths add up to/);
      }
    });
  });
}
