import type { Knex } from 'knex';

/**
 * Idempotency-Key on the API's state-changing routes (issue #25): the same table as enrollment's
 * keys, scoped by the API key (`api-key:<id>`), with the request's method and route beside the
 * SHA-256 of its body (a key reused on another route is refused, as with another body). Rows of
 * the API expire (IDEMPOTENCY_KEY_TTL_HOURS) by `created_at`, already indexed. Enrollment's rows
 * leave both columns null.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('idempotency_keys', (t) => {
    t.text('method');
    t.text('route');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('idempotency_keys', (t) => {
    t.dropColumn('route');
    t.dropColumn('method');
  });
}
