import type { Knex } from 'knex';

/**
 * The audit chain's append in one round trip: takes the append lock, and inserts the rows only if
 * the head is still the one they were chained on (the appender's last known head); otherwise
 * inserts nothing and returns the head as it is once the lock is held, so the appender can chain
 * again on it (the lock stays held to the end of the transaction, so the second try holds).
 * VOLATILE plpgsql, like audit_lock_head (0004): the head is read with a snapshot taken after the lock.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function audit_append(lock_key bigint, expected_seq bigint, expected_hash bytea, entries jsonb)
      returns table (appended boolean, seq bigint, hash bytea)
    language plpgsql volatile as $$
    declare
      head_seq bigint;
      head_hash bytea;
    begin
      perform pg_advisory_xact_lock(lock_key);
      select a.seq, a.hash into head_seq, head_hash from audit_log a order by a.seq desc limit 1;
      if coalesce(head_seq, 0) <> expected_seq or head_hash is distinct from expected_hash then
        return query select false, head_seq, head_hash;
        return;
      end if;
      insert into audit_log (seq, at, actor, action, target_type, target_id, request_id, details, prev_hash, hash)
      select r.seq, r.at, r.actor, r.action, r.target_type, r.target_id, r.request_id, r.details,
             decode(r.prev_hash, 'hex'), decode(r.hash, 'hex')
        from jsonb_to_recordset(entries) as r(seq bigint, at timestamptz, actor text, action text,
             target_type text, target_id text, request_id text, details jsonb, prev_hash text, hash text);
      return query select true, null::bigint, null::bytea;
    end
    $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function if exists audit_append(bigint, bigint, bytea, jsonb)');
}
