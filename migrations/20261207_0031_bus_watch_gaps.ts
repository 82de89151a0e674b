import type { Knex } from 'knex';

/**
 * The bus watch's gaps (issue 26): per broker and source, when the watch could not see the bus
 * (`from_at` .. `to_at`, null while open) and why (the session dropped, the broker went down, the
 * source could not start, the log file is missing, the watch was not running). Ids are made by the
 * watch, so a gap kept in memory while PostgreSQL was away is written later with the same id.
 * `bus_watch_marks` holds, per broker, the last time a watch process knew the broker watched: a
 * process that ends without closing its books leaves a gap from there, which the next one records.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('bus_watch_gaps', (t) => {
    t.text('id').primary();
    t.text('broker').notNullable();
    t.text('source').notNullable();
    t.timestamp('from_at', { useTz: true }).notNullable();
    t.timestamp('to_at', { useTz: true });
    t.text('why').notNullable();
    t.text('detail');
    t.text('process').notNullable();
    t.index(['broker', 'from_at']);
  });
  await knex.raw('create index bus_watch_gaps_open_idx on bus_watch_gaps (broker) where to_at is null');
  await knex.schema.createTable('bus_watch_marks', (t) => {
    t.text('broker').primary();
    t.timestamp('watched_until', { useTz: true }).notNullable();
    t.text('process').notNullable();
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('bus_watch_marks');
  await knex.schema.dropTable('bus_watch_gaps');
}
