import type { EventFilter, RecordedEvent, SecurityEvents } from './security-events.js';

/** Ids below the highest one sent that are read again: an event committed after a later one (its transaction was longer) is still sent. */
const LATE_IDS = 200;
/** Larger than LATE_IDS, so a full page always holds events not sent yet. */
const PAGE = 1000;

interface Subscription {
  filter: EventFilter;
  /** Nothing at or below this id is ever sent: where the subscriber started. */
  floor: number;
  /** The highest id sent. */
  cursor: number;
  sent: Set<number>;
  send(e: RecordedEvent): void;
  end(): void;
  busy: boolean;
  again: boolean;
  closed: boolean;
}

/**
 * Security events as they are committed, for server-sent event streams. The table is the one
 * source: a subscriber reads what follows its cursor when this process records an event and, for
 * events recorded by other processes, every `pollMs`. Resuming from an event id (Last-Event-ID)
 * sends what was missed first.
 */
export class EventFeed {
  private readonly subscriptions = new Set<Subscription>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly events: SecurityEvents,
    private readonly pollMs = 1000,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {
    events.listen(() => {
      for (const s of this.subscriptions) this.pull(s);
    });
  }

  /** The id a stream that starts now starts after. */
  now(): Promise<number> {
    return this.events.lastId();
  }

  /** Starts sending events after `afterId` (from now() or a Last-Event-ID); `end` is called when the feed closes. Returns the unsubscribe. */
  subscribe(filter: EventFilter, afterId: number, send: (e: RecordedEvent) => void, end: () => void): () => void {
    const s: Subscription = {
      filter,
      floor: afterId,
      cursor: afterId,
      sent: new Set(),
      send,
      end,
      busy: false,
      again: false,
      closed: false,
    };
    this.subscriptions.add(s);
    this.timer ??= setInterval(() => {
      for (const sub of this.subscriptions) this.pull(sub);
    }, this.pollMs).unref();
    this.pull(s);
    return () => {
      s.closed = true;
      this.subscriptions.delete(s);
      if (this.subscriptions.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }

  get size(): number {
    return this.subscriptions.size;
  }

  /** Ends every stream (the service is stopping). */
  close(): void {
    for (const s of this.subscriptions) {
      s.closed = true;
      s.end();
    }
    this.subscriptions.clear();
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One read at a time per subscriber; a poke while it reads runs one more read after. */
  private pull(s: Subscription): void {
    if (s.busy) {
      s.again = true;
      return;
    }
    s.busy = true;
    this.read(s)
      .catch((e) => this.onError(e))
      .finally(() => {
        s.busy = false;
        if (s.again && !s.closed) {
          s.again = false;
          this.pull(s);
        }
      });
  }

  private async read(s: Subscription): Promise<void> {
    for (;;) {
      const from = Math.max(s.floor, s.cursor - LATE_IDS);
      const rows = await this.events.after(s.filter, from, PAGE);
      for (const e of rows) {
        if (s.closed) return;
        if (s.sent.has(e.id)) continue;
        s.send(e);
        s.sent.add(e.id);
        s.cursor = Math.max(s.cursor, e.id);
      }
      for (const id of s.sent) if (id <= s.cursor - LATE_IDS) s.sent.delete(id);
      if (rows.length < PAGE) return;
    }
  }
}
