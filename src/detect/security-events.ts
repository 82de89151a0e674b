import type { Db, Executor } from '../store/db.js';
import type { SecurityEventRow, SecurityEventStore } from '../store/security-event-store.js';
import type { AuditEntryInput, AuditLog } from '../audit/audit-log.js';
import type { Clock } from '../shared/clock.js';
import { NO_TELEMETRY, type Telemetry } from './telemetry.js';

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
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {}

  async record(e: SecurityEventInput): Promise<void> {
    await this.db.transaction((tx) => this.recordIn(tx, [e]));
  }

  /** Records events inside the caller's transaction, with their audit entries and any `alsoAudit` entries (one chain append). */
  async recordIn(tx: Executor, events: SecurityEventInput[], alsoAudit: AuditEntryInput[] = []): Promise<void> {
    const at = this.clock.now();
    const rows: SecurityEventRow[] = events.map((e) => ({
      at,
      kind: e.kind,
      severity: e.severity ?? 'warning',
      source: e.source ?? null,
      subject: e.subject ?? null,
      requestId: e.requestId ?? null,
      details: e.details ?? {},
    }));
    const ids = await this.store.insertMany(tx, rows);
    // Counted when written: in the rare transaction that then rolls back, the count runs ahead of the table.
    for (const row of rows) this.telemetry.securityEvent(row.kind, row.severity);
    await this.audit.append(tx, [
      ...alsoAudit,
      ...rows.map((row, i) => ({
        actor: row.source ? `client:${row.source}` : 'system',
        action: `security.${row.kind}`,
        targetType: 'security-event',
        targetId: String(ids[i]),
        requestId: row.requestId ?? undefined,
        details: { severity: row.severity, subject: row.subject, ...row.details },
      })),
    ]);
  }

  list(q: { kind?: string; since?: Date; limit: number }) {
    return this.store.list(this.db, q);
  }
}
