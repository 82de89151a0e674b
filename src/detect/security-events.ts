import type { Db } from '../store/db.js';
import type { SecurityEventRow, SecurityEventStore } from '../store/security-event-store.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { Clock } from '../shared/clock.js';

export interface SecurityEventInput {
  kind: string;
  severity?: SecurityEventRow['severity'];
  source?: string | undefined;
  subject?: string | undefined;
  requestId?: string | undefined;
  details?: Record<string, unknown>;
}

/**
 * Security events (refused enrollments, bad credentials, throttled sources): each is kept in
 * its own table for detection and also entered in the audit log, in one transaction. They are
 * written outside the refused request's own work, which never committed.
 */
export class SecurityEvents {
  constructor(
    private readonly db: Db,
    private readonly store: SecurityEventStore,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
  ) {}

  async record(e: SecurityEventInput): Promise<void> {
    const row: SecurityEventRow = {
      at: this.clock.now(),
      kind: e.kind,
      severity: e.severity ?? 'warning',
      source: e.source ?? null,
      subject: e.subject ?? null,
      requestId: e.requestId ?? null,
      details: e.details ?? {},
    };
    await this.db.transaction(async (tx) => {
      const id = await this.store.insert(tx, row);
      await this.audit.append(tx, [
        {
          actor: e.source ? `client:${e.source}` : 'system',
          action: `security.${e.kind}`,
          targetType: 'security-event',
          targetId: String(id),
          requestId: e.requestId,
          details: { severity: row.severity, subject: row.subject, ...row.details },
        },
      ]);
    });
  }

  list(q: { kind?: string; since?: Date; limit: number }) {
    return this.store.list(this.db, q);
  }
}
