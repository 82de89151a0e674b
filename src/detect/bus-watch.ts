// The bus watch: starts the broker event sources, gives each event the identity of its client,
// hands it to the observers (presence, detectors), and keeps the books of what it could not see.
import {
  BUS_EVENT_KINDS,
  type BusEvent,
  type BusEventKind,
  type BusEventSource,
  type BusObserver,
  type DropCounts,
  type Observability,
  type SourceStatus,
  type WatchedBusEvent,
  type WatchGapReason,
} from '../broker/bus-events.js';
import { systemClock, type Clock } from '../shared/clock.js';
import type { WatchGap, WatchGapBook } from './bus-watch-gaps.js';

export interface BusWatchOptions {
  /** In order of preference: where two sources of one broker observe a kind, the first one up delivers it. */
  sources: BusEventSource[];
  observers?: BusObserver[];
  gaps: WatchGapBook;
  clock?: Clock;
  /** Live sessions remembered per broker (the oldest forgotten first). */
  maxSessionsPerBroker?: number;
  /** Backoff of a source that failed to start: from minMs, doubling, up to maxMs. */
  retry?: { minMs: number; maxMs: number };
  /** How often the watch records that its brokers are watched (the mark a successor's gap starts from). */
  markEveryMs?: number;
  onError?: (e: unknown, where: string) => void;
}

/** One source as GET /v1/bus/watch reports it. */
export interface BusWatchSourceStatus {
  broker: string;
  kind: string;
  up: boolean;
  /** Up or down since. */
  since: Date;
  /** Why it is down (with the source's words, if any). */
  why?: WatchGapReason;
  detail?: string;
  /** Events per second over the last minute. */
  eventsPerSecond: number;
  /** Events delivered by the source since the watch started, per kind. */
  events: Partial<Record<BusEventKind, number>>;
  /** Events of a kind another source of the same broker delivers (not handed on twice). */
  duplicates: number;
  /** Input the source could not use, per reason. */
  dropped: DropCounts;
  observes: Readonly<Record<BusEventKind, Observability>>;
  /** Failed starts since the last success. */
  startFailures: number;
  /** Gaps of this source (and of the whole watch, source `watch`) open or ended in the last 24 h, newest first. */
  gaps: WatchGap[];
}

export interface BusWatchStatus {
  running: boolean;
  sources: BusWatchSourceStatus[];
  /** Observers by name, with the number of times each threw. */
  observers: { name: string; errors: number }[];
  /** Sessions whose identity the watch carries over. */
  liveSessions: number;
  /** False when the gaps could not be read from the database (this process's are shown). */
  gapsComplete: boolean;
  /** Gaps waiting to be written (the database away). */
  gapsWaiting: number;
}

/** Per event kind: whether a source that is up observes it now, and what each configured source says. */
export type BusObservability = Record<
  BusEventKind,
  { observed: boolean; sources: { broker: string; kind: string; up: boolean; observes: Observability }[] }
>;

class RateWindow {
  private readonly buckets = new Uint32Array(60);
  private last = 0;

  add(sec: number): void {
    this.roll(sec);
    this.buckets[sec % 60]!++;
  }

  perSecond(sec: number): number {
    this.roll(sec);
    let n = 0;
    for (const b of this.buckets) n += b;
    return n / 60;
  }

  private roll(sec: number): void {
    if (sec - this.last >= 60) this.buckets.fill(0);
    else for (let s = this.last + 1; s <= sec; s++) this.buckets[s % 60] = 0;
    if (sec > this.last) this.last = sec;
  }
}

interface SourceState {
  source: BusEventSource;
  broker: string;
  kind: string;
  up: boolean;
  since: Date;
  why?: WatchGapReason;
  detail?: string;
  gap?: WatchGap;
  events: Partial<Record<BusEventKind, number>>;
  duplicates: number;
  rate: RateWindow;
  startFailures: number;
  retry?: NodeJS.Timeout;
  unlisten?: () => void;
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

/**
 * The watch. Identity: a connect's username (the certificate CN under use_identity_as_username),
 * else its client id, remembered for the session; later events of the same (broker, client id)
 * carry it; a disconnect forgets it; a source that comes back (its session to the broker was lost,
 * or the broker restarted) forgets the broker's sessions, whose state is unknown from there. An
 * event of a session the watch did not see begin has no identity (the client id alone does not
 * say who holds it). Observers are told synchronously in each source's order; one that throws is
 * counted and the others are told still.
 */
export class BusWatch {
  private readonly states: SourceState[];
  private readonly observers: BusObserver[];
  private readonly errors = new Map<BusObserver, number>();
  private readonly sessions = new Map<string, Map<string, string>>();
  private readonly deliverers = new Map<string, SourceState | undefined>();
  private readonly clock: Clock;
  private readonly maxSessions: number;
  private running = false;
  private markTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: BusWatchOptions) {
    this.clock = o.clock ?? systemClock;
    this.maxSessions = o.maxSessionsPerBroker ?? 200_000;
    this.observers = [...(o.observers ?? [])];
    const now = this.clock.now();
    this.states = o.sources.map((source) => ({
      source,
      broker: source.broker,
      kind: source.kind ?? source.constructor.name,
      up: false,
      since: now,
      events: {},
      duplicates: 0,
      rate: new RateWindow(),
      startFailures: 0,
    }));
    this.route();
  }

