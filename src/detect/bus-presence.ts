// Presence on the bus (issue 26 item 2): who is connected where, written in batches.

import type { BusObserver, WatchedBusEvent } from '../broker/bus-events.js';
import type { Clock } from '../shared/clock.js';
import { systemClock } from '../shared/clock.js';
import { pgText } from '../shared/pg-text.js';
import type { Db } from '../store/db.js';
import type { BusPresenceStore, PresenceUpdate } from '../store/bus-presence-store.js';

export interface PresenceRecorderOptions {
  /** How often pending updates are written (BUS_PRESENCE_FLUSH_MS). */
  flushMs: number;
  /** A flush starts at once when this many identities are pending, and writes at most this many rows (one statement). */
  batchKeys?: number;
  /**
   * How many identities may wait unwritten (the database away): beyond, updates for identities not
   * already pending are dropped and counted; those pending keep coalescing (BUS_PRESENCE_MAX_PENDING).
   */
  maxPending?: number;
  clock?: Clock;
  /** A failed write (the rows stay pending and are retried on the next tick); told at most once a minute while writes keep failing. */
  onError?: (e: unknown) => void;
}

/** Events the recorder did not take, by why. */
export interface PresenceIgnored {
  /** No client is known for it (a TLS failure, a connection refused before CONNECT). */
  'no-identity': number;
  /** A kind that says nothing of a client's presence (a TLS failure). */
  'not-presence': number;
  /** An identity longer than MAX_IDENTITY_LENGTH (no device id is; a hostile client id may be). */
  'identity-too-long': number;
}

export interface PresenceRecorderStats {
  /** Identities waiting to be written. */
  pending: number;
  /** Statements written. */
  flushes: number;
  /** Statements that failed (their rows were kept and retried). */
  failedFlushes: number;
  /** Rows the statements inserted or changed. */
  rowsWritten: number;
  /** Updates dropped because maxPending identities were pending. */
  dropped: number;
  ignored: PresenceIgnored;
}

export const PRESENCE_BATCH_KEYS = 5_000;
export const PRESENCE_MAX_PENDING = 200_000;
/** Identities are device ids (64 characters) or MQTT client ids (up to 65,535 bytes): longer ones are no device and would not fit an index entry. */
export const MAX_IDENTITY_LENGTH = 512;
/** Client ids, usernames, hosts and the broker's words are cut to this (they are shown, never matched against). */
const MAX_TEXT_LENGTH = 1024;
const ERROR_REPORT_EVERY_MS = 60_000;

const text = (s: string): string => pgText(s.length > MAX_TEXT_LENGTH ? s.slice(0, MAX_TEXT_LENGTH) : s);
const textOrNull = (s: string | undefined): string | null => (s === undefined ? null : text(s));

/** What a batch knows of one (broker, identity), in the broker's order. */
interface Entry {
  broker: string;
  identity: string;
  connected: boolean;
  /** When the state was last set by a connect or disconnect (-Infinity: never in this batch). */
  stateAt: number;
  connect: (NonNullable<PresenceUpdate['connect']> & { clientId: string }) | null;
  disconnect: (NonNullable<PresenceUpdate['disconnect']> & { clientId: string | null }) | null;
  activity: { at: number; clientId: string | null } | null;
  connects: number;
  disconnects: number;
}

const newEntry = (broker: string, identity: string): Entry => ({
  broker,
  identity,
  connected: false,
  stateAt: -Infinity,
  connect: null,
  disconnect: null,
  activity: null,
  connects: 0,
  disconnects: 0,
});

/** Whether a disconnect of `clientId` ends the session `connect` began (the same client id, or one of them unknown). */
const endsSession = (connect: Entry['connect'], clientId: string | null): boolean =>
  connect === null || clientId === null || connect.clientId === clientId;

