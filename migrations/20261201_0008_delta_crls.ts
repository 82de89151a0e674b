import type { Knex } from 'knex';

/**
 * Delta CRLs (RFC 5280 §5.2.4). Every change of a certificate's revocation state takes the next
 * value of one revocation clock (`revocation_epoch`, a single row whose update is held until the
 * change commits, so values are handed out in commit order) and stamps it on the certificate.
 * A CRL records the clock value its snapshot covers: a delta lists the certificates stamped
 * after its base CRL's value. Expand-only: old code ignores the new columns.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('revocation_epoch', (t) => {
    t.smallint('id').primary();
    t.bigInteger('seq').notNullable();
    t.check('id = 1', [], 'revocation_epoch_single_row');
  });
  await knex('revocation_epoch').insert({ id: 1, seq: 0 });
  await knex.schema.alterTable('certificates', (t) => {
    t.bigInteger('revocation_seq');
  });
  await knex.raw('create index certificates_revocation_seq_idx on certificates (ca_id, revocation_seq) where revocation_seq is not null');
  await knex.schema.alterTable('crls', (t) => {
    t.text('kind').notNullable().defaultTo('full');
    /** A delta's BaseCRLNumber. */
    t.bigInteger('base_number');
    /** The revocation clock value this CRL's snapshot covers (null: published before the clock existed). */
    t.bigInteger('covers_seq');
    /** A full CRL that later deltas are computed against. */
    t.boolean('is_base').notNullable().defaultTo(false);
    t.check(`kind in ('full', 'delta') and (kind = 'delta') = (base_number is not null)`, [], 'crls_kind_check');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex('crls').where({ kind: 'delta' }).delete();
  await knex.schema.alterTable('crls', (t) => {
    t.dropChecks(['crls_kind_check']);
    t.dropColumn('is_base');
    t.dropColumn('covers_seq');
    t.dropColumn('base_number');
    t.dropColumn('kind');
  });
  await knex.raw('drop index if exists certificates_revocation_seq_idx');
  await knex.schema.alterTable('certificates', (t) => {
    t.dropColumn('revocation_seq');
  });
  await knex.schema.dropTableIfExists('revocation_epoch');
}
