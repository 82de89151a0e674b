import type { Executor } from './db.js';

export interface SecurityEventRow {
  at: Date;
  kind: string;
  severity: 'info' | 'warning' | 'critical';
  source: string | null;
  subject: string | null;
  requestId: string | null;
  details: Record<string, unknown>;
}

export class SecurityEventStore {
  /** Inserts in order; returns the new ids in the same order. */
  async insertMany(db: Executor, events: SecurityEventRow[]): Promise<number[]> {
    if (events.length === 0) return [];
    const rows = await db('security_events')
      .insert(events.map((e) => ({ at: e.at, kind: e.kind, severity: e.severity, source: e.source, subject: e.subject, request_id: e.requestId, details: JSON.stringify(e.details) })))
      .returning('id');
    return (rows as { id: unknown }[]).map((r) => Number(r.id));
  }

  async list(db: Executor, q: { kind?: string | undefined; since?: Date | undefined; limit: number }): Promise<(SecurityEventRow & { id: number })[]> {
    const query = db('security_events').select('id', 'at', 'kind', 'severity', 'source', 'subject', 'request_id', 'details');
    if (q.kind) query.where('kind', q.kind);
    if (q.since) query.where('at', '>=', q.since);
    const rows = await query.orderBy('id', 'desc').limit(q.limit);
    return rows.map((r: Record<string, unknown>) => ({
      id: Number(r.id),
      at: new Date(r.at as string),
      kind: r.kind as string,
      severity: r.severity as SecurityEventRow['severity'],
      source: (r.source as string | null) ?? null,
      subject: (r.subject as string | null) ?? null,
      requestId: (r.request_id as string | null) ?? null,
      details: (typeof r.details === 'string' ? JSON.parse(r.details) : r.details) as Record<string, unknown>,
    }));
  }
}
