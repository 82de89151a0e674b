// The bus watch's gaps: the times it could not see a broker, kept in memory and written to
// bus_watch_gaps; while PostgreSQL is away they wait in memory (bounded) and are written once it is back.
import { randomUUID } from 'node:crypto';
import type { WatchGapReason } from '../broker/bus-events.js';
import type { Clock } from '../shared/clock.js';
import type { Db } from '../store/db.js';
import type { BusWatchGapStore, WatchGapRow } from '../store/bus-watch-gap-store.js';

export interface WatchGap {
  id: string;
  broker: string;
  /** The source's kind, or `watch` for a gap of the whole watch (it was not running). */
  source: string;
  from: Date;
  /** Null while open. */
  to: Date | null;
  why: WatchGapReason;
  detail?: string;
}

export interface WatchGapBookOptions {
  /** This process (hostname:pid:random): gaps other processes left open are theirs to close at our start. */
  process: string;
  /** How long after a failed write the next is tried. */
  retryMs?: number;
  /** Gaps waiting to be written, at most (beyond it the oldest closed ones are forgotten, counted). */
  maxPending?: number;
  /** Gaps kept in memory for reports, at most. */
  maxRecent?: number;
  onError?: (e: unknown) => void;
}

const DAY_MS = 86_400_000;

const fromRow = (r: WatchGapRow): WatchGap => ({
  id: r.id,
  broker: r.broker,
  source: r.source,
  from: r.from,
  to: r.to,
  why: r.why as WatchGapReason,
  ...(r.detail ? { detail: r.detail } : {}),
});

/**
 * The gaps' book. `recover(brokers, at)` is the start of a process: gaps another process left open
 * are closed at `at` (nobody watched until then), and where a process ended without closing its
 * books (it died: no open gap of the whole watch, `watch-stopped`), a gap from its last mark (the
 * last time it knew the broker watched) to `at` is recorded. Writes go in order (the recovery first) by one flush at a time; a failed flush keeps
 * everything and is tried again.
 */
export class WatchGapBook {
  private readonly recent = new Map<string, WatchGap>();
  private readonly pending = new Map<string, WatchGap>();
  private recovery: { brokers: string[]; at: Date } | undefined;
  private pendingMark: { brokers: string[]; at: Date } | undefined;
  private flushing: Promise<boolean> | undefined;
  private again = false;
  private retry: NodeJS.Timeout | undefined;
  private failing = false;
  private closed = false;
  /** Gaps forgotten unwritten because too many waited. */
  unwritten = 0;

  constructor(
    private readonly db: Db,
    private readonly store: BusWatchGapStore,
    private readonly clock: Clock,
    private readonly o: WatchGapBookOptions,
  ) {}

  /** Queues the start-of-process recovery for these brokers at `at`; written with the next flush. */
  recover(brokers: string[], at: Date): void {
    this.closed = false;
    this.recovery = { brokers: [...new Set([...(this.recovery?.brokers ?? []), ...brokers])], at: this.recovery?.at ?? at };
    this.kick();
  }

  open(broker: string, source: string, why: WatchGapReason, detail?: string, from: Date = this.clock.now()): WatchGap {
    const gap: WatchGap = { id: randomUUID(), broker, source, from, to: null, why, ...(detail ? { detail } : {}) };
    this.put(gap);
    return gap;
  }

  /** A gap's cause, better known now (the connection refused after the session dropped). */
  refine(gap: WatchGap, why: WatchGapReason, detail?: string): void {
    if (gap.to || (gap.why === why && gap.detail === detail)) return;
    gap.why = why;
    if (detail) gap.detail = detail;
    else delete gap.detail;
    this.put(gap);
  }

  end(gap: WatchGap, at: Date = this.clock.now()): void {
    if (gap.to) return;
    gap.to = at < gap.from ? gap.from : at;
    this.put(gap);
  }

  /** These brokers are watched as of now (written with the next flush, the latest only). */
  mark(brokers: string[]): void {
    if (brokers.length === 0) return;
    this.pendingMark = { brokers, at: this.clock.now() };
    this.kick();
  }

  /** Gaps waiting to be written. */
  waiting(): number {
    return this.pending.size + (this.recovery ? 1 : 0);
  }

  /** The gaps this process knows (its own and those its recovery recorded) open or ended since `since`. */
  known(since: Date): WatchGap[] {
    return [...this.recent.values()].filter((g) => !g.to || g.to >= since);
  }

  /** Per broker, until when a watching process (any) last recorded it watched. */
  async watchedUntil(brokers: string[]): Promise<Map<string, Date>> {
    const marks = await this.store.marks(this.db, brokers);
    return new Map([...marks].map(([broker, m]) => [broker, m.watchedUntil]));
  }

