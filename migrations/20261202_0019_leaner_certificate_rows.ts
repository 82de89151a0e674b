import type { Knex } from 'knex';

/**
 * Smaller certificate rows and fewer index entries on the enrollment hot path:
 * - `renewed_from` is indexed only where it is set: a first certificate (every factory enrollment)
 *   adds no entry, and lineage lookups (`renewed_from = ?`) use the partial index all the same.
 * - `tbs_der`, the intended certificate recorded before signing, is cleared once the signed DER
 *   (which contains it) is stored: it stays on record for pending and failed intents, and an issued
 *   row no longer carries the same ~400 bytes twice in its heap tuple and its WAL. Rows issued
 *   before this migration keep theirs (no rewrite of a large table on deploy).
 * Measured with pg_stat_statements during the enrollment benchmark: the certificate update inside
 * issuance_complete fell from 1.20× to 1.04× the cost of the device update beside it.
 */
const SIGNATURE = 'issuance_complete(bigint, bigint, bytea, jsonb, bytea[], bytea[], timestamptz, text[], bytea[], timestamptz[], text[])';
const STORE_DER = "set der = v.der, status = 'issued'";
const STORE_DER_DROP_TBS = "set der = v.der, tbs_der = null, status = 'issued'";

export async function up(knex: Knex): Promise<void> {
  await knex.raw('drop index certificates_renewed_from_index');
  await knex.raw('create index certificates_renewed_from_index on certificates (renewed_from) where renewed_from is not null');
  await knex.raw('alter table certificates alter column tbs_der drop not null');
  await knex.raw(await completionChanged(knex, STORE_DER, STORE_DER_DROP_TBS));
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(await completionChanged(knex, STORE_DER_DROP_TBS, STORE_DER));
  await knex.raw('drop index certificates_renewed_from_index');
  await knex.raw('create index certificates_renewed_from_index on certificates (renewed_from)');
  // tbs_der stays nullable: an issued certificate's DER holds it, and it is not rebuilt here.
}

/**
 * issuance_complete's definition as it stands (0017's body with 0018's settings, which CREATE OR
 * REPLACE would otherwise drop), with its certificate update's SET list changed.
 */
async function completionChanged(knex: Knex, from: string, to: string): Promise<string> {
  const def = ((await knex.raw('select pg_get_functiondef(?::regprocedure) as def', [SIGNATURE])).rows[0] as { def: string }).def;
  if (!def.includes(from)) throw new Error(`${SIGNATURE} does not hold the certificate update this migration changes`);
  return def.replace(from, to);
}
