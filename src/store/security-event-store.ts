import type { Knex } from 'knex';
import { SEVERITIES, type Severity } from '../shared/security-terms.js';
import type { Executor } from './db.js';

export interface SecurityEventRow {
  at: Date;
  kind: string;
  severity: Severity;
  source: string | null;
  subject: string | null;
  requestId: string | null;
  details: Record<string, unknown>;
}

export interface RecordedEvent extends SecurityEventRow {
  id: number;
}

/** What a list or a stream selects: every field given must match; `minSeverity` and above. */
export interface EventFilter {
  kinds?: string[] | undefined;
  minSeverity?: Severity | undefined;
  source?: string | undefined;
  subject?: string | undefined;
  since?: Date | undefined;
  until?: Date | undefined;
}

const COLUMNS = ['id', 'at', 'kind', 'severity', 'source', 'subject', 'request_id', 'details'];

export class SecurityEventStore {
  /** Inserts in order; returns the new ids in the same order. */
  async insertMany(db: Executor, events: SecurityEventRow[]): Promise<number[]> {
    if (events.length === 0) return [];
    const rows = await db('security_events')
      .insert(
        events.map((e) => ({
          at: e.at,
          kind: e.kind,
          severity: e.severity,
          source: e.source,
          subject: e.subject,
          request_id: e.requestId,
          details: JSON.stringify(e.details),
        })),
      )
      .returning('id');
    return (rows as { id: unknown }[]).map((r) => Number(r.id));
  }

  /** Newest first, below `beforeId` when given. */
  async list(db: Executor, filter: EventFilter, page: { beforeId?: number | undefined; limit: number }): Promise<RecordedEvent[]> {
    const query = filtered(db, filter);
    if (page.beforeId !== undefined) query.where('id', '<', page.beforeId);
    return (await query.orderBy('id', 'desc').limit(page.limit)).map(fromRow);
  }

  /** Oldest first, above `afterId`: what a stream has not yet sent. */
  async after(db: Executor, filter: EventFilter, afterId: number, limit: number): Promise<RecordedEvent[]> {
    return (await filtered(db, filter).where('id', '>', afterId).orderBy('id', 'asc').limit(limit)).map(fromRow);
  }

  async lastId(db: Executor): Promise<number> {
    const row = (await db('security_events').max({ id: 'id' }).first()) as { id: unknown } | undefined;
    return row?.id == null ? 0 : Number(row.id);
  }
}

function filtered(db: Executor, f: EventFilter): Knex.QueryBuilder {
  const query = db('security_events').select(COLUMNS);
  if (f.kinds?.length) query.whereIn('kind', f.kinds);
  if (f.minSeverity && f.minSeverity !== 'info') query.whereIn('severity', SEVERITIES.slice(SEVERITIES.indexOf(f.minSeverity)));
  if (f.source) query.where('source', f.source);
  if (f.subject) query.where('subject', f.subject);
  if (f.since) query.where('at', '>=', f.since);
  if (f.until) query.where('at', '<', f.until);
  return query;
}

function fromRow(r: Record<string, unknown>): RecordedEvent {
  return {
    id: Number(r.id),
    at: new Date(r.at as string),
    kind: r.kind as string,
    severity: r.severity as Severity,
    source: (r.source as string | null) ?? null,
    subject: (r.subject as string | null) ?? null,
    requestId: (r.request_id as string | null) ?? null,
    details: (typeof r.details === 'string' ? JSON.parse(r.details) : r.details) as Record<string, unknown>,
  };
}
