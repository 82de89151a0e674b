import type { Knex } from 'knex';

/**
 * Issuing-CA rollover: a successor CA takes new issuance while the old CA's device certificates
 * are renewed onto it in throttled waves. Additive only (new tables, a nullable column), so it is
 * safe before and after the code that uses it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('ca_rollovers', (t) => {
    t.text('id').primary();
    t.text('from_ca').notNullable().references('id').inTable('cas');
    t.text('to_ca').notNullable().references('id').inTable('cas');
    t.text('state').notNullable(); // running | paused | done | cancelled
    t.integer('wave_size').notNullable(); // certificates per wave
    t.integer('wave_interval_seconds').notNullable(); // at least this long between two waves
    t.integer('waves').notNullable().defaultTo(0); // waves run so far
    t.integer('in_waves').notNullable().defaultTo(0); // certificates taken into a wave so far
    t.timestamp('last_wave_at', { useTz: true });
    t.timestamp('done_at', { useTz: true });
    t.timestamp('retired_at', { useTz: true }); // when the old CA was retired (its last certificate expired)
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.text('updated_by').notNullable();
    t.check("state in ('running','paused','done','cancelled')", [], 'ca_rollovers_state_check');
    t.check('wave_size > 0', [], 'ca_rollovers_wave_size_check');
    t.check('wave_interval_seconds > 0', [], 'ca_rollovers_wave_interval_check');
    t.check('from_ca <> to_ca', [], 'ca_rollovers_distinct_check');
    t.index(['from_ca', 'created_at'], 'ca_rollovers_from_ca_idx');
  });
  // One rollover per CA that is not cancelled: two concurrent starts cannot both win, and a CA
  // rolled over (running, paused or done) is not rolled over again.
  await knex.raw("create unique index ca_rollovers_one_per_ca on ca_rollovers (from_ca) where state <> 'cancelled'");
  // The tick's scan.
  await knex.raw("create index ca_rollovers_live_idx on ca_rollovers (state) where state in ('running','paused','done')");

  // Each certificate a rollover took, with its wave: the primary key puts a certificate in one wave only.
  await knex.schema.createTable('ca_rollover_members', (t) => {
    t.text('rollover_id').notNullable().references('id').inTable('ca_rollovers');
    t.binary('serial').notNullable().references('serial').inTable('certificates');
    t.integer('wave').notNullable();
    t.timestamp('added_at', { useTz: true }).notNullable();
    t.primary(['rollover_id', 'serial']);
  });

  // A CA's current device certificates (the rollover's population): certificates by CA, then the device holding each.
  await knex.raw('create index devices_current_serial_idx on devices (current_serial)');

  // Why a notice was sent: 'due' (the rotation policy's renewal point) or 'rollover' (a wave); null = due.
  await knex.schema.alterTable('renewal_notices', (t) => {
    t.text('reason');
    t.check("reason is null or reason in ('due','rollover')", [], 'renewal_notices_reason_check');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('renewal_notices', (t) => {
    t.dropChecks(['renewal_notices_reason_check']);
    t.dropColumn('reason');
  });
  await knex.raw('drop index if exists devices_current_serial_idx');
  await knex.schema.dropTableIfExists('ca_rollover_members');
  await knex.raw('drop index if exists ca_rollovers_live_idx');
  await knex.raw('drop index if exists ca_rollovers_one_per_ca');
  await knex.schema.dropTableIfExists('ca_rollovers');
}
