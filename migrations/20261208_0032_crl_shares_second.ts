import type { Knex } from 'knex';

/**
 * Whether a published CRL has a thisUpdate in the same second as an earlier CRL of its partition
 * and kind (a burst of deltas during a bulk revocation). HTTP dates have whole seconds: such a
 * CRL's Last-Modified does not name it alone, so the endpoints answer an If-Modified-Since for it
 * with the body, never 304 (the client may hold the earlier one). Set once, at insert, under the
 * partition's sequence lock; existing rows are settled here. Expand only: older code ignores it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('alter table crls add column shares_second boolean not null default false');
  await knex.raw(
    `update crls c set shares_second = exists (
       select 1 from crls o
        where o.ca_id = c.ca_id and o.shard = c.shard and o.kind = c.kind and o.crl_number < c.crl_number
          and o.this_update >= date_trunc('second', c.this_update) and o.this_update < date_trunc('second', c.this_update) + interval '1 second')`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('alter table crls drop column shares_second');
}
