import {
  BUS_EVENT_KINDS,
  type BusEvent,
  type BusEventKind,
  type BusObserver,
  type Observability,
  type WatchedBusEvent,
} from '../broker/bus-events.js';
import type { Clock } from '../shared/clock.js';
import { GroupBatcher } from '../shared/group-batcher.js';
import { isWatchRule, type DetectionRule, type WatchDetector, type WatchRule } from '../shared/detection-rules.js';
import { pgJsonObject, pgText } from '../shared/pg-text.js';
import type { SecurityEventInput } from './security-events.js';
import type { ResponseContext } from './response-runner.js';

/** A device as revoked-certificate needs it: its status and the serial of its current certificate. */
export interface DeviceStanding {
  status: string;
  currentSerial: string | null;
}

/** What the detectors read from the rest of the service; each is optional (its detector then reports itself not observed). */
export interface BusDetectorPorts {
  /** One answer per identity, in order: the device, or undefined when no device has that id. */
  deviceStanding?(identities: string[]): Promise<(DeviceStanding | undefined)[]>;
  /** Devices last seen on the bus before `before` (oldest first), at most `limit`: the presence store. */
  silentDevices?(q: {
    before: Date;
    lot?: string;
    profile?: 'device' | 'broker';
    limit: number;
  }): Promise<{ deviceId: string; broker?: string; lastSeenAt: Date }[]>;
}

/** Runs a rule's actions: the ResponseRunner shared with the event rules (AutomaticResponses.runner). */
export interface ActionRunner {
  run(actions: WatchRule['actions'], ctx: ResponseContext): Promise<Record<string, unknown>>;
}

export interface BusDetectorOptions {
  /** Keys (clients, devices, sources, sessions) one rule remembers; beyond it the least recently hit is evicted (counted). Default 20,000. */
  maxKeysPerRule?: number;
  /**
   * The idle-connected sweep's period and the silent sweep's. Default: a tenth of the shortest
   * rule's idleSeconds (silentAfterSeconds), at least 1 s and at most 30 s (300 s), so that an
   * event comes at most a tenth of the rule's own time late.
   */
  idleSweepSeconds?: number;
  silentSweepSeconds?: number;
  /** How long a device's standing is cached (default 10 s; this process's own revocations clear it at once). */
  standingCacheSeconds?: number;
  /** Fires waiting for their event and actions; beyond it a fire is dropped (counted). Default 1,000. */
  maxQueuedFires?: number;
  /** Identities waiting for a standing lookup; beyond it a connect goes unchecked (counted). Default 10,000. */
  maxPendingLookups?: number;
  /**
   * The running sources' `observes` (BusEventSource.observes). idle-connected fires only while
   * some source observes publishes (else quiet is not idleness). Default: none known.
   */
  sources?: () => readonly Readonly<Record<BusEventKind, Observability>>[];
  /**
   * The service's own identities (ReservedIdentities: the broker connector's CN). Its sessions on a
   * broker only listen ($SYS log, dynsec replies), so idle-connected leaves them out. Default: none.
   */
  own?: (identity: string) => boolean;
  onError?: (e: unknown) => void;
}

/** Where a rule stands: whether any running source observes what it counts. */
export type RuleObservability = { rule: string; watch: WatchDetector } & Observability;

export interface BusDetectorStats {
  /** Events seen, per kind. */
  seen: Record<string, number>;
  /** Episodes fired, per rule. */
  fired: Record<string, number>;
  /** Keys evicted at the cap, per rule. */
  evictions: Record<string, number>;
  /** Keys remembered now, per rule. */
  keys: Record<string, number>;
  /** The most window entries (distinct topics, hosts) one key of the rule holds now. */
  largestWindow: Record<string, number>;
  /** Fires dropped with the queue full, connects left unchecked with the lookups full, and errors. */
  droppedFires: number;
  droppedLookups: number;
  errors: number;
}

/** One piece of evidence: what the broker said, each text cut to EVIDENCE_TEXT and made storable. */
type Evidence = Record<string, string | number | boolean>;

interface Fire {
  rule: WatchRule;
  key: string;
  identity?: string | undefined;
  source?: string | undefined;
  broker?: string | undefined;
  count: number;
  evidence: Evidence[];
  extra?: Record<string, unknown>;
  /** When the broker says the act that crossed the threshold happened (absent for absences: idle, silent). */
  actAt?: number;
}

/** The longest identity acted on: no device id (an X.509 CN) is longer; longer ones are counted by a digest. */
const MAX_IDENTITY = 256;
const EVIDENCE_KEPT = 3;
const EVIDENCE_TEXT = 120;
const TOPICS_KEPT = 5;
const HOSTS_KEPT = 16;
const BUCKETS = 8;
const DEFAULT_CONCURRENCY = 4;
const STATUS_BAD = new Set(['revoked', 'suspended', 'decommissioned']);

/** A text from the bus as evidence: cut, and storable (no NUL, no lone surrogate). */
export function evidenceText(s: string, max = EVIDENCE_TEXT): string {
  return pgText(s.length > max ? `${s.slice(0, max)}…` : s);
}