/** Applies `later` (a newer batch of the same key) onto `earlier`, as the store's upsert does. */
function mergeInto(earlier: Entry, later: Entry): Entry {
  const laterState = Math.max(later.connect?.at.getTime() ?? -Infinity, later.disconnect?.at.getTime() ?? -Infinity);
  const earlierState = Math.max(earlier.connect?.at.getTime() ?? -Infinity, earlier.disconnect?.at.getTime() ?? -Infinity);
  if (laterState > -Infinity && laterState >= earlierState) {
    if (later.connected) earlier.connected = true;
    else if (later.connect && later.connect.at.getTime() >= (earlier.connect?.at.getTime() ?? -Infinity)) earlier.connected = false;
    else if (endsSession(earlier.connect, later.connect?.clientId ?? later.disconnect?.clientId ?? null)) earlier.connected = false;
    earlier.stateAt = Math.max(earlier.stateAt, later.stateAt);
  }
  if (later.connect && (!earlier.connect || later.connect.at >= earlier.connect.at)) earlier.connect = later.connect;
  if (later.disconnect && (!earlier.disconnect || later.disconnect.at >= earlier.disconnect.at)) earlier.disconnect = later.disconnect;
  if (later.activity && (!earlier.activity || later.activity.at >= earlier.activity.at)) earlier.activity = later.activity;
  earlier.connects += later.connects;
  earlier.disconnects += later.disconnects;
  return earlier;
}

function toUpdate(e: Entry): PresenceUpdate {
  const c = e.connect;
  const d = e.disconnect;
  return {
    broker: e.broker,
    identity: e.identity,
    clientId: c?.clientId ?? d?.clientId ?? e.activity?.clientId ?? null,
    connected: e.connected,
    connect: c && { at: c.at, username: c.username, source: c.source, protocol: c.protocol, keepAliveSeconds: c.keepAliveSeconds },
    disconnect: d && { at: d.at, reason: d.reason, detail: d.detail },
    connects: e.connects,
    disconnects: e.disconnects,
    activityAt: e.activity ? new Date(e.activity.at) : null,
  };
}

/**
 * Records presence from the bus watch's events: observe() coalesces them in memory per (broker,
 * identity) — the latest state, the latest connect and disconnect, counts, the latest activity —
 * and a flush writes what is pending in ONE statement (BusPresenceStore.upsert), every `flushMs`
 * or at once when `batchKeys` identities are pending, one flush at a time. A connect storm of
 * 10,000 devices is two statements. With the database away the updates keep coalescing (memory
 * bounded by the identities, at most `maxPending` + `batchKeys`; updates of further identities are
 * dropped and counted) and are retried on the next tick. Never throws from observe().
 */
export class PresenceRecorder implements BusObserver {
  private pending = new Map<string, Entry>();
  private readonly batchKeys: number;
  private readonly maxPending: number;
  private readonly clock: Clock;
  private readonly timer: NodeJS.Timeout;
  private inFlight: Promise<void> | undefined;
  private soon = false;
  private stopped = false;
  private lastErrorReport = -Infinity;
  private readonly counts = { flushes: 0, failedFlushes: 0, rowsWritten: 0, dropped: 0 };
  private readonly ignored: PresenceIgnored = { 'no-identity': 0, 'not-presence': 0, 'identity-too-long': 0 };

  constructor(
    private readonly db: Db,
    private readonly store: BusPresenceStore,
    private readonly opts: PresenceRecorderOptions,
  ) {
    this.batchKeys = opts.batchKeys ?? PRESENCE_BATCH_KEYS;
    this.maxPending = opts.maxPending ?? PRESENCE_MAX_PENDING;
    this.clock = opts.clock ?? systemClock;
    this.timer = setInterval(() => this.tick(), opts.flushMs);
    this.timer.unref();
  }

  observe(w: WatchedBusEvent): void {
    try {
      this.take(w);
    } catch (e) {
      this.report(e); // never thrown at the watch
    }
  }

