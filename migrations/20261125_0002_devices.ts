import type { Knex } from 'knex';

/**
 * The device inventory (Identify): one row per MQTT identity the CA may issue for.
 * Additive only (a new table), so it is safe before and after the code that uses it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('devices', (t) => {
    t.text('id').primary(); // the MQTT identity: certificate CN and SAN URI
    t.text('kind').notNullable(); // client | broker
    t.text('model');
    t.text('hardware_revision');
    t.text('firmware_version');
    t.text('site');
    t.text('lot'); // production lot
    t.text('status').notNullable(); // registered | active | suspended | revoked | decommissioned
    t.jsonb('labels').notNullable().defaultTo(knex.raw("'{}'::jsonb"));
    t.binary('current_serial'); // the newest issued certificate
    t.timestamp('current_not_after', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('activated_at', { useTz: true });
    t.timestamp('suspended_at', { useTz: true });
    t.timestamp('revoked_at', { useTz: true });
    t.timestamp('decommissioned_at', { useTz: true });
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.check("kind in ('client','broker')", [], 'devices_kind_check');
    t.check("status in ('registered','active','suspended','revoked','decommissioned')", [], 'devices_status_check');
    t.check("jsonb_typeof(labels) = 'object'", [], 'devices_labels_check');
    // Every list filter, then the cursor (created_at, id): newest first.
    t.index(['status'], 'devices_status_idx');
    t.index(['lot'], 'devices_lot_idx');
    t.index(['model'], 'devices_model_idx');
    t.index(['firmware_version'], 'devices_firmware_version_idx');
    t.index(['site'], 'devices_site_idx');
    t.index(['current_not_after'], 'devices_current_not_after_idx');
    t.index(['created_at', 'id'], 'devices_created_at_id_idx');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('devices');
}