/** Two 32-bit string hashes (FNV-1a and a murmur-like mix) and the length: long topics and ids are remembered by it, not by themselves. */
function digest(s: string): string {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  return `#${(a >>> 0).toString(36)}.${(b >>> 0).toString(36)}:${s.length}`;
}

/** FNV-1a, 32 bits. */
function hash32(s: string): number {
  let a = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) a = Math.imul(a ^ s.charCodeAt(i), 0x01000193);
  return a >>> 0;
}

/** How a long text is remembered (a digest); short ones as they are. */
const memo = (s: string, max = 128) => (s.length > max ? digest(s) : s);

/** A text cut to EVIDENCE_TEXT (made storable only when it is recorded). */
const cut = (s: string, max = EVIDENCE_TEXT) => (s.length > max ? `${s.slice(0, max)}…` : s);

/** What a hit keeps as evidence: cheap to take (texts cut, nothing formatted); `finish` makes it storable when it is recorded. */
function evidenceOf(e: BusEvent): Evidence {
  const out: Evidence = { at: e.at.getTime(), kind: e.kind, broker: cut(e.broker) };
  if ('clientId' in e && e.clientId !== undefined) out.clientId = cut(e.clientId);
  if ('source' in e && e.source) out.source = cut(e.source.host);
  if ('topic' in e) out.topic = cut(e.topic);
  if (e.kind === 'disconnect') out.reason = e.reason;
  if (e.kind === 'tls-failure') out.failure = e.failure;
  if (e.kind === 'acl-denied') out.action = e.action;
  if (e.kind === 'connect' && e.username !== undefined) out.username = cut(e.username);
  return out;
}

function finish(ev: Evidence): Evidence {
  const out: Evidence = {};
  for (const [k, v] of Object.entries(ev))
    out[k] = k === 'at' && typeof v === 'number' ? new Date(v).toISOString() : typeof v === 'string' ? pgText(v) : v;
  return out;
}

/** Counts in a sliding window of BUCKETS buckets (resolution: an eighth of the window), in constant memory. */
class WindowCount {
  private b: number[] = [];
  private c: number[] = [];
  constructor(private readonly widthMs: number) {}
  add(now: number): number {
    const i = Math.floor(now / this.widthMs);
    while (this.b.length && this.b[0]! <= i - BUCKETS) {
      this.b.shift();
      this.c.shift();
    }
    if (this.b.length && this.b[this.b.length - 1] === i) this.c[this.c.length - 1]!++;
    else {
      this.b.push(i);
      this.c.push(1);
    }
    let n = 0;
    for (const x of this.c) n += x;
    return n;
  }
}

/**
 * Deletes a map's `n` oldest entries in one pass. One at a time from the front would rescan the
 * deleted slots V8 keeps until its next rehash (quadratic under a flood of new keys).
 */
function evictOldest(map: Map<string, unknown>, n: number): number {
  let left = Math.min(n, map.size);
  const dropped = left;
  for (const k of map.keys()) {
    if (left-- <= 0) break;
    map.delete(k);
  }
  return dropped;
}

/** Keys in least-recently-hit order, at most `cap` of them: the one hit longest ago is evicted first. */
class Keyed<S> {
  readonly map = new Map<string, S>();
  evictions = 0;
  constructor(private readonly cap: number) {}
  get(key: string): S | undefined {
    return this.map.get(key);
  }
  touch(key: string, s: S): void {
    this.map.delete(key);
    this.map.set(key, s);
    if (this.map.size > this.cap) this.evictions += evictOldest(this.map, this.map.size - this.cap + Math.ceil(this.cap / 16));
  }
  delete(key: string): boolean {
    return this.map.delete(key);
  }
  get size(): number {
    return this.map.size;
  }
}

interface EpisodeState {
  lastHit: number;
  inEpisode: boolean;
  evidence: Evidence[];
  identity?: string | undefined;
  source?: string | undefined;
  broker?: string | undefined;
}

/** A key's place in the window and its episode: fires once at its threshold, quiet until windowSeconds pass with no hit. */
abstract class Detector<S extends EpisodeState = EpisodeState> {
  readonly keys: Keyed<S>;
  protected readonly windowMs: number;

  constructor(
    readonly rule: WatchRule,
    cap: number,
  ) {
    this.keys = new Keyed<S>(cap);
    this.windowMs = ('windowSeconds' in rule ? rule.windowSeconds : 3600) * 1000;
  }

  /** The event kinds it counts; `anyOf`: one of them suffices. */
  abstract readonly inputs: { all: BusEventKind[]; anyOf?: BusEventKind[] };
  /** Kinds it also takes where they are observed (not needed for it to be observed). */
  readonly also: BusEventKind[] = [];
  abstract handle(we: WatchedBusEvent, now: number): Fire | undefined;

  /** The key's state, fresh when its episode or window is over. */
  protected state(key: string, now: number, fresh: () => S): S {
    const s = this.keys.get(key);
    if (s && now - s.lastHit <= this.windowMs) return s;
    return fresh();
  }

