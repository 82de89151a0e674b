import type { Knex } from 'knex';

/**
 * The subject key's type on each certificate (issue #25): the posture report's crypto inventory
 * read every issued, unexpired certificate's DER to find it (2.5 s at 100,000 devices); issuance
 * now records it (`keyTypeLabel` of the SPKI, "EC P-256", "RSA 3072", "Ed25519"…) and the
 * inventory is one `group by`. Rows from before stay null (the label comes from walking the DER,
 * which SQL does not do): the report reads their DER, found through the partial index below, which
 * holds only the null rows still issued, in notAfter order, so the report's walk starts at the
 * unexpired ones and has nothing left to walk once they have expired, been revoked or renewed.
 * Nullable, so code from before this migration (which does not set it) keeps working beside it.
 * A plain CREATE INDEX holds writes to certificates while it builds (seconds at a million rows).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.raw('alter table certificates add column key_type text');
  await knex.raw(
    `create index certificates_key_type_unrecorded_idx on certificates (not_after, serial) where key_type is null and status = 'issued'`,
  );
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index certificates_key_type_unrecorded_idx');
  await knex.raw('alter table certificates drop column key_type');
}