  /** Adds an observer (presence, detectors); returns its removal. */
  addObserver(observer: BusObserver): () => void {
    this.observers.push(observer);
    return () => {
      const i = this.observers.indexOf(observer);
      if (i >= 0) this.observers.splice(i, 1);
    };
  }

  get configured(): boolean {
    return this.states.length > 0;
  }

  /**
   * Starts every source; one that fails is retried with backoff (its gap open, why `start-failed`).
   * Resolves once every source had its first try; never rejects.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const at = this.clock.now();
    this.o.gaps.recover([...new Set(this.states.map((s) => s.broker))], at);
    for (const s of this.states) {
      s.up = false;
      s.since = at;
      s.why = 'watch-starting';
      delete s.detail;
      s.gap = this.o.gaps.open(s.broker, s.kind, 'watch-starting', undefined, at);
      s.unlisten = s.source.onStatus?.((st) => this.reported(s, st));
    }
    this.markTimer = setInterval(() => this.mark(), this.o.markEveryMs ?? 30_000);
    this.markTimer.unref();
    for (const o of this.observers) {
      try {
        o.watchStarted?.();
      } catch (e) {
        this.o.onError?.(e, `starting ${o.constructor.name}`);
      }
    }
    await Promise.all(this.states.map((s) => this.attempt(s)));
  }

  /** Stops the sources; a broker that was watched gets an open gap of the whole watch (`watch-stopped`) for the next start to close. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    if (this.markTimer) clearInterval(this.markTimer);
    this.markTimer = undefined;
    const at = this.clock.now();
    // Watched until now; from now a gap of the whole watch per broker, for the next start to close.
    const watched = [...new Set(this.states.filter((s) => s.up).map((s) => s.broker))];
    this.o.gaps.mark(watched);
    for (const broker of watched) this.o.gaps.open(broker, 'watch', 'watch-stopped', 'the service stopped', at);
    await Promise.all(
      this.states.map(async (s) => {
        if (s.retry) clearTimeout(s.retry);
        s.retry = undefined;
        s.unlisten?.();
        s.unlisten = undefined;
        try {
          await s.source.stop();
        } catch (e) {
          this.o.onError?.(e, `stopping the ${s.kind} source of ${s.broker}`);
        }
        if (s.up) {
          s.up = false;
          s.since = at;
          s.why = 'watch-stopped';
        }
      }),
    );
    this.route();
    await Promise.all(
      this.observers.map((o) => o.watchStopped?.().catch((e: unknown) => this.o.onError?.(e, `stopping ${o.constructor.name}`))),
    );
    await this.o.gaps.close();
  }

  /** The identity the watch carries for a client's live session, if it saw it begin. */
  identityOf(broker: string, clientId: string): string | undefined {
    return this.sessions.get(broker)?.get(clientId);
  }

  /** For posture and detectors: which kinds a source that is up observes now. */
  observability(): BusObservability {
    const out = {} as BusObservability;
    for (const kind of BUS_EVENT_KINDS) {
      const sources = this.states.map((s) => ({ broker: s.broker, kind: s.kind, up: s.up, observes: s.source.observes[kind] }));
      out[kind] = { observed: sources.some((s) => s.up && s.observes.observed), sources };
    }
    return out;
  }

  /** The brokers its sources watch. */
  brokers(): string[] {
    return [...new Set(this.states.map((s) => s.broker))];
  }

  /** Per broker, until when a watching process (this one or another sharing the database) last recorded it watched. */
  watchedUntil(brokers: string[]): Promise<Map<string, Date>> {
    return this.o.gaps.watchedUntil(brokers);
  }

  /** The gaps open or ended since `since`, every broker's (posture's coverage); `complete` false when the database could not be read. */
  gaps(since: Date): Promise<{ gaps: WatchGap[]; complete: boolean }> {
    return this.o.gaps.list(since);
  }

