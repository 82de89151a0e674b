// What the bus watch sees of a broker: typed events, whichever broker and channel they come from
// (Mosquitto's log; other brokers' webhooks through POST /v1/bus-events), and what each source can observe at all.
import type { DisconnectReason, TlsFailure } from '../shared/bus-terms.js';

/** A connection's end and a TLS failure, as listed in src/shared/bus-terms.ts (the detection rules name them too). */
export type { DisconnectReason, TlsFailure };

/** A client's network address as the broker saw it (the port is absent where the broker logs the host only). */
export interface SourceAddress {
  host: string;
  port?: number;
}

interface BusEventBase {
  /** The broker's id in this service (the connector's name, e.g. "mosquitto"). */
  broker: string;
  /** When the broker says it happened (its log's timestamp), or when it arrived where the broker gives none. */
  at: Date;
}

export type MqttProtocol = 'mqtt3.1' | 'mqtt3.1.1' | 'mqtt5';

/** A client's session began (CONNACK accepted). */
export interface ConnectEvent extends BusEventBase {
  kind: 'connect';
  clientId: string;
  /** The MQTT username; with `use_identity_as_username`, the client certificate's CN. */
  username?: string;
  source: SourceAddress;
  protocol: MqttProtocol;
  /** clean session (3.x) / clean start (5). */
  cleanStart: boolean;
  keepAliveSeconds: number;
  /** The client certificate's serial (lower-case hex), where the source reports it (Mosquitto's log does not). */
  certificateSerial?: string;
}

/**
 * A connection ended. `clientId` is absent for a connection that never got as far as a CONNECT
 * the broker accepted (garbage on the socket, refused credentials).
 */
export interface DisconnectEvent extends BusEventBase {
  kind: 'disconnect';
  clientId?: string;
  reason: DisconnectReason;
  /** The broker's own words where they say more than the reason (errno text, its message for `other`). */
  detail?: string;
  /** Known when the broker names it or the connection is otherwise unambiguous. */
  source?: SourceAddress;
}

export interface TlsFailureEvent extends BusEventBase {
  kind: 'tls-failure';
  failure: TlsFailure;
  /** The TLS library's error text as the broker logged it. */
  detail: string;
  /** Absent when the broker's log does not tie the failure to one connection. */
  source?: SourceAddress;
}

export interface SubscribeEvent extends BusEventBase {
  kind: 'subscribe';
  clientId: string;
  topic: string;
  /** The granted QoS. */
  qos: number;
}

export interface UnsubscribeEvent extends BusEventBase {
  kind: 'unsubscribe';
  clientId: string;
  topic: string;
}

/** The broker's ACL refused a client's publish or subscribe. */
export interface AclDeniedEvent extends BusEventBase {
  kind: 'acl-denied';
  action: 'publish' | 'subscribe';
  clientId: string;
  topic: string;
  qos: number;
}

/** A client published (where the broker reports publishes at all). */
export interface PublishEvent extends BusEventBase {
  kind: 'publish';
  clientId: string;
  topic: string;
  qos: number;
  retain: boolean;
  bytes: number;
}

/** Why a publish reached no one. */
export type UndeliverableReason =
  /** No client subscribes to the topic (EMQX's `no_subscribers`). */
  | 'no-subscribers'
  /** Another reason the broker gives (in `detail`). */
  | 'other';

/** A client's publish the broker dropped undelivered (where the broker reports it: EMQX's `message.dropped`). */
export interface UndeliverableEvent extends BusEventBase {
  kind: 'undeliverable';
  /** The publisher. */
  clientId: string;
  topic: string;
  reason: UndeliverableReason;
  /** The broker's own word for the reason, where it says more than `reason`. */
  detail?: string;
}

export type BusEvent =
  ConnectEvent | DisconnectEvent | TlsFailureEvent | SubscribeEvent | UnsubscribeEvent | AclDeniedEvent | PublishEvent | UndeliverableEvent;

