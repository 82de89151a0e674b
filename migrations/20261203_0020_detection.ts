import type { Knex } from 'knex';

/**
 * Detection (#7): the addresses each API key has been used from (a key seen from a new one is a
 * security event), and indexes for the event list's filters, each ending in the id it pages by.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('api_key_addresses', (t) => {
    t.text('key_id').notNullable().references('id').inTable('api_keys').onDelete('cascade');
    t.text('address').notNullable();
    t.timestamp('first_seen_at', { useTz: true }).notNullable();
    t.primary(['key_id', 'address']);
  });
  await knex.raw('create index security_events_kind_id on security_events (kind, id)');
  await knex.raw('create index security_events_source_id on security_events (source, id) where source is not null');
  await knex.raw('create index security_events_subject_id on security_events (subject, id) where subject is not null');
}

export async function down(knex: Knex): Promise<void> {
  for (const i of ['security_events_subject_id', 'security_events_source_id', 'security_events_kind_id']) await knex.raw(`drop index ${i}`);
  await knex.schema.dropTable('api_key_addresses');
}
