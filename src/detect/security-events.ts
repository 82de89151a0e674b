import type { Db, Executor } from '../store/db.js';
import { pgJsonObject, pgText } from '../shared/pg-text.js';
import type { EventFilter, RecordedEvent, SecurityEventRow, SecurityEventStore } from '../store/security-event-store.js';
import { badRequest } from '../shared/errors.js';
import { cursorText, encodeCursor, type Page } from '../shared/page.js';
import type { AuditEntryInput, AuditLog } from '../audit/audit-log.js';
import type { Clock } from '../shared/clock.js';
import { NO_TELEMETRY, type Telemetry } from '../shared/telemetry.js';
import { redactSecrets } from '../shared/log-redaction.js';

export type { EventFilter, RecordedEvent } from '../store/security-event-store.js';

/** Told of events once they are committed: the automatic responses and the live stream. */
export type EventListener = (events: RecordedEvent[]) => void | Promise<void>;

export interface SecurityEventInput {
  kind: string;
  severity?: SecurityEventRow['severity'];
  source?: string | undefined;
  subject?: string | undefined;
  requestId?: string | undefined;
  details?: Record<string, unknown>;
}

/**
 * Security events (refused enrollments, bad credentials, blocked sources, revoked certificates
 * still in use, ...): each is kept in its own table for detection and also entered in the audit
 * log, in one transaction. They are written outside the refused request's own work, which never
 * committed. Once committed, listeners hear of them (awaited: a response that blocks a source
 * holds before the next request from it).
 */
export class SecurityEvents {
  private readonly listeners: EventListener[] = [];

  constructor(
    private readonly db: Db,
    private readonly store: SecurityEventStore,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
  ) {}

  listen(listener: EventListener): void {
    this.listeners.push(listener);
  }

  async record(e: SecurityEventInput): Promise<RecordedEvent> {
    const recorded = await this.db.transaction((tx) => this.recordIn(tx, [e]));
    await this.announce(recorded);
    return recorded[0]!;
  }

  /**
   * Records events inside the caller's transaction, with their audit entries and any `alsoAudit`
   * entries (one chain append). The caller announces them once its transaction has committed.
   */
  async recordIn(tx: Executor, events: SecurityEventInput[], alsoAudit: AuditEntryInput[] = []): Promise<RecordedEvent[]> {
    const at = this.clock.now();
    const rows: SecurityEventRow[] = events.map((e) => ({
      at,
      kind: e.kind,
      severity: e.severity ?? 'warning',
      source: e.source ?? null,
      subject: e.subject === undefined ? null : pgText(e.subject),
      requestId: e.requestId ?? null,
      details: pgJsonObject(e.details ?? {}),
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
    return rows.map((row, i) => ({ ...row, id: ids[i]! }));
  }

  /** Tells the listeners of committed events; a listener's failure is its own (it must not fail the recording). */
  async announce(events: RecordedEvent[]): Promise<void> {
    if (events.length === 0) return;
    for (const l of this.listeners) await l(events);
  }

  /** Newest first; `cursor` is the `nextCursor` of the page before. */
  async list(filter: EventFilter, page: { cursor?: string | undefined; limit: number }): Promise<Page<RecordedEvent>> {
    const beforeId = page.cursor === undefined ? undefined : cursorId(page.cursor);
    const rows = await this.store.list(this.db, filter, { beforeId, limit: page.limit + 1 });
    const items = rows.slice(0, page.limit);
    return { items, nextCursor: rows.length > page.limit ? eventCursor(items[items.length - 1]!.id) : null };
  }

  /** Oldest first, after event `afterId`: what a stream has not sent yet. */
  after(filter: EventFilter, afterId: number, limit: number): Promise<RecordedEvent[]> {
    return this.store.after(this.db, filter, afterId, limit);
  }

  lastId(): Promise<number> {
    return this.store.lastId(this.db);
  }
}

/** A committed security event as a structured log line for a SIEM (`kind: 'security-event'`, the event's own kind as `event`). */
export function securityEventLogLine(e: RecordedEvent): Record<string, unknown> {
  return {
    kind: 'security-event',
    id: e.id,
    at: e.at.toISOString(),
    event: e.kind,
    severity: e.severity,
    source: e.source,
    subject: e.subject,
    requestId: e.requestId,
    details: redactSecrets(e.details),
  };
}

const eventCursor = (id: number) => encodeCursor(`e${id}`);

function cursorId(cursor: string): number {
  const m = /^e(\d{1,15})$/.exec(cursorText(cursor));
  if (!m) throw badRequest('the cursor is not valid');
  return Number(m[1]);
}