  /** Records a hit; returns the fire when this hit reaches the threshold outside an episode. */
  protected hit(key: string, s: S, we: WatchedBusEvent, now: number, reached: boolean, count: number, extra?: Record<string, unknown>) {
    s.lastHit = now;
    s.evidence.push(evidenceOf(we.event));
    if (s.evidence.length > EVIDENCE_KEPT) s.evidence.shift();
    s.identity = identityOf(we) ?? s.identity;
    s.source = sourceOf(we.event) ?? s.source;
    s.broker = we.event.broker;
    this.keys.touch(key, s);
    if (s.inEpisode || !reached) return undefined;
    s.inEpisode = true;
    return {
      rule: this.rule,
      key,
      identity: s.identity,
      source: s.source,
      broker: s.broker,
      count,
      evidence: [...s.evidence],
      ...(extra ? { extra } : {}),
      actAt: we.event.at.getTime(),
    };
  }

  /** The key a rule counts an event under: the MQTT client id, the client's identity (the device), or the source host. */
  protected keyOf(we: WatchedBusEvent): string | undefined {
    const e = we.event;
    switch (this.rule.per) {
      case 'client':
        return 'clientId' in e && e.clientId !== undefined ? memo(e.clientId) : undefined;
      case 'device':
        return we.identity === undefined ? undefined : memo(we.identity);
      case 'source': {
        const host = sourceOf(e);
        return host === undefined ? undefined : memo(host);
      }
    }
  }
}

function identityOf(we: WatchedBusEvent): string | undefined {
  const id = we.identity ?? ('clientId' in we.event ? we.event.clientId : undefined);
  return id !== undefined && id.length <= MAX_IDENTITY ? id : undefined;
}

function sourceOf(e: BusEvent): string | undefined {
  return 'source' in e && e.source ? e.source.host : undefined;
}

interface CountState extends EpisodeState {
  count: WindowCount;
}

/** connect-attempts, abnormal-terminations, tls-failures, undeliverable: threshold events in the window. */
class CountDetector extends Detector<CountState> {
  readonly inputs: { all: BusEventKind[] };
  constructor(
    rule: WatchRule & { threshold: number; windowSeconds: number },
    cap: number,
    private readonly counts: (e: BusEvent) => boolean,
    input: BusEventKind[],
  ) {
    super(rule, cap);
    this.inputs = { all: input };
  }
  handle(we: WatchedBusEvent, now: number): Fire | undefined {
    if (!this.counts(we.event)) return undefined;
    const key = this.keyOf(we);
    if (key === undefined) return undefined;
    const s = this.state(key, now, () => ({ lastHit: 0, inEpisode: false, evidence: [], count: new WindowCount(this.windowMs / BUCKETS) }));
    const n = s.count.add(now);
    const threshold = (this.rule as { threshold: number }).threshold;
    return this.hit(key, s, we, now, n >= threshold, n);
  }
}

interface ScanState extends EpisodeState {
  /** A 32-bit hash of each topic → when last used: distinct topics counted in a few bytes each. */
  topics: Map<number, number>;
  recent: string[];
  denials: WindowCount;
  denied: number;
}

/** topic-scan: distinct topics (subscribed, denied, published) or ACL denials per client in the window. */
class TopicScanDetector extends Detector<ScanState> {
  readonly inputs: { all: BusEventKind[]; anyOf?: BusEventKind[] };
  private readonly distinct: number | undefined;
  private readonly denials: number | undefined;
  constructor(rule: Extract<WatchRule, { watch: 'topic-scan' }>, cap: number) {
    super(rule, cap);
    this.distinct = rule.distinctTopics;
    this.denials = rule.denials;
    this.inputs = this.distinct === undefined ? { all: ['acl-denied'] } : { all: [], anyOf: ['subscribe', 'acl-denied', 'publish'] };
  }
  handle(we: WatchedBusEvent, now: number): Fire | undefined {
    const e = we.event;
    if (e.kind !== 'subscribe' && e.kind !== 'acl-denied' && e.kind !== 'publish') return undefined;
    const key = this.keyOf(we);
    if (key === undefined) return undefined;
    const s = this.state(key, now, () => ({
      lastHit: 0,
      inEpisode: false,
      evidence: [],
      topics: new Map(),
      recent: [],
      denials: new WindowCount(this.windowMs / BUCKETS),
      denied: 0,
    }));
    let counted = false;
    if (e.kind === 'acl-denied' && this.denials !== undefined) {
      s.denied = s.denials.add(now);
      counted = true;
    }
    if (this.distinct !== undefined) {
      const t = hash32(e.topic);
      const seen = s.topics.get(t);
      s.topics.delete(t); // in the order last used: the bound drops the longest unused first
      s.topics.set(t, now);
      if (seen === undefined || now - seen > this.windowMs) {
        s.recent.push(cut(e.topic, 80));
        if (s.recent.length > TOPICS_KEPT) s.recent.shift();
        counted = true;
        // Bounded: never more than the threshold's worth (older ones go first once out of the window).
        if (s.topics.size > this.distinct) for (const [k, at] of s.topics) if (now - at > this.windowMs) s.topics.delete(k);
        while (s.topics.size > this.distinct + 1) s.topics.delete(s.topics.keys().next().value as number);
      }
    }
    if (!counted) return undefined;
    let distinct = 0;
    if (this.distinct !== undefined) for (const at of s.topics.values()) if (now - at <= this.windowMs) distinct++;
    const reached = (this.distinct !== undefined && distinct >= this.distinct) || (this.denials !== undefined && s.denied >= this.denials);
    return this.hit(key, s, we, now, reached, Math.max(distinct, s.denied), {
      distinctTopics: distinct,
      denials: s.denied,
      topics: [...s.recent],
    });
  }
}

