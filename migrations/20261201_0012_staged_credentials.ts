import type { Knex } from 'knex';

/**
 * Credentials staged for devices whose key the service generated: at renewal time the service
 * makes the new key, has it certified, and keeps it sealed under the KEK until the device picks
 * it up with its current certificate; then the sealed key is wiped. Additive only.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('certificates', (t) => {
    t.text('key_origin'); // null: the device made its key; 'server': generated here (server-side key generation)
  });
  await knex.schema.createTable('staged_credentials', (t) => {
    t.binary('renews').primary().references('serial').inTable('certificates'); // one staged successor per certificate, ever
    t.binary('serial').unique().references('serial').inTable('certificates'); // the new certificate, once issued
    t.text('device_id').notNullable();
    t.text('key_algorithm').notNullable();
    t.binary('csr_der').notNullable(); // kept so a retried issuance is the same request (its Idempotency-Key replays it)
    t.text('kek_id');
    t.binary('wrapped_dek'); // null once picked up
    t.binary('ciphertext'); // null once picked up
    t.timestamp('staged_at', { useTz: true }).notNullable();
    t.timestamp('issued_at', { useTz: true });
    t.timestamp('picked_up_at', { useTz: true });
    t.check('(picked_up_at is null) = (ciphertext is not null)', [], 'staged_credentials_wiped_check');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('staged_credentials');
  await knex.schema.alterTable('certificates', (t) => t.dropColumn('key_origin'));
}
