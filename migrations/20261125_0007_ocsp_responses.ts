import type { Knex } from 'knex';

/**
 * Pre-signed OCSP responses, one per certificate and CertID hash algorithm: what every responder
 * replica serves for a request without a nonce. A row always matches its certificate's committed
 * revocation state: a revocation deletes the rows of the serials it touches in its own
 * transaction, and a row is only written while the certificate is still in the state it answers
 * (a conditional insert that takes a share lock on the certificate).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('ocsp_responses', (t) => {
    t.binary('serial').notNullable().references('serial').inTable('certificates');
    t.text('hash_algorithm').notNullable();
    t.binary('der').notNullable();
    t.timestamp('this_update', { useTz: true }).notNullable();
    t.timestamp('next_update', { useTz: true }).notNullable();
    t.primary(['serial', 'hash_algorithm']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('ocsp_responses');
}
