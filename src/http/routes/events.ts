import { Router, type Request } from 'express';
import type { EventFilter, RecordedEvent, SecurityEvents } from '../../detect/security-events.js';
import type { EventFeed } from '../../detect/event-feed.js';
import type { Severity } from '../../shared/security-terms.js';
import { badRequest } from '../../shared/errors.js';
import { allow } from '../auth.js';

const READERS = ['operator', 'auditor'] as const;
/** A comment line this often keeps proxies from closing a quiet stream. */
const KEEPALIVE_MS = 15_000;

const view = (e: RecordedEvent) => ({ ...e, at: e.at.toISOString() });

function filterOf(req: Request): EventFilter {
  const q = req.query as Record<string, string | undefined>;
  return {
    kinds: q.kind ? q.kind.split(',') : undefined,
    minSeverity: q.severity as Severity | undefined,
    source: q.source,
    subject: q.subject,
    since: q.since ? new Date(q.since) : undefined,
    until: q.until ? new Date(q.until) : undefined,
  };
}

/** Security events: a page at a time, newest first, or live as server-sent events. */
export function eventRoutes(events: SecurityEvents, feed: EventFeed): Router {
  const r = Router();
  r.get('/v1/events', allow(...READERS), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    const page = await events.list(filterOf(req), { cursor: q.cursor, limit: Number(q.limit ?? 100) });
    res.json({ items: page.items.map(view), nextCursor: page.nextCursor });
  });
  r.get('/v1/events/stream', allow(...READERS), async (req, res) => {
    const q = req.query as Record<string, string | undefined>;
    const resume = req.headers['last-event-id'] ?? q.after;
    if (resume !== undefined && !/^\d{1,15}$/.test(String(resume))) throw badRequest('Last-Event-ID (or after) must be an event id');
    const filter = filterOf(req);
    delete filter.since;
    delete filter.until;
    const after = resume === undefined ? await feed.now() : Number(resume);
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' });
    res.write('retry: 2000\n\n');
    const unsubscribe = feed.subscribe(
      filter,
      after,
      (e) => res.write(`id: ${e.id}\nevent: ${e.kind}\ndata: ${JSON.stringify(view(e))}\n\n`),
      () => res.end(),
    );
    const keepalive = setInterval(() => res.write(': keepalive\n\n'), KEEPALIVE_MS).unref();
    res.on('close', () => {
      clearInterval(keepalive);
      unsubscribe();
    });
  });
  return r;
}