export type BusEventKind = BusEvent['kind'];

/** Every kind once: a Record, so the compiler refuses a kind of BusEvent left out. */
const EVERY_KIND: Record<BusEventKind, true> = {
  connect: true,
  disconnect: true,
  'tls-failure': true,
  subscribe: true,
  unsubscribe: true,
  'acl-denied': true,
  publish: true,
  undeliverable: true,
};
export const BUS_EVENT_KINDS: readonly BusEventKind[] = Object.keys(EVERY_KIND) as BusEventKind[];

/** A table with a value for every event kind, in BUS_EVENT_KINDS' order. */
export function perBusEventKind<T>(of: (kind: BusEventKind) => T): Record<BusEventKind, T> {
  return Object.fromEntries(BUS_EVENT_KINDS.map((k) => [k, of(k)])) as Record<BusEventKind, T>;
}

/** Whether a source can observe a kind of event, and if not, why: the watch reports it, never guesses. */
export type Observability = { observed: true; note?: string } | { observed: false; why: string };

/** Input a source could not turn into events, counted per reason (never thrown). */
export type DropCounts = Record<string, number>;

/** Where a broker's events come from: one interface for every broker and channel. */
export interface BusEventSource extends StatusReportingSource {
  /** The broker's id, as in the events. */
  readonly broker: string;
  /** Per event kind: whether this source can observe it, and why not. */
  readonly observes: Readonly<Record<BusEventKind, Observability>>;
  /** Begins delivering events to onEvent (in the broker's order); resolves once the source listens. */
  start(onEvent: (e: BusEvent) => void): Promise<void>;
  stop(): Promise<void>;
  /** Input dropped so far, per reason. */
  dropped(): DropCounts;
}

/**
 * A bus event as the watch hands it on: with the identity of the client it concerns, where the
 * watch knows it. The identity is the connect's username (the certificate CN under
 * `use_identity_as_username`, i.e. the device id), else the MQTT client id; for events after the
 * connect (disconnect, subscribe, ...) the watch carries it over from the client's live session.
 * Absent for events no client is known for (a TLS failure, a connection refused before CONNECT).
 */
export interface WatchedBusEvent {
  event: BusEvent;
  identity?: string;
}

/** What consumes the watch's events (presence, detectors): told synchronously, in the broker's order; never throws. */
export interface BusObserver {
  observe(e: WatchedBusEvent): void;
  /** The watch started: begin what runs beside the events (the detectors' sweeps). */
  watchStarted?(): void;
  /** The watch stopped: end it, and finish the work under way. */
  watchStopped?(): Promise<void>;
}

/**
 * Why a source stopped delivering, as the watch records the gap: the session to the broker dropped,
 * the broker went down (it said it was shutting down, or refused connections), the source could not
 * start, its log file is missing; or the watch itself was not running (stopped, or its process ended
 * without saying so) or not yet up.
 */
export type WatchGapReason =
  'session-dropped' | 'broker-down' | 'start-failed' | 'file-missing' | 'watch-starting' | 'watch-stopped' | 'watch-not-running';

/**
 * A source's channel, as it reports it after start() resolved: down (with why) when it lost it,
 * up again once it delivers again. `sessionsReset`: the broker's sessions are unknown from here (it
 * reconnected, or the broker restarted), so the watch forgets the live sessions it carried over.
 */
export type SourceStatus = { up: true; sessionsReset?: boolean } | { up: false; why: WatchGapReason; detail?: string };

/** What a source that can lose its channel adds to BusEventSource (the watch listens when present). */
export interface StatusReportingSource {
  /** A name for the kind of source in status reports (`mosquitto-sys-log`, `mosquitto-log-file`, `webhook`). */
  readonly kind?: string;
  /** Listens for the source's channel going down and up; returns the unsubscribe. */
  onStatus?(listener: (s: SourceStatus) => void): () => void;
}
