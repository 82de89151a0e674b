import type { Knex } from 'knex';

/**
 * Session keys: AES-256 keys for payload encryption on constrained devices, one series per device
 * and one per channel (a named group of devices sharing a topic tree). Every version is a row; its
 * key is sealed under the KEK (envelope: wrapped_dek + ciphertext, bound to the row id), never
 * stored in plaintext. A series has at most one current version (superseded_at is null); the
 * previous ones stay valid until their not_after (the overlap window) unless revoked. Additive
 * only (new tables), so it is safe before and after the code that uses it.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('channels', (t) => {
    t.text('name').primary();
    t.text('topic_tree').notNullable();
    t.integer('period_seconds').notNullable();
    t.integer('overlap_seconds').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable();
    t.check('period_seconds > 0 and overlap_seconds >= 0 and overlap_seconds < period_seconds', [], 'channels_period_check');
  });

  await knex.schema.createTable('channel_members', (t) => {
    t.text('channel').notNullable().references('name').inTable('channels').onDelete('CASCADE');
    t.text('device_id').notNullable().references('id').inTable('devices');
    t.timestamp('added_at', { useTz: true }).notNullable();
    t.primary(['channel', 'device_id']);
    // A device's channels: the fetch and the revocation listener.
    t.index(['device_id'], 'channel_members_device_id_idx');
  });

  await knex.schema.createTable('session_keys', (t) => {
    t.text('id').primary(); // the JWE kid
    t.text('scope').notNullable(); // device | channel
    t.text('owner').notNullable(); // device id or channel name
    t.integer('version').notNullable();
    t.text('kek_id').notNullable();
    t.binary('wrapped_dek').notNullable();
    t.binary('ciphertext').notNullable();
    t.text('origin').notNullable(); // why this version was made: created | scheduled | manual | member-revoked | member-removed
    t.timestamp('not_before', { useTz: true }).notNullable();
    t.timestamp('rotate_at', { useTz: true }).notNullable();
    t.timestamp('not_after', { useTz: true }).notNullable(); // end of the overlap
    t.timestamp('superseded_at', { useTz: true }); // when the next version replaced it; null: the current version
    t.timestamp('revoked_at', { useTz: true });
    t.text('reason'); // why it was revoked
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.unique(['scope', 'owner', 'version'], { indexName: 'session_keys_scope_owner_version_key' });
    t.check("scope in ('device','channel')", [], 'session_keys_scope_check');
    t.check('version >= 1 and not_before <= rotate_at and not_before <= not_after', [], 'session_keys_times_check');
    t.check(
      '(revoked_at is null) = (reason is null) and (revoked_at is null or superseded_at is not null)',
      [],
      'session_keys_revoked_check',
    );
  });
  // One current version per series; and the due scan of rotateDue reads only current versions.
  await knex.raw('create unique index session_keys_current_idx on session_keys (scope, owner) where superseded_at is null');
  await knex.raw('create index session_keys_due_idx on session_keys (scope, rotate_at) where superseded_at is null');
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('session_keys');
  await knex.schema.dropTableIfExists('channel_members');
  await knex.schema.dropTableIfExists('channels');
}
