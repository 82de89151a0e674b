import type { Knex } from 'knex';

/** Foundation schema: settings, CAs and their keys, certificates, API keys, the audit chain. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('settings', (t) => {
    t.text('key').primary();
    t.jsonb('value').notNullable();
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  // Wrapped private keys. Never plaintext: ciphertext under a data key, the data key under the KEK.
  await knex.schema.createTable('key_material', (t) => {
    t.text('id').primary();
    t.text('algorithm').notNullable();
    t.text('kek_id').notNullable();
    t.binary('wrapped_dek').notNullable();
    t.binary('ciphertext').notNullable();
    t.binary('public_key').notNullable(); // SPKI DER
    t.timestamp('created_at', { useTz: true }).notNullable();
  });

  await knex.schema.createTable('cas', (t) => {
    t.text('id').primary();
    t.text('name').notNullable();
    t.text('parent_id').references('id').inTable('cas');
    t.text('kind').notNullable(); // root | intermediate
    t.text('status').notNullable(); // awaiting-certificate | active | retired | revoked
    t.text('key_algorithm').notNullable();
    t.text('signer_ref').notNullable(); // software:<key_material.id>, later pkcs11:...
    t.integer('path_len');
    t.binary('certificate_der');
    t.binary('csr_der');
    t.text('external_chain_pem'); // issuer chain of an intermediate signed by an outside (offline) CA
    t.binary('subject_der').notNullable();
    t.binary('key_id').notNullable(); // SKI
    t.timestamp('not_before', { useTz: true });
    t.timestamp('not_after', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.check("kind in ('root','intermediate')", [], 'cas_kind_check');
    t.check("status in ('awaiting-certificate','active','retired','revoked')", [], 'cas_status_check');
  });

  // One row per serial, written before signing (status pending, tbs_der = the intended certificate)
  // and completed after (status issued, der). A signed certificate the table does not know is impossible.
  await knex.schema.createTable('certificates', (t) => {
    t.binary('serial').primary();
    t.text('ca_id').notNullable().references('id').inTable('cas');
    t.text('profile').notNullable();
    t.text('status').notNullable(); // pending | issued | failed | revoked
    t.text('subject_cn').notNullable();
    t.text('device_id');
    t.binary('tbs_der').notNullable();
    t.binary('der');
    t.binary('spki_sha256').notNullable();
    t.timestamp('not_before', { useTz: true }).notNullable();
    t.timestamp('not_after', { useTz: true }).notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('issued_at', { useTz: true });
    t.text('failure');
    t.check("status in ('pending','issued','failed','revoked')", [], 'certificates_status_check');
    t.index(['ca_id', 'status']);
    t.index(['device_id']);
    t.index(['not_after']);
    t.index(['created_at', 'serial']);
  });

  await knex.schema.createTable('api_keys', (t) => {
    t.text('id').primary();
    t.text('name').notNullable();
    t.text('role').notNullable();
    t.binary('secret_hash').notNullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('revoked_at', { useTz: true });
    t.timestamp('last_used_at', { useTz: true });
    t.check("role in ('admin','operator','provisioner','auditor')", [], 'api_keys_role_check');
    t.check('octet_length(secret_hash) = 32', [], 'api_keys_secret_hash_check'); // SHA-256
  });

  await knex.schema.createTable('audit_log', (t) => {
    t.bigInteger('seq').primary();
    t.timestamp('at', { useTz: true }).notNullable();
    t.text('actor').notNullable();
    t.text('action').notNullable();
    t.text('target_type').notNullable();
    t.text('target_id').notNullable();
    t.text('request_id');
    t.jsonb('details').notNullable();
    t.binary('prev_hash').notNullable();
    t.binary('hash').notNullable();
    t.check('seq >= 1', [], 'audit_log_seq_check');
    t.check('octet_length(prev_hash) = 32 and octet_length(hash) = 32', [], 'audit_log_hash_check');
    // The list filters, newest first (seq desc) within each.
    t.index(['target_type', 'target_id', 'seq']);
    t.index(['actor', 'seq']);
    t.index(['action', 'seq']);
  });
  // Append-only: the service never updates or deletes audit rows; make the database refuse it too.
  await knex.raw(`
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'audit_log is append-only';
    END $$`);
  await knex.raw(`
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
      FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()`);
  // Row triggers do not fire on TRUNCATE; a statement trigger does.
  await knex.raw(`
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
      FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log');
  await knex.raw('DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log');
  await knex.raw('DROP FUNCTION IF EXISTS audit_log_append_only()');
  for (const t of ['audit_log', 'api_keys', 'certificates', 'cas', 'key_material', 'settings']) {
    await knex.schema.dropTableIfExists(t);
  }
}
