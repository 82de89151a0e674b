import { redactSecrets } from '../shared/log-redaction.js';
import type { AuditRow } from '../store/audit-store.js';
import { toEntry } from './audit-log.js';

/**
 * An audit entry as a structured log line for a SIEM: stable field names (`kind: 'audit'`),
 * the entry's chain position and hash (to match it with the table and the checkpoints), and its
 * details with any secret-named field redacted (details must not carry secrets; this is the belt to that brace).
 */
export function auditLogLine(r: AuditRow): Record<string, unknown> {
  const { prevHash: _prevHash, ...entry } = toEntry(r);
  return { kind: 'audit', ...entry, details: redactSecrets(r.details) };
}
