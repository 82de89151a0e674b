import type { Knex } from 'knex';

/**
 * API-key lineage (#23): the key that created each key (`created_by_key`; null for keys made by
 * bootstrap, the CLI or ADMIN_API_KEY), so the two-person rule can refuse an approver the proposer
 * made, directly or through keys it made. Keys created through the API before this migration name
 * their creator in `created_by` as `api-key:<id>`: that is copied over. Nullable and ignored by older
 * code, so it is safe before and after the code that reads it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('api_keys', (t) => {
    t.text('created_by_key').references('id').inTable('api_keys');
    t.index(['created_by_key']);
  });
  await knex.raw(`
    update api_keys k set created_by_key = p.id
      from api_keys p
     where k.created_by = 'api-key:' || p.id and k.created_by_key is null and p.id <> k.id`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('api_keys', (t) => {
    t.dropIndex(['created_by_key']);
    t.dropColumn('created_by_key');
  });
}