interface HostsState extends EpisodeState {
  hosts: Map<string, number>;
}

/** client-id-two-sources: one client id connected from `threshold` hosts within the window (a take-over from another host too). */
class TwoSourcesDetector extends Detector<HostsState> {
  readonly inputs = { all: ['connect'] as BusEventKind[] };
  override readonly also: BusEventKind[] = ['disconnect'];
  handle(we: WatchedBusEvent, now: number): Fire | undefined {
    const e = we.event;
    if (!((e.kind === 'connect' || (e.kind === 'disconnect' && e.reason === 'taken-over')) && e.source)) return undefined;
    const key = this.keyOf(we);
    if (key === undefined) return undefined;
    // Its own state: the hosts stay for the window, while the episode lasts until windowSeconds pass with no connect from a second host.
    const s = this.keys.get(key) ?? { lastHit: now, inEpisode: false, evidence: [], hosts: new Map<string, number>() };
    for (const [h, at] of s.hosts) if (now - at > this.windowMs) s.hosts.delete(h);
    if (s.inEpisode && now - s.lastHit > this.windowMs) s.inEpisode = false;
    const host = memo(e.source.host);
    s.hosts.delete(host);
    s.hosts.set(host, now);
    while (s.hosts.size > HOSTS_KEPT) s.hosts.delete(s.hosts.keys().next().value as string);
    const threshold = (this.rule as { threshold: number }).threshold;
    if (s.hosts.size < 2) {
      s.evidence = [evidenceOf(e)];
      this.keys.touch(key, s);
      return undefined;
    }
    const sources = [...s.hosts.keys()].map((h) => cut(h));
    return this.hit(key, s, we, now, s.hosts.size >= threshold, s.hosts.size, { sources });
  }
}

/** revoked-certificate: its hits come from the standing lookups (BusDetectors.checkStanding). */
class RevokedDetector extends Detector {
  readonly inputs = { all: ['connect'] as BusEventKind[] };
  handle(): Fire | undefined {
    return undefined;
  }
  /** A connect found bad (a revoked device or a certificate not its current one). */
  bad(we: WatchedBusEvent, now: number, why: string, standing: DeviceStanding): Fire | undefined {
    const key = this.keyOf(we);
    if (key === undefined) return undefined;
    const s = this.state(key, now, () => ({ lastHit: 0, inEpisode: false, evidence: [] }));
    const serial = we.event.kind === 'connect' ? we.event.certificateSerial : undefined;
    return this.hit(key, s, we, now, true, 1, {
      why,
      status: standing.status,
      currentSerial: standing.currentSerial,
      ...(serial ? { certificateSerial: evidenceText(serial) } : {}),
    });
  }
}

interface Session {
  lastActivity: number;
  connectedAt: number;
  identity?: string | undefined;
  source?: string | undefined;
  broker: string;
  clientId: string;
}

/**
 * idle-connected: sessions connected idleSeconds with no publish or subscribe; one event per idle
 * stretch (re-armed by activity or a new session). The service's own sessions (its $SYS log reader,
 * its dynsec connector) listen by design and are not watched.
 */