  private take({ event: e, identity }: WatchedBusEvent): void {
    if (e.kind === 'tls-failure') {
      this.ignored['not-presence']++;
      return;
    }
    if (identity === undefined || identity === '') {
      this.ignored['no-identity']++;
      return;
    }
    if (identity.length > MAX_IDENTITY_LENGTH) {
      this.ignored['identity-too-long']++;
      return;
    }
    const broker = text(e.broker);
    const id = pgText(identity);
    const key = `${broker}\u0000${id}`;
    let entry = this.pending.get(key);
    if (!entry) {
      if (this.pending.size >= this.maxPending) {
        this.counts.dropped++;
        return;
      }
      entry = newEntry(broker, id);
      this.pending.set(key, entry);
      if (this.pending.size >= this.batchKeys) this.flushSoon();
    }
    const at = e.at.getTime();
    switch (e.kind) {
      case 'connect': {
        entry.connects++;
        if (!entry.connect || at >= entry.connect.at.getTime())
          entry.connect = {
            at: e.at,
            clientId: text(e.clientId),
            username: textOrNull(e.username),
            source: { host: text(e.source.host), port: e.source.port ?? null },
            protocol: e.protocol,
            keepAliveSeconds: e.keepAliveSeconds,
          };
        if (at >= entry.stateAt) {
          entry.connected = true;
          entry.stateAt = at;
        }
        break;
      }
      case 'disconnect': {
        entry.disconnects++;
        const clientId = textOrNull(e.clientId);
        if (!entry.disconnect || at >= entry.disconnect.at.getTime())
          entry.disconnect = { at: e.at, clientId, reason: e.reason, detail: textOrNull(e.detail) };
        if (at >= entry.stateAt && endsSession(entry.connect, clientId)) {
          entry.connected = false;
          entry.stateAt = at;
        }
        break;
      }
      default:
        if (!entry.activity || at >= entry.activity.at) entry.activity = { at, clientId: text(e.clientId) };
    }
  }

  /** Writes everything pending, one statement per `batchKeys` identities; rejects when a write fails (its rows stay pending). */
  async flush(): Promise<void> {
    for (;;) {
      while (this.inFlight) await this.inFlight.catch(() => undefined);
      if (this.pending.size === 0) return;
      await this.writeOnce();
    }
  }

  /** Stops the timer and writes what is pending (rejects when that fails). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.flush();
  }

  stats(): PresenceRecorderStats {
    return { pending: this.pending.size, ...this.counts, ignored: { ...this.ignored } };
  }

  private tick(): void {
    if (this.inFlight || this.pending.size === 0) return;
    this.writeOnce().then(
      () => {
        if (this.pending.size >= this.batchKeys) this.flushSoon();
      },
      (e: unknown) => this.report(e),
    );
  }

  private flushSoon(): void {
    if (this.soon || this.stopped) return;
    this.soon = true;
    setImmediate(() => {
      this.soon = false;
      this.tick();
    });
  }

  /** Takes up to batchKeys pending identities (oldest first) and writes them in one statement; on failure puts them back. */
  private writeOnce(): Promise<void> {
    const batch: Entry[] = [];
    for (const [key, entry] of this.pending) {
      if (batch.length >= this.batchKeys) break;
      batch.push(entry);
      this.pending.delete(key);
    }
    const run = (async () => {
      try {
        const rows = await this.store.upsert(this.db, batch.map(toUpdate), this.clock.now());
        this.counts.flushes++;
        this.counts.rowsWritten += rows;
        this.lastErrorReport = -Infinity;
      } catch (e) {
        this.counts.failedFlushes++;
        this.requeue(batch);
        throw e;
      }
    })();
    this.inFlight = run;
    return run.finally(() => {
      if (this.inFlight === run) this.inFlight = undefined;
    });
  }

  /** A failed batch goes back under what arrived meanwhile (older first), beside the cap: at most batchKeys more. */
  private requeue(batch: Entry[]): void {
    for (const old of batch) {
      const key = `${old.broker}\u0000${old.identity}`;
      const newer = this.pending.get(key);
      this.pending.set(key, newer ? mergeInto(old, newer) : old);
    }
  }

  private report(e: unknown): void {
    const now = Date.now();
    if (now - this.lastErrorReport < ERROR_REPORT_EVERY_MS) return;
    this.lastErrorReport = now;
    this.opts.onError?.(e);
  }
}
