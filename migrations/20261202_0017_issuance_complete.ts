import type { Knex } from 'knex';

/**
 * A batch's issuance commit in ONE statement (its own transaction): the signed DER of each pending
 * intent, each device's newest certificate and its move to active, and the audit entries, chained
 * by the caller on the head it last saw — in the same order as the multi-statement path
 * (certificates, devices, then the audit lock), so the two never deadlock. Each device row carries
 * the status registration expects (registered or active), which decided the audit entries; the
 * statement changes nothing and raises
 *   MCA01 when an intent is no longer pending (or missing),
 *   MCA02 when a device is not in its expected status (the caller takes the general path),
 *   MCA03 when the audit head moved (DETAIL: "<seq>:<hex hash>", or "0:" for an empty log).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create function issuance_complete(lock_key bigint, expected_seq bigint, expected_hash bytea, entries jsonb,
                                      serials bytea[], ders bytea[], at_time timestamptz,
                                      device_ids text[], device_serials bytea[], device_not_after timestamptz[], device_expected text[])
      returns void
    language plpgsql volatile as $$
    declare
      n bigint;
      head record;
    begin
      update certificates c set der = v.der, status = 'issued', issued_at = at_time
        from unnest(serials, ders) as v(serial, der)
       where c.serial = v.serial and c.status = 'pending';
      get diagnostics n = row_count;
      if n <> coalesce(cardinality(serials), 0) then
        raise exception 'completed % of % intents', n, coalesce(cardinality(serials), 0) using errcode = 'MCA01';
      end if;
      update devices d
         set current_serial = v.serial,
             current_not_after = v.not_after,
             status = 'active',
             activated_at = case when v.expected = 'registered' then at_time else d.activated_at end,
             updated_at = at_time
        from unnest(device_ids, device_serials, device_not_after, device_expected) as v(id, serial, not_after, expected)
       where d.id = v.id and d.status = v.expected;
      get diagnostics n = row_count;
      if n <> coalesce(cardinality(device_ids), 0) then
        raise exception 'a device is no longer in the status its certificate was planned for' using errcode = 'MCA02';
      end if;
      select * into head from audit_append(lock_key, expected_seq, expected_hash, entries);
      if not head.appended then
        raise exception 'the audit head moved'
          using errcode = 'MCA03', detail = coalesce(head.seq, 0)::text || ':' || coalesce(encode(head.hash, 'hex'), '');
      end if;
    end
    $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(
    'drop function if exists issuance_complete(bigint, bigint, bytea, jsonb, bytea[], bytea[], timestamptz, text[], bytea[], timestamptz[], text[])',
  );
}
