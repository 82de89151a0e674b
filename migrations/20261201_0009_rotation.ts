import type { Knex } from 'knex';

/**
 * Rotation: per-profile and per-lot policies, the renewal notices planned for certificates that
 * came due, and the marks left by the expiry sweeps. Additive only (new tables, nullable columns).
 */
export async function up(knex: Knex): Promise<void> {
  // A lot's row overrides its profile's row field by field; a field left null inherits.
  await knex.schema.createTable('rotation_policies', (t) => {
    t.text('scope').notNullable(); // profile | lot
    t.text('name').notNullable();
    t.double('renew_at_fraction'); // renew once this share of the lifetime has passed...
    t.integer('renew_days_before'); // ...or this many days before expiry
    t.integer('grace_days'); // renewal with the expired certificate allowed this long after expiry
    t.integer('session_key_period_hours');
    t.integer('session_key_overlap_hours');
    t.specificType('notify', 'text[]'); // mqtt, webhook
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.text('updated_by').notNullable();
    t.primary(['scope', 'name']);
    t.check("scope in ('profile','lot')", [], 'rotation_policies_scope_check');
    t.check('renew_at_fraction is null or renew_days_before is null', [], 'rotation_policies_one_rule_check');
    t.check('renew_at_fraction is null or (renew_at_fraction > 0 and renew_at_fraction < 1)', [], 'rotation_policies_fraction_check');
    t.check('renew_days_before is null or renew_days_before >= 0', [], 'rotation_policies_days_check');
    t.check('grace_days is null or grace_days >= 0', [], 'rotation_policies_grace_check');
    t.check(
      'session_key_overlap_hours is null or session_key_period_hours is null or session_key_overlap_hours < session_key_period_hours',
      [],
      'rotation_policies_overlap_check',
    );
  });

  // One notice per certificate, ever: planning twice (two workers, a retry) finds the row.
  await knex.schema.createTable('renewal_notices', (t) => {
    t.binary('serial').primary().references('serial').inTable('certificates');
    t.text('device_id').notNullable();
    t.timestamp('due_at', { useTz: true }).notNullable();
    t.timestamp('deadline', { useTz: true }).notNullable(); // the certificate's notAfter
    t.text('state').notNullable(); // pending | sent | superseded
    t.specificType('notify', 'text[]').notNullable(); // the sinks this notice goes to
    t.timestamp('mqtt_sent_at', { useTz: true });
    t.timestamp('webhook_sent_at', { useTz: true });
    t.integer('attempts').notNullable().defaultTo(0);
    t.text('last_error');
    t.text('claimed_by'); // the worker sending it now, until claimed_until
    t.timestamp('claimed_until', { useTz: true });
    t.timestamp('planned_at', { useTz: true }).notNullable();
    t.timestamp('enqueued_at', { useTz: true }).notNullable();
    t.timestamp('sent_at', { useTz: true });
    t.check("state in ('pending','sent','superseded')", [], 'renewal_notices_state_check');
    t.index(['state', 'enqueued_at'], 'renewal_notices_state_enqueued_idx');
  });

  await knex.schema.alterTable('certificates', (t) => {
    t.timestamp('expired_at', { useTz: true }); // set by the expiry sweep: reached notAfter unrenewed
  });
  // The planner's and the sweep's scan: issued certificates by expiry.
  await knex.raw("create index certificates_issued_not_after_idx on certificates (not_after) where status = 'issued'");
  await knex.schema.alterTable('enrollment_tokens', (t) => {
    t.timestamp('expired_at', { useTz: true }); // set by the token sweep once expires_at passed
  });
  // Housekeeping re-signs the oldest pre-signed OCSP responses.
  await knex.raw('create index ocsp_responses_this_update_idx on ocsp_responses (this_update)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index if exists ocsp_responses_this_update_idx');
  await knex.schema.alterTable('enrollment_tokens', (t) => t.dropColumn('expired_at'));
  await knex.raw('drop index if exists certificates_issued_not_after_idx');
  await knex.schema.alterTable('certificates', (t) => t.dropColumn('expired_at'));
  await knex.schema.dropTableIfExists('renewal_notices');
  await knex.schema.dropTableIfExists('rotation_policies');
}
