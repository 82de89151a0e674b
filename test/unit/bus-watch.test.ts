// The bus watch with sources and a gap store of the test's own: identity carried over a session,
// forgotten at disconnect and when a source comes back; observers that throw; sources that fail to
// start (retried, a gap), go down and up (a gap from..to); two sources of one broker (one delivers).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  perBusEventKind,
  type BusEvent,
  type BusEventKind,
  type BusEventSource,
  type Observability,
  type SourceStatus,
  type WatchedBusEvent,
} from '../../src/broker/bus-events.js';
import { BusWatch } from '../../src/detect/bus-watch.js';
import { WatchGapBook } from '../../src/detect/bus-watch-gaps.js';
import type { BusWatchGapStore, WatchGapRow } from '../../src/store/bus-watch-gap-store.js';
import type { Db } from '../../src/store/db.js';

const NOT_HERE: readonly BusEventKind[] = ['acl-denied', 'publish', 'undeliverable'];
const ALL = perBusEventKind<Observability>((k) => (NOT_HERE.includes(k) ? { observed: false, why: 'not here' } : { observed: true }));

class FakeSource implements BusEventSource {
  readonly observes: Record<BusEventKind, Observability>;
  emit: (e: BusEvent) => void = () => undefined;
  failStarts = 0;
  starts = 0;
  private listeners = new Set<(s: SourceStatus) => void>();
  constructor(
    readonly broker: string,
    readonly kind: string,
    observes: Partial<Record<BusEventKind, Observability>> = {},
  ) {
    this.observes = { ...ALL, ...observes };
  }
  async start(onEvent: (e: BusEvent) => void): Promise<void> {
    this.starts++;
    if (this.failStarts-- > 0) throw new Error('broker unreachable');
    this.emit = onEvent;
  }
  async stop(): Promise<void> {}
  dropped() {
    return { garbage: 2 };
  }
  onStatus(l: (s: SourceStatus) => void) {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  status(s: SourceStatus) {
    for (const l of this.listeners) l(s);
  }
}

/** bus_watch_gaps in memory; `down` makes every call fail like a database away. */
class MemoryGapStore {
  rows = new Map<string, WatchGapRow>();
  marksOf = new Map<string, { watchedUntil: Date; process: string }>();
  down = false;
  private check() {
    if (this.down) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
  }
  async upsert(_db: unknown, gaps: readonly WatchGapRow[]) {
    this.check();
    for (const g of gaps) this.rows.set(g.id, { ...g });
  }
  async closeOpenOfOthers(_db: unknown, brokers: readonly string[], process: string, at: Date) {
    this.check();
    const closed: WatchGapRow[] = [];
    for (const g of this.rows.values())
      if (brokers.includes(g.broker) && g.to === null && g.process !== process) {
        g.to = at;
        closed.push({ ...g });
      }
    return closed;
  }
  async marks(_db: unknown, brokers: readonly string[]) {
    this.check();
    return new Map([...this.marksOf].filter(([b]) => brokers.includes(b)));
  }
  async mark(_db: unknown, brokers: readonly string[], at: Date, process: string) {
    this.check();
    for (const b of brokers) this.marksOf.set(b, { watchedUntil: at, process });
  }
  async since(_db: unknown, since: Date) {
    this.check();
    return [...this.rows.values()].filter((g) => !g.to || g.to >= since);
  }
}

const fakeDb = { transaction: (f: (trx: unknown) => unknown) => f({}) } as unknown as Db;
const book = (store: MemoryGapStore, process = 'p1') =>
  new WatchGapBook(fakeDb, store as unknown as BusWatchGapStore, { now: () => new Date() }, { process, retryMs: 20 });
const at = new Date('2026-12-07T10:00:00Z');
const connect = (clientId: string, username?: string, broker = 'mosquitto'): BusEvent => ({
  kind: 'connect',
  broker,
  at,
  clientId,
  ...(username ? { username } : {}),
  source: { host: '10.0.0.1', port: 5000 },
  protocol: 'mqtt5',
  cleanStart: true,
  keepAliveSeconds: 60,
});
const sub = (clientId: string, broker = 'mosquitto'): BusEvent => ({ kind: 'subscribe', broker, at, clientId, topic: 't', qos: 0 });
const bye = (clientId: string): BusEvent => ({ kind: 'disconnect', broker: 'mosquitto', at, clientId, reason: 'client' });
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('BusWatch', () => {
  it('gives each event the identity of its session: the username, else the client id; forgotten at disconnect', async () => {
    const src = new FakeSource('mosquitto', 'fake');
    const seen: WatchedBusEvent[] = [];
    const watch = new BusWatch({ sources: [src], observers: [{ observe: (e) => seen.push(e) }], gaps: book(new MemoryGapStore()) });
    await watch.start();
    src.emit(connect('c-1', 'meter-1'));
    src.emit(sub('c-1'));
    src.emit(connect('c-2'));
    src.emit(sub('c-2'));
    src.emit(bye('c-1'));
    src.emit(sub('c-1'));
    src.emit(sub('never-seen'));
    src.emit({ kind: 'tls-failure', broker: 'mosquitto', at, failure: 'verify-failed', detail: 'x' });
    assert.deepEqual(
      seen.map((w) => [w.event.kind, 'clientId' in w.event ? w.event.clientId : undefined, w.identity]),
      [
        ['connect', 'c-1', 'meter-1'],
        ['subscribe', 'c-1', 'meter-1'],
        ['connect', 'c-2', 'c-2'],
        ['subscribe', 'c-2', 'c-2'],
        ['disconnect', 'c-1', 'meter-1'],
        ['subscribe', 'c-1', undefined],
        ['subscribe', 'never-seen', undefined],
        ['tls-failure', undefined, undefined],
      ],
    );
    const st = await watch.status();
    assert.equal(st.liveSessions, 1);
    assert.deepEqual(st.sources[0]!.events, { connect: 2, subscribe: 4, disconnect: 1, 'tls-failure': 1 });
    assert.deepEqual(st.sources[0]!.dropped, { garbage: 2 });
    await watch.stop();
  });

  it('keeps the live sessions bounded, the oldest forgotten first', async () => {
    const src = new FakeSource('mosquitto', 'fake');
    const seen: WatchedBusEvent[] = [];
    const watch = new BusWatch({
      sources: [src],
      observers: [{ observe: (e) => seen.push(e) }],
      gaps: book(new MemoryGapStore()),
      maxSessionsPerBroker: 100,
    });
    await watch.start();
    for (let i = 0; i < 1000; i++) src.emit(connect(`c-${i}`, `d-${i}`));
    assert.equal((await watch.status()).liveSessions, 100);
    assert.equal(watch.identityOf('mosquitto', 'c-999'), 'd-999');
    assert.equal(watch.identityOf('mosquitto', 'c-0'), undefined);
    await watch.stop();
  });

  it('an observer that throws is counted, and the others are told still', async () => {
    const src = new FakeSource('mosquitto', 'fake');
    const seen: WatchedBusEvent[] = [];
    class Broken {
      observe(): void {
        throw new Error('boom');
      }
    }
    const watch = new BusWatch({ sources: [src], observers: [new Broken()], gaps: book(new MemoryGapStore()) });
    watch.addObserver({ observe: (e) => seen.push(e) });
    await watch.start();
    src.emit(connect('c-1', 'meter-1'));
    src.emit(sub('c-1'));
    assert.equal(seen.length, 2);
    const st = await watch.status();
    assert.deepEqual(st.observers, [
      { name: 'Broken', errors: 2 },
      { name: 'Object', errors: 0 },
    ]);
    await watch.stop();
  });

  it('a source that fails to start is retried with backoff, its gap open meanwhile (start-failed) and closed when it starts', async () => {
    const store = new MemoryGapStore();
    const src = new FakeSource('mosquitto', 'fake');
    src.failStarts = 2;
    const watch = new BusWatch({ sources: [src], gaps: book(store), retry: { minMs: 30, maxMs: 60 } });
    await watch.start(); // resolves after the first try
    let st = await watch.status();
    assert.equal(st.sources[0]!.up, false);
    assert.equal(st.sources[0]!.why, 'start-failed');
    assert.match(st.sources[0]!.detail!, /broker unreachable/);
    assert.equal(st.sources[0]!.gaps[0]!.to, null);
    await wait(300);
    st = await watch.status();
    assert.equal(src.starts, 3);
    assert.equal(st.sources[0]!.up, true);
    assert.equal(st.sources[0]!.startFailures, 0);
    const [gap] = st.sources[0]!.gaps;
    assert.equal(gap!.why, 'start-failed');
    assert.ok(gap!.to && gap!.to >= gap!.from);
    assert.equal(store.rows.get(gap!.id)?.to?.getTime(), gap!.to.getTime(), 'written');
    await watch.stop();
  });

  it("down and up: a gap from..to with its reason; the broker's sessions are forgotten when it is back", async () => {
    const store = new MemoryGapStore();
    const src = new FakeSource('mosquitto', 'fake');
    const seen: WatchedBusEvent[] = [];
    const watch = new BusWatch({ sources: [src], observers: [{ observe: (e) => seen.push(e) }], gaps: book(store) });
    await watch.start();
    src.emit(connect('c-1', 'meter-1'));
    src.status({ up: false, why: 'session-dropped', detail: 'ECONNRESET' });
    src.status({ up: false, why: 'broker-down', detail: 'refused' });
    let st = await watch.status();
    assert.equal(st.sources[0]!.why, 'broker-down');
    src.status({ up: true, sessionsReset: true });
    src.emit(sub('c-1'));
    assert.equal(seen.at(-1)!.identity, undefined, 'the session before the gap is not carried over it');
    st = await watch.status();
    const gaps = st.sources[0]!.gaps.filter((g) => g.why !== 'watch-starting');
    assert.equal(gaps.length, 1);
    assert.equal(gaps[0]!.why, 'broker-down', 'refined while down');
    assert.ok(gaps[0]!.to);
    await watch.stop();
    // Stopped: an open gap for the next start to close.
    await wait(20);
    assert.ok([...store.rows.values()].some((g) => g.why === 'watch-stopped' && g.source === 'watch' && g.to === null));
    assert.ok(store.marksOf.get('mosquitto'), 'watched until the stop');
  });

  it('two sources of one broker: the first up delivers a kind, the other fills in while it is down', async () => {
    const file = new FakeSource('mosquitto', 'file', { publish: { observed: true } });
    const sys = new FakeSource('mosquitto', 'sys');
    const seen: WatchedBusEvent[] = [];
    const watch = new BusWatch({ sources: [file, sys], observers: [{ observe: (e) => seen.push(e) }], gaps: book(new MemoryGapStore()) });
    await watch.start();
    file.emit(connect('c-1', 'meter-1'));
    sys.emit(connect('c-1', 'meter-1'));
    file.emit({ kind: 'publish', broker: 'mosquitto', at, clientId: 'c-1', topic: 't', qos: 0, retain: false, bytes: 3 });
    assert.deepEqual(
      seen.map((w) => w.event.kind),
      ['connect', 'publish'],
    );
    file.status({ up: false, why: 'file-missing' });
    sys.emit(connect('c-2', 'meter-2'));
    assert.equal(seen.length, 3);
    const st = await watch.status();
    assert.equal(st.sources[1]!.duplicates, 1);
    const obs = watch.observability();
    assert.equal(obs.connect.observed, true);
    assert.equal(obs.publish.observed, false, 'only the file observes publishes, and it is down');
    await watch.stop();
  });
});

describe('WatchGapBook', () => {
  it('keeps gaps in memory while the database is away and writes them once it is back', async () => {
    const store = new MemoryGapStore();
    store.down = true;
    const b = book(store);
    const g = b.open('mosquitto', 'fake', 'session-dropped');
    b.end(g);
    await wait(50);
    assert.equal(b.waiting(), 1);
    const listed = await b.list(new Date(0));
    assert.equal(listed.complete, false);
    assert.deepEqual(
      listed.gaps.map((x) => x.id),
      [g.id],
    );
    store.down = false;
    await wait(100);
    assert.equal(b.waiting(), 0);
    assert.ok(store.rows.get(g.id)?.to);
    await b.close();
  });

  it('at start: closes the gaps another process left open, or records one from its last mark when it left none', async () => {
    const store = new MemoryGapStore();
    const t0 = new Date(Date.now() - 60_000);
    store.rows.set('old', { id: 'old', broker: 'a', source: 'x', from: t0, to: null, why: 'session-dropped', detail: null, process: 'p0' });
    store.marksOf.set('b', { watchedUntil: t0, process: 'p0' });
    const b = book(store, 'p1');
    const start = new Date();
    b.recover(['a', 'b', 'c'], start);
    await b.flush();
    assert.equal(store.rows.get('old')!.to?.getTime(), start.getTime());
    const made = [...store.rows.values()].filter((g) => g.broker === 'b');
    assert.equal(made.length, 1);
    assert.equal(made[0]!.why, 'watch-not-running');
    assert.equal(made[0]!.from.getTime(), t0.getTime());
    assert.equal(made[0]!.to?.getTime(), start.getTime());
    assert.equal([...store.rows.values()].filter((g) => g.broker === 'c').length, 0, 'never watched: no gap invented');
    await b.close();
  });
});