class IdleDetector extends Detector {
  readonly inputs = { all: ['connect', 'disconnect', 'publish'] as BusEventKind[] };
  override readonly also: BusEventKind[] = ['subscribe'];
  /** Live sessions by last activity, oldest first; idle ones that fired move to `reported`. */
  readonly sessions: Keyed<Session>;
  readonly reported: Keyed<Session>;
  private readonly idleMs: number;
  constructor(
    rule: Extract<WatchRule, { watch: 'idle-connected' }>,
    cap: number,
    private readonly own: (identity: string) => boolean,
  ) {
    super(rule, cap);
    this.sessions = new Keyed<Session>(cap);
    this.reported = new Keyed<Session>(cap);
    this.idleMs = rule.idleSeconds * 1000;
  }
  handle(we: WatchedBusEvent, now: number): Fire | undefined {
    const e = we.event;
    if (!('clientId' in e) || e.clientId === undefined) return undefined;
    if (we.identity !== undefined && this.own(we.identity)) return undefined;
    const key = this.keyOf(we);
    if (key === undefined) return undefined;
    if (e.kind === 'disconnect') {
      this.sessions.delete(key);
      this.reported.delete(key);
    } else if (e.kind === 'connect' || e.kind === 'publish' || e.kind === 'subscribe') {
      this.reported.delete(key);
      const old = e.kind === 'connect' ? undefined : this.sessions.get(key);
      this.sessions.touch(key, {
        lastActivity: now,
        connectedAt: old?.connectedAt ?? now,
        identity: identityOf(we),
        source: sourceOf(e) ?? old?.source,
        broker: e.broker,
        clientId: cut(e.clientId),
      });
    }
    return undefined;
  }
  /** The sessions idle past idleSeconds (at most `limit`), each once. */
  sweep(now: number, limit: number): Fire[] {
    const out: Fire[] = [];
    for (const [key, s] of this.sessions.map) {
      if (now - s.lastActivity < this.idleMs || out.length >= limit) break;
      this.sessions.delete(key);
      this.reported.touch(key, s);
      out.push({
        rule: this.rule,
        key,
        identity: s.identity,
        source: s.source,
        broker: s.broker,
        count: 1,
        evidence: [{ at: s.connectedAt, kind: 'connect', clientId: s.clientId, broker: cut(s.broker) }],
        extra: {
          connectedAt: new Date(s.connectedAt).toISOString(),
          idleSeconds: Math.floor((now - s.lastActivity) / 1000),
        },
      });
    }
    return out;
  }
}

/** silent: devices not seen since silentAfterSeconds (the presence store's answer), each once per silence. */
class SilentDetector extends Detector {
  readonly inputs = { all: ['connect'] as BusEventKind[] };
  /** Device → the lastSeenAt it was reported silent with. */
  readonly reported: Keyed<number>;
  constructor(rule: WatchRule, cap: number) {
    super(rule, cap);
    this.reported = new Keyed<number>(cap);
  }
  handle(we: WatchedBusEvent): Fire | undefined {
    if (we.event.kind === 'connect' && we.identity !== undefined) this.reported.delete(memo(we.identity)); // seen again: re-armed
    return undefined;
  }
  found(rows: { deviceId: string; broker?: string; lastSeenAt: Date }[], now: number): Fire[] {
    const rule = this.rule as Extract<WatchRule, { watch: 'silent' }>;
    const out: Fire[] = [];
    for (const r of rows) {
      const key = memo(r.deviceId);
      const seen = r.lastSeenAt.getTime();
      if (this.reported.get(key) === seen) continue;
      this.reported.touch(key, seen);
      out.push({
        rule,
        key,
        identity: r.deviceId.length <= MAX_IDENTITY ? r.deviceId : undefined,
        broker: r.broker,
        count: 1,
        evidence: [{ kind: 'last-seen', at: seen, ...(r.broker ? { broker: cut(r.broker) } : {}) }],
        extra: {
          lastSeenAt: r.lastSeenAt.toISOString(),
          silentSeconds: Math.floor((now - seen) / 1000),
          silentAfterSeconds: rule.silentAfterSeconds,
          ...(rule.lot ? { lot: rule.lot } : {}),
          ...(rule.profile ? { profile: rule.profile } : {}),
        },
      });
    }
    return out;
  }
}

function detectorFor(rule: WatchRule, cap: number, own: (identity: string) => boolean): Detector {
  switch (rule.watch) {
    case 'connect-attempts':
      return new CountDetector(rule, cap, (e) => e.kind === 'connect', ['connect']);
    case 'abnormal-terminations': {
      const reasons = new Set<string>(rule.reasons);
      return new CountDetector(rule, cap, (e) => e.kind === 'disconnect' && reasons.has(e.reason), ['disconnect']);
    }
    case 'tls-failures': {
      const failures = new Set<string>(rule.failures);
      return new CountDetector(rule, cap, (e) => e.kind === 'tls-failure' && failures.has(e.failure), ['tls-failure']);
    }
    case 'topic-scan':
      return new TopicScanDetector(rule, cap);
    case 'undeliverable':
      return new CountDetector(rule, cap, (e) => e.kind === 'undeliverable', ['undeliverable']);
    case 'idle-connected':
      return new IdleDetector(rule, cap, own);
    case 'silent':
      return new SilentDetector(rule, cap);
    case 'revoked-certificate':
      return new RevokedDetector(rule, cap);
    case 'client-id-two-sources':
      return new TwoSourcesDetector(rule, cap);
  }
}

/** A sweep's default period: a tenth of the shortest time its rules wait for, between 1 s and `most`. */
function sweepPeriod(rules: DetectionRule[], watch: 'idle-connected' | 'silent', most: number): number {
  const waits = rules
    .filter(isWatchRule)
    .flatMap((r) =>
      r.watch !== watch ? [] : r.watch === 'idle-connected' ? [r.idleSeconds] : r.watch === 'silent' ? [r.silentAfterSeconds] : [],
    );
  return waits.length ? Math.min(most, Math.max(1, Math.ceil(Math.min(...waits) / 10))) : most;
}

/** Normalised serial (lower-case hex, no separators or leading zeros) for comparison. */
const serialKey = (s: string) =>
  s
    .replace(/[^0-9a-fA-F]/g, '')
    .toLowerCase()
    .replace(/^0+/, '');

