import type { Knex } from 'knex';

/**
 * The audit chain's append lock and head in one round trip. A VOLATILE plpgsql function reads
 * with a fresh snapshot after taking the lock, so the head it returns is the newest committed
 * one (a plain `select` in the statement that waited for the lock would see the snapshot from
 * before the wait).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function audit_lock_head(lock_key bigint) returns table (seq bigint, hash bytea)
    language plpgsql volatile as $$
    begin
      perform pg_advisory_xact_lock(lock_key);
      return query select a.seq, a.hash from audit_log a order by a.seq desc limit 1;
    end
    $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function if exists audit_lock_head(bigint)');
}
