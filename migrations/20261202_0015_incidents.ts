import type { Knex } from 'knex';

/**
 * Incidents (Respond and Recover): an incident with its targets, and its timeline of steps, each
 * an action (or its dry run) with who ran it, what it touched and how it ended. Additive only.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('incidents', (t) => {
    t.text('id').primary();
    t.text('kind').notNullable();
    t.text('title').notNullable();
    t.text('description');
    t.text('status').notNullable(); // open | closed
    t.jsonb('targets').notNullable(); // { devices, lots, brokers, caId }
    t.integer('steps').notNullable().defaultTo(0); // the timeline's length: the next step's number
    t.text('opened_by').notNullable();
    t.timestamp('opened_at', { useTz: true }).notNullable();
    t.text('closed_by');
    t.timestamp('closed_at', { useTz: true });
    t.text('summary');
    t.check(
      "kind in ('device-compromise','lost-device','credential-leak','broker-compromise','ca-compromise')",
      [],
      'incidents_kind_check',
    );
    t.check("status in ('open','closed')", [], 'incidents_status_check');
    t.index(['opened_at', 'id'], 'incidents_opened_idx');
  });
  await knex.schema.createTable('incident_steps', (t) => {
    t.text('id').primary();
    t.text('incident_id').notNullable().references('id').inTable('incidents');
    t.integer('seq').notNullable();
    t.text('action').notNullable();
    t.jsonb('params').notNullable();
    t.boolean('dry_run').notNullable();
    t.text('status').notNullable(); // running | succeeded | unconfirmed | failed | proposed | rejected
    t.text('actor').notNullable();
    t.timestamp('started_at', { useTz: true }).notNullable();
    t.timestamp('finished_at', { useTz: true });
    t.integer('touched_count').notNullable().defaultTo(0);
    t.jsonb('touched').notNullable(); // the first few hundred things it touched (dry run: would touch)
    t.jsonb('result');
    t.text('error');
    t.text('retry_of').references('id').inTable('incident_steps');
    t.text('approval_id');
    t.check("status in ('running','succeeded','unconfirmed','failed','proposed','rejected')", [], 'incident_steps_status_check');
    t.unique(['incident_id', 'seq'], { indexName: 'incident_steps_seq_unique' });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('incident_steps');
  await knex.schema.dropTable('incidents');
}