/**
 * The bus watch's detectors (issue 26): counts the watch rules of DETECTION_RULES on the brokers'
 * events, in bounded memory (at most maxKeysPerRule keys per rule, the least recently hit evicted
 * and counted; per-key windows in constant space), and fires once per episode: a key fires at its
 * threshold, then stays quiet until windowSeconds pass with no hit, then re-arms. A fire records one
 * security event (kind raise.kind, subject the identity, source the host; details: rule, detector,
 * count, window, evidence, and each action's outcome) and runs the rule's actions through the
 * shared ResponseRunner. observe() is synchronous and never throws; the work it starts is queued
 * and its errors go to onError.
 */
export class BusDetectors implements BusObserver {
  private readonly detectors: Detector[];
  private readonly byKind = new Map<BusEventKind, Detector[]>();
  private readonly seen: Record<string, number> = {};
  private readonly fired: Record<string, number> = {};
  private droppedFires = 0;
  private droppedLookups = 0;
  private errors = 0;
  private readonly queue: Fire[] = [];
  private running = 0;
  private readonly idle = new Set<Promise<void>>();
  private readonly standingCache = new Map<string, { standing: DeviceStanding | undefined; until: number }>();
  /** Moves on when standings change (a revocation): lookups begun before it are not cached. */
  private standingGeneration = 0;
  private readonly lookups: GroupBatcher<string, DeviceStanding | undefined> | undefined;
  private pendingLookups = 0;
  private timers: NodeJS.Timeout[] = [];
  private silentSweeping = false;
  private readonly options: Required<Omit<BusDetectorOptions, 'sources' | 'onError' | 'own'>>;
  private readonly onError: (e: unknown) => void;

  constructor(
    rules: DetectionRule[],
    private readonly events: { record(e: SecurityEventInput): Promise<unknown> },
    private readonly runner: ActionRunner,
    private readonly ports: BusDetectorPorts,
    private readonly clock: Clock,
    private readonly opts: BusDetectorOptions = {},
  ) {
    this.options = {
      maxKeysPerRule: opts.maxKeysPerRule ?? 20_000,
      idleSweepSeconds: opts.idleSweepSeconds ?? sweepPeriod(rules, 'idle-connected', 30),
      silentSweepSeconds: opts.silentSweepSeconds ?? sweepPeriod(rules, 'silent', 300),
      standingCacheSeconds: opts.standingCacheSeconds ?? 10,
      maxQueuedFires: opts.maxQueuedFires ?? 1000,
      maxPendingLookups: opts.maxPendingLookups ?? 10_000,
    };
    this.onError = (e) => {
      this.errors++;
      try {
        opts.onError?.(e);
      } catch {
        // the error reporter's own failure stays here
      }
    };
    const own = opts.own ?? (() => false);
    this.detectors = rules.filter(isWatchRule).map((r) => detectorFor(r, this.options.maxKeysPerRule, own));
    for (const d of this.detectors) {
      this.fired[d.rule.name] = 0;
      const kinds = new Set<BusEventKind>([...d.inputs.all, ...(d.inputs.anyOf ?? []), ...d.also]);
      for (const k of kinds) this.byKind.set(k, [...(this.byKind.get(k) ?? []), d]);
    }
    const fetch = ports.deviceStanding?.bind(ports);
    this.lookups =
      fetch && this.detectors.some((d) => d instanceof RevokedDetector)
        ? new GroupBatcher((ids: string[]) => fetch(ids), { maxBatch: 500, lanes: 2 })
        : undefined;
  }

  /** Starts the idle and silent sweeps (timers that do not hold the process open). */
  start(): void {
    if (this.timers.length) return;
    const every = (seconds: number, fn: () => Promise<void>) => {
      const t = setInterval(() => void fn().catch(this.onError), seconds * 1000);
      t.unref();
      this.timers.push(t);
    };
    if (this.detectors.some((d) => d instanceof IdleDetector)) every(this.options.idleSweepSeconds, async () => this.sweepIdle());
    if (this.detectors.some((d) => d instanceof SilentDetector)) every(this.options.silentSweepSeconds, () => this.sweepSilent());
  }

  /**
   * Certificates were revoked, held or released here: the devices' cached standings may be stale,
   * and a device revoked a moment ago reconnecting (the broker's CRL lags) must be seen as revoked.
   * Changes made by another process reach this one when its cache entries expire (standingCacheSeconds).
   */
  forgetStandings(): void {
    this.standingGeneration++;
    this.standingCache.clear();
  }

  watchStarted(): void {
    this.start();
  }

  watchStopped(): Promise<void> {
    return this.stop();
  }

