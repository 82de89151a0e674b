import type { Knex } from 'knex';

/**
 * Web console sessions (#25): an API key exchanged for a session. Only the session id's SHA-256 is
 * stored (the primary key: a lookup goes by hash of a 256-bit random secret, as with API keys); the
 * CSRF token is derived from the id, so it is not stored either. Each session is bound to its API key and that key's role;
 * deleting a key (never done: keys are revoked) takes its sessions with it, and authentication
 * joins api_keys so a revoked key's sessions end at once. `last_seen_at` drives the idle expiry,
 * `expires_at` is the absolute one. A new table that older code ignores: safe before and after.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('console_sessions', (t) => {
    t.binary('id_hash').primary();
    t.text('api_key_id').notNullable().references('id').inTable('api_keys').onDelete('CASCADE');
    t.text('role').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('last_seen_at', { useTz: true }).notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.index(['api_key_id']);
    t.index(['expires_at']);
    t.check('octet_length(id_hash) = 32', [], 'console_sessions_id_hash_check');
    t.check("role in ('admin','operator','provisioner','auditor')", [], 'console_sessions_role_check');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable('console_sessions');
}
