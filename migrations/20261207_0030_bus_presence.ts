import type { Knex } from 'knex';

/**
 * Presence on the bus (issue 26 item 2): one row per (broker, identity) the bus watch has seen,
 * where the identity is the connect's username (the certificate CN, i.e. the device id) or else
 * the MQTT client id. A device's presence is its rows with identity = device id.
 *
 * Written by PresenceRecorder in batches (one upsert per flush, src/store/bus-presence-store.ts),
 * so the table takes one row update per identity per flush whatever the event rate. Cheap at a
 * million identities:
 *  - the primary key (broker, identity) is the upsert's conflict target and the map's walk per broker;
 *  - (identity, connected) answers a device's presence and the device list's `connected` filter
 *    (a semi-join probe per device row);
 *  - the partial (last_seen_at) index holds only rows not connected now: the `silentSince` filter
 *    and the detectors' silent query read the few disconnected rows, not the connected majority.
 * `last_seen_at` is the latest of the connect, disconnect and activity times, kept by the upsert
 * so that it can be indexed; activity alone (subscribes, publishes) moves it at most once a
 * minute per identity (the upsert skips finer updates), so a chatty client does not rewrite its
 * row and its index entries on every flush.
 * A new table: safe before and after the code that uses it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    create table bus_presence (
      broker text not null,
      identity text not null,
      client_id text,
      connected boolean not null default false,
      last_connect_at timestamptz,
      last_disconnect_at timestamptz,
      last_disconnect_reason text,
      last_disconnect_detail text,
      source_host text,
      source_port integer,
      username text,
      protocol text,
      keep_alive_seconds integer,
      connects_total bigint not null default 0,
      disconnects_total bigint not null default 0,
      last_activity_at timestamptz,
      last_seen_at timestamptz not null,
      updated_at timestamptz not null,
      primary key (broker, identity)
    )`);
  await knex.raw('create index bus_presence_identity_connected_idx on bus_presence (identity, connected)');
  await knex.raw('create index bus_presence_silent_idx on bus_presence (last_seen_at) where not connected');
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop table if exists bus_presence');
}
