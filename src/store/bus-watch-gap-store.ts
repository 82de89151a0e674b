import type { Executor } from './db.js';

/** A time the bus watch could not see a broker's bus through one source (migration 0031). */
export interface WatchGapRow {
  /** Made by the watch (a gap kept in memory while the database was away keeps its id). */
  id: string;
  broker: string;
  /** The source's kind (`mosquitto-sys-log`, `mosquitto-log-file`, ...). */
  source: string;
  from: Date;
  /** Null while the gap is open. */
  to: Date | null;
  why: string;
  detail: string | null;
  /** The watch process that recorded it. */
  process: string;
}

const COLUMNS = ['id', 'broker', 'source', 'from_at', 'to_at', 'why', 'detail', 'process'];

const rowOf = (r: Record<string, unknown>): WatchGapRow => ({
  id: r.id as string,
  broker: r.broker as string,
  source: r.source as string,
  from: new Date(r.from_at as string | Date),
  to: r.to_at == null ? null : new Date(r.to_at as string | Date),
  why: r.why as string,
  detail: (r.detail as string | null) ?? null,
  process: r.process as string,
});

/** SQL for bus_watch_gaps and bus_watch_marks. */
export class BusWatchGapStore {
  /** Writes gaps as they are now (inserted, or their end, why and detail updated). */
  async upsert(db: Executor, gaps: readonly WatchGapRow[]): Promise<void> {
    if (gaps.length === 0) return;
    await db('bus_watch_gaps')
      .insert(
        gaps.map((g) => ({
          id: g.id,
          broker: g.broker,
          source: g.source,
          from_at: g.from,
          to_at: g.to,
          why: g.why,
          detail: g.detail,
          process: g.process,
        })),
      )
      .onConflict('id')
      .merge(['to_at', 'why', 'detail']);
  }

  /** Closes at `at` the gaps of these brokers other processes left open; the gaps closed. */
  async closeOpenOfOthers(db: Executor, brokers: readonly string[], process: string, at: Date): Promise<WatchGapRow[]> {
    if (brokers.length === 0) return [];
    const rows = (await db('bus_watch_gaps')
      .whereIn('broker', brokers)
      .whereNull('to_at')
      .whereNot('process', process)
      .update({ to_at: db.raw('greatest(from_at, ?::timestamptz)', [at]) })
      .returning(COLUMNS)) as Record<string, unknown>[];
    return rows.map(rowOf);
  }

  /** The last time a watch process knew each of these brokers watched. */
  async marks(db: Executor, brokers: readonly string[]): Promise<Map<string, { watchedUntil: Date; process: string }>> {
    if (brokers.length === 0) return new Map();
    const rows = (await db('bus_watch_marks').whereIn('broker', brokers).select('broker', 'watched_until', 'process')) as Record<
      string,
      unknown
    >[];
    return new Map(
      rows.map((r) => [r.broker as string, { watchedUntil: new Date(r.watched_until as string | Date), process: r.process as string }]),
    );
  }

  /** Records that these brokers were watched until `at` (never moves a mark back). */
  async mark(db: Executor, brokers: readonly string[], at: Date, process: string): Promise<void> {
    if (brokers.length === 0) return;
    await db('bus_watch_marks')
      .insert(brokers.map((broker) => ({ broker, watched_until: at, process })))
      .onConflict('broker')
      .merge({
        watched_until: db.raw('greatest(bus_watch_marks.watched_until, excluded.watched_until)'),
        process: db.raw('excluded.process'),
      });
  }

  /** Gaps open now or ended at or after `since`, newest first. */
  async since(db: Executor, since: Date, limit = 1000): Promise<WatchGapRow[]> {
    const rows = (await db('bus_watch_gaps')
      .where((q) => q.whereNull('to_at').orWhere('to_at', '>=', since))
      .orderBy('from_at', 'desc')
      .limit(limit)
      .select(COLUMNS)) as Record<string, unknown>[];
    return rows.map(rowOf);
  }
}
