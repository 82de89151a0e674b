import type { Knex } from 'knex';

/**
 * The enrollment hot path's batch statements join a batch (unnest of arrays) to tables by key: the
 * only good plan is a nested loop over the key's index. A connection keeps such a statement's
 * plan once it has run it a few times (plpgsql statements, like named prepared ones), and a plan
 * made while a table was small and never analyzed (autovacuum off, or before its first analyze)
 * scanned the whole table, or a whole status index, and kept doing so as the table grew. Measured
 * on PostgreSQL: the certificate update inside issuance_complete read ~40 blocks per certificate
 * and the commits took twice as long past ~50,000 certificates; the token spend scanned the
 * tokens table. (test/integration/hot-statement-plans.test.ts pins both.)
 *
 * - issuance_complete (0017) is planned on every call, on the tables as they are then: its
 *   statements cost ~0.1 ms each to plan. audit_append runs inside it, so the same holds there.
 *   (Turning scans off is not enough for it: on empty tables the planner then walks the status
 *   index for 'pending' and joins the batch to that.)
 * - token_spend is the lot and device token spend of TokenStore.consumeMany, unchanged, moved
 *   here. It costs ~1.2 ms to plan, so it keeps its plan, with sequential scans, hash joins and
 *   merge joins off: whenever that plan is made, it reaches every table through its key's index.
 *   Its contract is the store's: one use per granted (token, device) pair, with the device's status
 *   as seen when granted.
 */
const INDEX_PLANS = ['enable_seqscan', 'enable_hashjoin', 'enable_mergejoin'];
const ISSUANCE_COMPLETE =
  'issuance_complete(bigint, bigint, bytea, jsonb, bytea[], bytea[], timestamptz, text[], bytea[], timestamptz[], text[])';

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`alter function ${ISSUANCE_COMPLETE} set plan_cache_mode = force_custom_plan`);
  await knex.raw(`
    create function token_spend(token_ids text[], device_ids text[], at_time timestamptz)
      returns table (token_id text, device_id text, status text)
    language plpgsql volatile
    ${INDEX_PLANS.map((s) => `set ${s} = off`).join(' ')}
    as $$
    #variable_conflict use_column
    begin
      return query
      with req as (select r.token_id, r.device_id, r.ord from unnest(token_ids, device_ids) with ordinality as r(token_id, device_id, ord)),
       tok as (
         select t.id, t.lot, t.max_uses - t.uses as room from enrollment_tokens t
          where t.id in (select q.token_id from req q) and t.revoked_at is null and t.expires_at > at_time
          order by t.id
          for update),
       eligible as (
         select distinct on (r.token_id, r.device_id) r.token_id, r.device_id, r.ord, d.status
           from req r
           join tok on tok.id = r.token_id
           join devices d on d.id = r.device_id and d.status in ('registered', 'active')
                         and (tok.lot is null or (d.lot = tok.lot and d.kind = 'client'))
          where not exists (select 1 from enrollment_token_uses u where u.token_id = r.token_id and u.device_id = r.device_id)
          order by r.token_id, r.device_id, r.ord),
       granted as (
         select e.token_id, e.device_id, e.status
           from (select el.*, row_number() over (partition by el.token_id order by el.ord) as n from eligible el) e
           join tok on tok.id = e.token_id
          where e.n <= tok.room),
       used as (
         insert into enrollment_token_uses as x (token_id, device_id, used_at)
         select g.token_id, g.device_id, at_time from granted g
         on conflict do nothing
         returning x.token_id, x.device_id),
       spent as (
         update enrollment_tokens t set uses = t.uses + c.n, last_used_at = at_time
           from (select us.token_id, count(*) as n from used us group by us.token_id) c
          where t.id = c.token_id)
       select u.token_id, u.device_id, g.status from used u join granted g on g.token_id = u.token_id and g.device_id = u.device_id;
    end
    $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function if exists token_spend(text[], text[], timestamptz)');
  await knex.raw(`alter function ${ISSUANCE_COMPLETE} reset plan_cache_mode`);
}
