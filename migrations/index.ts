import type { Knex } from 'knex';
import * as foundation from './20261125_0001_foundation.js';
import * as devices from './20261125_0002_devices.js';
import * as enrollment from './20261125_0003_enrollment.js';
import * as auditHead from './20261125_0004_audit_head.js';
import * as revocation from './20261125_0005_revocation.js';
import * as crls from './20261125_0006_crls.js';
import * as ocspResponses from './20261125_0007_ocsp_responses.js';
import * as deltaCrls from './20261201_0008_delta_crls.js';
import * as rotation from './20261201_0009_rotation.js';
import * as sessionKeys from './20261201_0010_session_keys.js';
import * as caRollover from './20261201_0011_ca_rollover.js';
import * as stagedCredentials from './20261201_0012_staged_credentials.js';
import * as backups from './20261202_0013_backups.js';
import * as approvals from './20261202_0014_approvals.js';
import * as incidents from './20261202_0015_incidents.js';
import * as auditAppend from './20261202_0016_audit_append.js';
import * as issuanceComplete from './20261202_0017_issuance_complete.js';
import * as hotStatementPlans from './20261202_0018_hot_statement_plans.js';
import * as leanerCertificateRows from './20261202_0019_leaner_certificate_rows.js';
import * as detection from './20261203_0020_detection.js';
import * as byteaSplit from './20261203_0021_bytea_split.js';
import * as apiKeyLineage from './20261207_0022_api_key_lineage.js';
import * as bulkRevocations from './20261207_0023_bulk_revocations.js';
import * as deviceListIndexes from './20261207_0024_device_list_indexes.js';
import * as crlShards from './20261207_0025_crl_shards.js';
import * as consoleSessions from './20261207_0026_console_sessions.js';
import * as bulkSelectionOrder from './20261207_0027_bulk_selection_order.js';
import * as apiIdempotencyKeys from './20261207_0028_api_idempotency_keys.js';
import * as certificateKeyType from './20261207_0029_certificate_key_type.js';
import * as busPresence from './20261207_0030_bus_presence.js';
import * as busWatchGaps from './20261207_0031_bus_watch_gaps.js';
import * as crlSharesSecond from './20261208_0032_crl_shares_second.js';

/** Migrations are listed here, not discovered on disk, so they run the same under tsx and from dist. */
const migrations: Record<string, Knex.Migration> = {
  '20261125_0001_foundation': foundation,
  '20261125_0002_devices': devices,
  '20261125_0003_enrollment': enrollment,
  '20261125_0004_audit_head': auditHead,
  '20261125_0005_revocation': revocation,
  '20261125_0006_crls': crls,
  '20261125_0007_ocsp_responses': ocspResponses,
  '20261201_0008_delta_crls': deltaCrls,
  '20261201_0009_rotation': rotation,
  '20261201_0010_session_keys': sessionKeys,
  '20261201_0011_ca_rollover': caRollover,
  '20261201_0012_staged_credentials': stagedCredentials,
  '20261202_0013_backups': backups,
  '20261202_0014_approvals': approvals,
  '20261202_0015_incidents': incidents,
  '20261202_0016_audit_append': auditAppend,
  '20261202_0017_issuance_complete': issuanceComplete,
  '20261202_0018_hot_statement_plans': hotStatementPlans,
  '20261202_0019_leaner_certificate_rows': leanerCertificateRows,
  '20261203_0020_detection': detection,
  '20261203_0021_bytea_split': byteaSplit,
  '20261207_0022_api_key_lineage': apiKeyLineage,
  '20261207_0023_bulk_revocations': bulkRevocations,
  '20261207_0024_device_list_indexes': deviceListIndexes,
  '20261207_0025_crl_shards': crlShards,
  '20261207_0026_console_sessions': consoleSessions,
  '20261207_0027_bulk_selection_order': bulkSelectionOrder,
  '20261207_0028_api_idempotency_keys': apiIdempotencyKeys,
  '20261207_0029_certificate_key_type': certificateKeyType,
  '20261207_0030_bus_presence': busPresence,
  '20261207_0031_bus_watch_gaps': busWatchGaps,
  '20261208_0032_crl_shares_second': crlSharesSecond,
};

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations).sort(),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name]!,
};