  /** Stops the sweeps and waits for the work under way. */
  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.settled();
  }

  observe(we: WatchedBusEvent): void {
    try {
      const kind = we.event.kind;
      this.seen[kind] = (this.seen[kind] ?? 0) + 1;
      const detectors = this.byKind.get(kind);
      if (!detectors) return;
      const now = this.clock.now().getTime();
      for (const d of detectors) {
        const fire = d.handle(we, now);
        if (fire) this.enqueue(fire);
        if (d instanceof RevokedDetector && kind === 'connect') this.checkStanding(d, we);
      }
    } catch (e) {
      this.onError(e);
    }
  }

  /** Runs the idle and silent sweeps now (the timers call them too). */
  async sweep(): Promise<void> {
    this.sweepIdle();
    await this.sweepSilent();
  }

  /** Resolves once every queued fire, lookup and sweep has finished. */
  async settled(): Promise<void> {
    while (this.idle.size > 0 || this.queue.length > 0) await Promise.allSettled([...this.idle]);
  }

  /** Per watch rule: whether the running sources observe what it counts (the posture's "not observed"). */
  observability(sourcesObserve?: readonly Readonly<Record<BusEventKind, Observability>>[]): RuleObservability[] {
    const sources = sourcesObserve ?? this.opts.sources?.() ?? [];
    const observed = (k: BusEventKind) => sources.some((s) => s[k]?.observed);
    const why = (k: BusEventKind) => {
      const reasons = [...new Set(sources.map((s) => s[k]).flatMap((o) => (o && !o.observed ? [o.why] : [])))];
      return `${k} is not observed${reasons.length ? ` (${reasons.join('; ')})` : sources.length ? '' : ': no event source runs'}`;
    };
    return this.detectors.map((d): RuleObservability => {
      const base = { rule: d.rule.name, watch: d.rule.watch };
      if (d instanceof RevokedDetector && !this.ports.deviceStanding)
        return { ...base, observed: false, why: 'no device standing lookup is configured' };
      if (d instanceof SilentDetector && !this.ports.silentDevices)
        return { ...base, observed: false, why: 'no presence store is configured' };
      const missing = d.inputs.all.filter((k) => !observed(k));
      if (missing.length) return { ...base, observed: false, why: missing.map(why).join('; ') };
      if (d.inputs.anyOf) {
        const some = d.inputs.anyOf.filter(observed);
        if (some.length === 0) return { ...base, observed: false, why: d.inputs.anyOf.map(why).join('; ') };
        const unseen = d.inputs.anyOf.filter((k) => !observed(k));
        if (unseen.length) return { ...base, observed: true, note: `counts ${some.join(', ')} only: ${unseen.map(why).join('; ')}` };
      }
      return { ...base, observed: true };
    });
  }

  stats(): BusDetectorStats {
    const seen: Record<string, number> = {};
    for (const k of BUS_EVENT_KINDS) seen[k] = this.seen[k] ?? 0;
    const evictions: Record<string, number> = {};
    const keys: Record<string, number> = {};
    const largestWindow: Record<string, number> = {};
    for (const d of this.detectors) {
      let most = 0;
      for (const st of d.keys.map.values()) {
        const x = st as Partial<ScanState & HostsState>;
        most = Math.max(most, x.topics?.size ?? 0, x.hosts?.size ?? 0);
      }
      largestWindow[d.rule.name] = most;
      evictions[d.rule.name] =
        d.keys.evictions +
        (d instanceof IdleDetector ? d.sessions.evictions + d.reported.evictions : 0) +
        (d instanceof SilentDetector ? d.reported.evictions : 0);
      keys[d.rule.name] =
        d.keys.size +
        (d instanceof IdleDetector ? d.sessions.size + d.reported.size : 0) +
        (d instanceof SilentDetector ? d.reported.size : 0);
    }
    return {
      seen,
      fired: { ...this.fired },
      evictions,
      keys,
      largestWindow,
      droppedFires: this.droppedFires,
      droppedLookups: this.droppedLookups,
      errors: this.errors,
    };
  }

  private sweepIdle(): void {
    if (!this.publishesObserved()) return; // quiet is not idleness when publishes are not seen
    const now = this.clock.now().getTime();
    for (const d of this.detectors)
      if (d instanceof IdleDetector) for (const f of d.sweep(now, this.options.maxQueuedFires)) this.enqueue(f);
  }

  private publishesObserved(): boolean {
    return (this.opts.sources?.() ?? []).some((s) => s.publish?.observed);
  }

  private async sweepSilent(): Promise<void> {
    const port = this.ports.silentDevices;
    if (!port || this.silentSweeping) return;
    this.silentSweeping = true;
    const work = (async () => {
      for (const d of this.detectors) {
        if (!(d instanceof SilentDetector)) continue;
        const rule = d.rule as Extract<WatchRule, { watch: 'silent' }>;
        const now = this.clock.now().getTime();
        try {
          const rows = await port.call(this.ports, {
            before: new Date(now - rule.silentAfterSeconds * 1000),
            ...(rule.lot ? { lot: rule.lot } : {}),
            ...(rule.profile ? { profile: rule.profile } : {}),
            limit: rule.limit,
          });
          for (const f of d.found(rows, now)) this.enqueue(f);
        } catch (e) {
          this.onError(e);
        }
      }
    })().finally(() => (this.silentSweeping = false));
    this.track(work);
    await work;
  }

  private checkStanding(d: RevokedDetector, we: WatchedBusEvent): void {
    const id = we.identity;
    if (id === undefined || id.length > MAX_IDENTITY || !this.lookups) return;
    const now = this.clock.now().getTime();
    const cached = this.standingCache.get(id);
    if (cached && cached.until > now) return this.judge(d, we, cached.standing);
    if (this.pendingLookups >= this.options.maxPendingLookups) {
      this.droppedLookups++;
      return;
    }
    this.pendingLookups++;
    const generation = this.standingGeneration;
    const work = this.lookups
      .add(id)
      .then((standing) => {
        const at = this.clock.now().getTime();
        this.standingCache.delete(id);
        if (generation === this.standingGeneration)
          this.standingCache.set(id, { standing, until: at + this.options.standingCacheSeconds * 1000 });
        if (this.standingCache.size > this.options.maxKeysPerRule)
          evictOldest(
            this.standingCache,
            this.standingCache.size - this.options.maxKeysPerRule + Math.ceil(this.options.maxKeysPerRule / 16),
          );
        this.judge(d, we, standing);
      })
      .catch(this.onError)
      .finally(() => this.pendingLookups--);
    this.track(work);
  }

  private judge(d: RevokedDetector, we: WatchedBusEvent, standing: DeviceStanding | undefined): void {
    if (!standing || we.event.kind !== 'connect') return;
    const serial = we.event.certificateSerial;
    let why: string | undefined;
    if (STATUS_BAD.has(standing.status)) why = `the device is ${standing.status}`;
    else if (serial && standing.currentSerial && serialKey(serial) !== serialKey(standing.currentSerial))
      why = "the certificate is not the device's current one (revoked or superseded)";
    else if (serial && !standing.currentSerial && standing.status !== 'registered') why = 'the device has no certificate in use';
    if (!why) return;
    const fire = d.bad(we, this.clock.now().getTime(), why, standing);
    if (fire) this.enqueue(fire);
  }

  private enqueue(fire: Fire): void {
    this.fired[fire.rule.name] = (this.fired[fire.rule.name] ?? 0) + 1;
    if (this.queue.length >= this.options.maxQueuedFires) {
      this.droppedFires++;
      return;
    }
    this.queue.push(fire);
    this.pump();
  }

  private pump(): void {
    while (this.running < DEFAULT_CONCURRENCY && this.queue.length > 0) {
      const fire = this.queue.shift()!;
      this.running++;
      const work = this.raise(fire)
        .catch(this.onError)
        .finally(() => {
          this.running--;
          this.pump();
        });
      this.track(work);
    }
  }

  private track(p: Promise<unknown>): void {
    const w = p.then(
      () => undefined,
      () => undefined,
    );
    this.idle.add(w);
    void w.then(() => this.idle.delete(w));
  }

  private async raise(f: Fire): Promise<void> {
    const rule = f.rule;
    const window = 'windowSeconds' in rule ? { windowSeconds: rule.windowSeconds } : {};
    const measure = describe(rule, f.count);
    const why = `${measure} (rule ${rule.name}, detector ${rule.watch})`;
    // Per source: the host is what it is about (the clients behind it are in the evidence).
    const subject = rule.per === 'source' ? undefined : (f.identity ?? f.key);
    const identity = rule.per === 'source' ? undefined : f.identity;
    const source = f.source === undefined ? undefined : evidenceText(f.source, 200);
    const details: Record<string, unknown> = {
      rule: rule.name,
      detector: rule.watch,
      per: rule.per,
      count: f.count,
      ...window,
      ...(f.broker ? { broker: evidenceText(f.broker) } : {}),
      ...(f.actAt !== undefined ? { actAt: new Date(f.actAt).toISOString() } : {}),
      ...pgJsonObject(f.extra ?? {}),
      evidence: f.evidence.map(finish),
    };
    const responses = await this.runner.run(rule.actions, {
      rule,
      source,
      identity,
      why,
      incident: {
        title: `${rule.raise.kind}: ${evidenceText(subject ?? source ?? f.key, 100)}`,
        evidence: JSON.stringify(details),
        devices: identity ? [identity] : [],
      },
    });
    await this.events.record({
      kind: rule.raise.kind,
      severity: rule.raise.severity,
      subject: subject === undefined ? undefined : evidenceText(subject, MAX_IDENTITY),
      source,
      details: { ...details, responses },
    });
  }
}

function describe(rule: WatchRule, count: number): string {
  switch (rule.watch) {
    case 'idle-connected':
      return `connected ${rule.idleSeconds} s without a publish or a subscribe`;
    case 'silent':
      return `not seen for ${rule.silentAfterSeconds} s`;
    case 'revoked-certificate':
      return 'connected with a revoked, suspended or superseded certificate';
    case 'topic-scan':
      return `${count} distinct topics or denials within ${rule.windowSeconds} s`;
    case 'client-id-two-sources':
      return `one client id from ${count} hosts within ${rule.windowSeconds} s`;
    default:
      return `${count} × ${rule.watch} within ${rule.windowSeconds} s`;
  }
}
