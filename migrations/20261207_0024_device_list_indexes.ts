import type { Knex } from 'knex';

/**
 * The device list's filters with its order (#29 item 4). `GET /v1/devices?lot=&status=` pages
 * newest first by (created_at, id); with one index per filter column PostgreSQL either walked the
 * (created_at, id) index backwards discarding every device of other lots and statuses (25,000-40,000
 * rows read for a page of 100 revoked devices of one lot at 1,000,000 devices) or ANDed the lot and
 * status bitmaps (130,000 entries) and sorted what matched. With the filter columns first and the
 * order after them a page reads its own rows: (lot, status, created_at, id) for a lot and a status,
 * (lot, created_at, id) for a lot, (status, created_at, id) for a status. They replace the
 * single-column lot and status indexes (their prefixes). Other filters (model, firmware, site, kind)
 * still read past non-matching rows; they are rarer and combine with these.
 * A plain CREATE INDEX holds writes to devices while it builds (seconds at a million devices).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('create index devices_lot_status_created_at_id_idx on devices (lot, status, created_at, id)');
  await knex.raw('create index devices_lot_created_at_id_idx on devices (lot, created_at, id)');
  await knex.raw('create index devices_status_created_at_id_idx on devices (status, created_at, id)');
  await knex.raw('drop index devices_lot_idx');
  await knex.raw('drop index devices_status_idx');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('create index devices_status_idx on devices (status)');
  await knex.raw('create index devices_lot_idx on devices (lot)');
  await knex.raw('drop index devices_status_created_at_id_idx');
  await knex.raw('drop index devices_lot_created_at_id_idx');
  await knex.raw('drop index devices_lot_status_created_at_id_idx');
}
