import type { Knex } from 'knex';

/** Enrollment: tokens, their per-device uses, idempotent retries, security events, certificate lineage. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('enrollment_tokens', (t) => {
    t.text('id').primary();
    t.binary('secret_hash').notNullable();
    t.text('name');
    t.text('device_id'); // one device...
    t.text('lot'); // ...or any device of a lot, each once
    t.text('profile').notNullable();
    t.jsonb('allowed_names'); // broker tokens: the DNS names and IPs they may ask for
    t.integer('max_uses').notNullable();
    t.integer('uses').notNullable().defaultTo(0);
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.text('created_by').notNullable();
    t.timestamp('revoked_at', { useTz: true });
    t.timestamp('last_used_at', { useTz: true });
    t.check('(device_id is null) <> (lot is null)', [], 'enrollment_tokens_target_check');
    t.check('uses <= max_uses', [], 'enrollment_tokens_uses_check');
    t.index(['lot']);
    t.index(['device_id']);
    t.index(['created_at', 'id']);
  });

  await knex.schema.createTable('enrollment_token_uses', (t) => {
    t.text('token_id').notNullable().references('id').inTable('enrollment_tokens');
    t.text('device_id').notNullable();
    t.timestamp('used_at', { useTz: true }).notNullable();
    t.primary(['token_id', 'device_id']);
  });

  // A retried request with the same Idempotency-Key gets the first response, never a second certificate.
  await knex.schema.createTable('idempotency_keys', (t) => {
    t.text('scope').notNullable(); // who asked: token id, client certificate serial, API key id
    t.text('key').notNullable();
    t.binary('request_hash').notNullable();
    t.text('state').notNullable(); // in-progress | done
    t.integer('status_code');
    t.jsonb('response');
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.primary(['scope', 'key']);
    t.check("state in ('in-progress','done')", [], 'idempotency_keys_state_check');
    t.index(['created_at']);
  });

  // One-time proofs (signed renewal requests): a replayed proof is refused.
  await knex.schema.createTable('replay_guard', (t) => {
    t.binary('digest').primary();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.index(['expires_at']);
  });

  await knex.schema.createTable('security_events', (t) => {
    t.bigIncrements('id').primary();
    t.timestamp('at', { useTz: true }).notNullable();
    t.text('kind').notNullable();
    t.text('severity').notNullable();
    t.text('source'); // client address
    t.text('subject'); // token id, device id, certificate serial, ...
    t.text('request_id');
    t.jsonb('details').notNullable();
    t.index(['at']);
    t.index(['kind', 'at']);
    t.check("severity in ('info','warning','critical')", [], 'security_events_severity_check');
  });

  await knex.schema.alterTable('certificates', (t) => {
    t.binary('renewed_from'); // the certificate this one renewed (lineage)
    t.index(['renewed_from']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('certificates', (t) => {
    t.dropIndex(['renewed_from']);
    t.dropColumn('renewed_from');
  });
  for (const t of ['security_events', 'replay_guard', 'idempotency_keys', 'enrollment_token_uses', 'enrollment_tokens']) {
    await knex.schema.dropTableIfExists(t);
  }
}
