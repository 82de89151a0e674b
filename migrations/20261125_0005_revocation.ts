import type { Knex } from 'knex';

/** RFC 5280 §5.3.1 reason codes that this CA records (removeFromCRL and aACompromise are not used). */
const REVOCATION_REASONS = [
  'unspecified',
  'keyCompromise',
  'cACompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
  'certificateHold',
  'privilegeWithdrawn',
] as const;

/**
 * Revocation state on the certificate row: when, why, and the invalidity date (RFC 5280
 * §5.3.2) when one was given. A certificate on hold is `revoked` with reason certificateHold
 * until it is released (back to `issued`) or revoked for good. The partial index serves the CRL:
 * a CA's revoked certificates in serial order, read page by page.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('certificates', (t) => {
    t.timestamp('revoked_at', { useTz: true });
    t.text('revocation_reason');
    t.timestamp('invalidity_date', { useTz: true });
    t.check(
      `(status = 'revoked') = (revoked_at is not null and revocation_reason is not null)
       and (revocation_reason is null or revocation_reason in (${REVOCATION_REASONS.map((r) => `'${r}'`).join(', ')}))`,
      [],
      'certificates_revocation_check',
    );
  });
  await knex.raw(`create index certificates_revoked_idx on certificates (ca_id, serial) where status = 'revoked'`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop index if exists certificates_revoked_idx');
  await knex.schema.alterTable('certificates', (t) => {
    t.dropChecks(['certificates_revocation_check']);
    t.dropColumn('invalidity_date');
    t.dropColumn('revocation_reason');
    t.dropColumn('revoked_at');
  });
}
