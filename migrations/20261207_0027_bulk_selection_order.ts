import type { Knex } from 'knex';

/**
 * A bulk revocation run's frozen selection walked in the order its certificates lie in the table
 * (`pos`, numbered by ctid when the run froze it), no longer by serial: serials are random, so a
 * chunk of 20,000 consecutive serials touched pages all over a million-row table (and their
 * devices' pages), every chunk; consecutive rows touch a few hundred pages. Rows of a run frozen
 * before are numbered in serial order (the order they were being walked in); the rows already done
 * are deleted, so the walk resumes where it was.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('alter table bulk_revocation_serials add column pos bigint');
  await knex.raw(
    `update bulk_revocation_serials s set pos = n.pos
       from (select run_id, serial, row_number() over (partition by run_id order by serial) as pos from bulk_revocation_serials) n
      where s.run_id = n.run_id and s.serial = n.serial`,
  );
  await knex.raw('alter table bulk_revocation_serials alter column pos set not null');
  await knex.raw('alter table bulk_revocation_serials drop constraint bulk_revocation_serials_pkey');
  await knex.raw('alter table bulk_revocation_serials add primary key (run_id, pos)');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('alter table bulk_revocation_serials drop constraint bulk_revocation_serials_pkey');
  await knex.raw('alter table bulk_revocation_serials drop column pos');
  await knex.raw('alter table bulk_revocation_serials add primary key (run_id, serial)');
}
