import type { Knex } from 'knex';

/**
 * Bulk revocations as recorded runs (#29): a selection frozen when the run starts (its serials
 * listed in bulk_revocation_serials), revoked in chunks by serial order, each chunk in its own transaction that also advances `cursor` (the last serial
 * done) and the counts, so a run a crash interrupted resumes after its cursor. `lease_owner` and
 * `lease_until` say which process is running it: a run still `running` whose lease has lapsed was
 * left by a dead process and is taken over by one other. A new table only: safe before and after
 * the code that uses it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('bulk_revocations', (t) => {
    t.text('id').primary();
    /** The frozen selector (serials and lineageOf as hex, dates as ISO strings). */
    t.jsonb('selector').notNullable();
    t.text('reason').notNullable();
    t.timestamp('invalidity_date', { useTz: true });
    /** The actor (and request) the audit entries of every chunk name. */
    t.text('actor').notNullable();
    t.text('request_id');
    /** What started it when not an API call of its own, e.g. `incident:<id>`. */
    t.text('origin');
    t.text('status').notNullable().checkIn(['running', 'done', 'failed']);
    t.integer('matched').notNullable();
    t.integer('revoked').notNullable().defaultTo(0);
    t.integer('already_revoked').notNullable();
    t.integer('chunks').notNullable().defaultTo(0);
    t.binary('cursor');
    t.text('error');
    t.text('lease_owner');
    t.timestamp('lease_until', { useTz: true });
    t.timestamp('started_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.timestamp('finished_at', { useTz: true });
    t.index(['origin']);
  });
  await knex.raw(`create index bulk_revocations_running on bulk_revocations (lease_until) where status = 'running'`);
  // The frozen selection itself: the serials a run still has to do, walked by its primary key in
  // serial order, each chunk's rows deleted with the chunk (the selector's own query, re-run per
  // chunk, is planned as a scan of the whole selection every time).
  await knex.schema.createTable('bulk_revocation_serials', (t) => {
    t.text('run_id').notNullable().references('id').inTable('bulk_revocations').onDelete('CASCADE');
    t.binary('serial').notNullable();
    t.primary(['run_id', 'serial']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('bulk_revocation_serials');
  await knex.schema.dropTable('bulk_revocations');
}