  /** The gaps open or ended since `since`: the database's and this process's; `complete` false when the database could not be read. */
  async list(since: Date): Promise<{ gaps: WatchGap[]; complete: boolean }> {
    const byId = new Map<string, WatchGap>();
    let complete = true;
    try {
      for (const r of await this.store.since(this.db, since)) byId.set(r.id, fromRow(r));
    } catch {
      complete = false;
    }
    for (const g of this.known(since)) byId.set(g.id, { ...g });
    return { gaps: [...byId.values()].sort((a, b) => b.from.getTime() - a.from.getTime()), complete };
  }

  /** Writes what waits; true once nothing waits. One flush at a time; a call during one runs another after it. */
  flush(): Promise<boolean> {
    if (this.flushing) {
      this.again = true;
      return this.flushing;
    }
    this.flushing = (async () => {
      let ok: boolean;
      do {
        this.again = false;
        ok = await this.writeOnce();
      } while (ok && this.again);
      return ok && this.waiting() === 0 && !this.pendingMark;
    })().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  /** Stops retrying (after one last flush). */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
  }

  private put(gap: WatchGap): void {
    this.recent.delete(gap.id);
    this.recent.set(gap.id, gap);
    const max = this.o.maxRecent ?? 1_000;
    const old = this.clock.now().getTime() - DAY_MS;
    for (const [id, g] of this.recent) {
      if (this.recent.size <= max && !(g.to && g.to.getTime() < old)) break;
      if (g.to || this.recent.size > max) this.recent.delete(id);
    }
    this.pending.set(gap.id, gap);
    const maxPending = this.o.maxPending ?? 10_000;
    if (this.pending.size > maxPending) {
      for (const [id, g] of this.pending) {
        if (this.pending.size <= maxPending) break;
        if (g.to) {
          this.pending.delete(id);
          this.unwritten++;
        }
      }
    }
    this.kick();
  }

  private kick(): void {
    if (this.closed || this.failing) return; // while failing, the retry timer writes
    void this.flush();
  }

  private async writeOnce(): Promise<boolean> {
    const recovery = this.recovery;
    const gaps = [...this.pending.values()].map((g) => ({ ...g }));
    const mark = this.pendingMark;
    if (!recovery && gaps.length === 0 && !mark) return true;
    try {
      if (recovery) {
        const recovered = await this.recoverNow(recovery.brokers, recovery.at);
        if (this.recovery === recovery) this.recovery = undefined;
        for (const g of recovered) {
          this.recent.delete(g.id);
          this.recent.set(g.id, g);
        }
      }
      await this.store.upsert(
        this.db,
        gaps.map((g) => ({ ...g, to: g.to, detail: g.detail ?? null, process: this.o.process })),
      );
      for (const g of gaps) {
        const now = this.pending.get(g.id);
        // Written as it is now (not changed since it was read): nothing waits for it.
        if (now && now.to?.getTime() === g.to?.getTime() && now.why === g.why && now.detail === g.detail) this.pending.delete(g.id);
      }
      if (mark) {
        await this.store.mark(this.db, mark.brokers, mark.at, this.o.process);
        if (this.pendingMark === mark) this.pendingMark = undefined;
      }
      if (this.failing) {
        this.failing = false;
        if (this.retry) clearTimeout(this.retry);
        this.retry = undefined;
      }
      return true;
    } catch (e) {
      if (!this.failing) this.o.onError?.(e);
      this.failing = true;
      if (!this.closed && !this.retry) {
        // The timer's flush fails again into here, and sets the next one.
        this.retry = setTimeout(() => {
          this.retry = undefined;
          void this.flush();
        }, this.o.retryMs ?? 5_000);
        this.retry.unref();
      }
      return false;
    }
  }

  private async recoverNow(brokers: string[], at: Date): Promise<WatchGap[]> {
    return this.db.transaction(async (trx) => {
      const closed = (await this.store.closeOpenOfOthers(trx, brokers, this.o.process, at)).map(fromRow);
      const marks = await this.store.marks(trx, brokers);
      const made: WatchGap[] = [];
      for (const broker of brokers) {
        // A stop closed its books (a gap of the whole watch, now closed): the mark says no more.
        if (closed.some((g) => g.broker === broker && g.source === 'watch')) continue;
        const m = marks.get(broker);
        if (!m || m.process === this.o.process || m.watchedUntil >= at) continue;
        made.push({
          id: randomUUID(),
          broker,
          source: 'watch',
          from: m.watchedUntil,
          to: at,
          why: 'watch-not-running',
          detail: 'the watch process ended without recording a gap; from the last time it knew the broker watched',
        });
      }
      await this.store.upsert(
        trx,
        made.map((g) => ({ ...g, detail: g.detail ?? null, process: this.o.process })),
      );
      return [...closed, ...made];
    });
  }
}
