import type { Knex } from 'knex';

/**
 * The two-person rule: proposals of dangerous actions (revoking a CA, a large bulk revocation,
 * incident actions), each decided by a second operator and executed at most once. Additive only.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('approvals', (t) => {
    t.text('id').primary();
    t.text('action').notNullable();
    t.jsonb('params').notNullable();
    t.text('summary').notNullable();
    t.jsonb('targets');
    t.text('note');
    t.text('status').notNullable(); // pending | approved (executing) | executed | failed | rejected | expired
    t.text('proposed_by').notNullable(); // the audit actor, e.g. api-key:ak_...
    t.text('proposed_by_key').notNullable();
    t.text('proposed_by_name').notNullable();
    t.text('proposed_by_role').notNullable();
    t.timestamp('proposed_at', { useTz: true }).notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.text('decided_by');
    t.text('decided_by_key');
    t.text('decided_by_name');
    t.text('decided_by_role');
    t.timestamp('decided_at', { useTz: true });
    t.text('decision_reason');
    t.timestamp('finished_at', { useTz: true });
    t.jsonb('result');
    t.jsonb('error');
    t.check("status in ('pending','approved','executed','failed','rejected','expired')", [], 'approvals_status_check');
    t.index(['status', 'expires_at']);
    t.index(['proposed_at', 'id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('approvals');
}
