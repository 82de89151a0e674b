import type { Knex } from 'knex';

/**
 * Partitioned CRLs (#29 item 3, as Boulder shards them). A certificate records the CRL shard its
 * CRL distribution point names: 0 is the CA's one CRL (every certificate issued without sharding),
 * 1..n a shard. A CRL row records the partition it covers; each partition has its own number
 * sequence, so the key becomes (ca_id, shard, crl_number). Adding a column with a constant default
 * rewrites no rows. One index finds a CA's shards in use, the other a shard's revoked certificates
 * (a shard's full CRL reads its own entries); both hold only sharded certificates.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('alter table certificates add column crl_shard integer not null default 0');
  await knex.raw('alter table certificates add constraint certificates_crl_shard_check check (crl_shard >= 0)');
  await knex.raw('create index certificates_crl_shard_idx on certificates (ca_id, crl_shard) where crl_shard > 0');
  await knex.raw(
    `create index certificates_crl_shard_revoked_idx on certificates (ca_id, crl_shard, serial) where status = 'revoked' and crl_shard > 0`,
  );
  await knex.raw('alter table crls add column shard integer not null default 0');
  await knex.raw('alter table crls add constraint crls_shard_check check (shard >= 0)');
  await knex.raw('alter table crls drop constraint crls_pkey');
  await knex.raw('alter table crls add primary key (ca_id, shard, crl_number)');
  // A signed CRL barely compresses: storing tens of MB without trying saves the attempt on every full build.
  await knex.raw('alter table crls alter column der set storage external');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('alter table crls alter column der set storage extended');
  await knex('crls').where('shard', '>', 0).delete();
  await knex.raw('alter table crls drop constraint crls_pkey');
  await knex.raw('alter table crls add primary key (ca_id, crl_number)');
  await knex.raw('alter table crls drop column shard');
  await knex.raw('drop index certificates_crl_shard_revoked_idx');
  await knex.raw('drop index certificates_crl_shard_idx');
  await knex.raw('alter table certificates drop column crl_shard');
}
