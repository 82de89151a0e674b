import type { Knex } from 'knex';

/**
 * Published CRLs, one row per CRL signed: the newest per CA (highest number) is the one served.
 * The primary key makes a CRL number unique per CA; numbers only grow.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('crls', (t) => {
    t.text('ca_id').notNullable().references('id').inTable('cas');
    t.bigInteger('crl_number').notNullable();
    t.timestamp('this_update', { useTz: true }).notNullable();
    t.timestamp('next_update', { useTz: true }).notNullable();
    t.integer('entries').notNullable();
    t.binary('der').notNullable();
    t.primary(['ca_id', 'crl_number']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('crls');
}