  async status(): Promise<BusWatchStatus> {
    const now = this.clock.now();
    const { gaps, complete } = await this.o.gaps.list(new Date(now.getTime() - 86_400_000));
    const sec = Math.floor(Date.now() / 1000);
    let live = 0;
    for (const m of this.sessions.values()) live += m.size;
    return {
      running: this.running,
      sources: this.states.map((s) => {
        let dropped: DropCounts = {};
        try {
          dropped = s.source.dropped();
        } catch {
          dropped = {};
        }
        return {
          broker: s.broker,
          kind: s.kind,
          up: s.up,
          since: s.since,
          ...(s.up || !s.why ? {} : { why: s.why }),
          ...(s.up || !s.detail ? {} : { detail: s.detail }),
          eventsPerSecond: Math.round(s.rate.perSecond(sec) * 100) / 100,
          events: { ...s.events },
          duplicates: s.duplicates,
          dropped,
          observes: s.source.observes,
          startFailures: s.startFailures,
          gaps: gaps.filter((g) => g.broker === s.broker && (g.source === s.kind || g.source === 'watch')),
        };
      }),
      observers: this.observers.map((o) => ({ name: o.constructor.name, errors: this.errors.get(o) ?? 0 })),
      liveSessions: live,
      gapsComplete: complete,
      gapsWaiting: this.o.gaps.waiting(),
    };
  }

  private async attempt(s: SourceState): Promise<void> {
    s.retry = undefined;
    if (!this.running) return;
    try {
      await s.source.start((e) => this.event(s, e));
    } catch (e) {
      s.startFailures++;
      this.down(s, 'start-failed', errorText(e));
      if (!this.running) return;
      const r = this.o.retry ?? { minMs: 1_000, maxMs: 60_000 };
      const delay = Math.min(r.maxMs, r.minMs * 2 ** Math.min(s.startFailures - 1, 20));
      s.retry = setTimeout(() => void this.attempt(s), delay);
      s.retry.unref();
      return;
    }
    if (!this.running) {
      await s.source.stop().catch(() => undefined);
      return;
    }
    s.startFailures = 0;
    this.up(s, true);
  }

  private reported(s: SourceState, st: SourceStatus): void {
    if (!this.running) return;
    if (st.up) this.up(s, Boolean(st.sessionsReset));
    else this.down(s, st.why, st.detail);
  }

  private up(s: SourceState, reset: boolean): void {
    const wasDown = !s.up;
    if (wasDown) {
      const at = this.clock.now();
      s.up = true;
      s.since = at;
      delete s.why;
      delete s.detail;
      if (s.gap) this.o.gaps.end(s.gap, at);
      s.gap = undefined;
      this.route();
      this.mark();
    }
    // Back after a loss (or the broker restarted): the sessions it had are unknown.
    if (wasDown || reset) this.sessions.delete(s.broker);
  }

  private down(s: SourceState, why: WatchGapReason, detail?: string): void {
    if (s.up) {
      const at = this.clock.now();
      s.up = false;
      s.since = at;
      s.gap = this.o.gaps.open(s.broker, s.kind, why, detail, at);
      this.route();
    } else if (s.gap) this.o.gaps.refine(s.gap, why, detail);
    s.why = why;
    if (detail) s.detail = detail;
    else delete s.detail;
  }

  private mark(): void {
    this.o.gaps.mark([...new Set(this.states.filter((s) => s.up).map((s) => s.broker))]);
  }

  /** Per broker and kind, the source that delivers it: the first one up that observes it. */
  private route(): void {
    this.deliverers.clear();
    for (const s of this.states) {
      for (const kind of BUS_EVENT_KINDS) {
        const key = `${s.broker}\u0000${kind}`;
        if (this.deliverers.get(key)) continue;
        this.deliverers.set(key, s.up && s.source.observes[kind].observed ? s : undefined);
      }
    }
  }

  private event(s: SourceState, e: BusEvent): void {
    s.events[e.kind] = (s.events[e.kind] ?? 0) + 1;
    s.rate.add(Math.floor(Date.now() / 1000));
    const deliverer = this.deliverers.get(`${e.broker}\u0000${e.kind}`);
    // A source not (yet) up delivers what no source that is up delivers.
    if (deliverer && deliverer !== s) {
      s.duplicates++;
      return;
    }
    const watched = this.enrich(e);
    for (const o of this.observers) {
      try {
        o.observe(watched);
      } catch {
        this.errors.set(o, (this.errors.get(o) ?? 0) + 1);
      }
    }
  }

  private enrich(e: BusEvent): WatchedBusEvent {
    if (e.kind === 'tls-failure') return { event: e };
    let table = this.sessions.get(e.broker);
    if (e.kind === 'connect') {
      const identity = e.username ? e.username : e.clientId;
      if (!table) this.sessions.set(e.broker, (table = new Map()));
      table.delete(e.clientId);
      table.set(e.clientId, identity);
      if (table.size > this.maxSessions) table.delete(table.keys().next().value as string);
      return { event: e, identity };
    }
    if (e.clientId === undefined) return { event: e };
    const identity = table?.get(e.clientId);
    if (e.kind === 'disconnect') table?.delete(e.clientId);
    return identity === undefined ? { event: e } : { event: e, identity };
  }
}
