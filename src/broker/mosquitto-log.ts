// Mosquitto 2.0's log lines -> typed bus events. The formats are the broker's own (recorded from
// Mosquitto 2.0.11 in test/fixtures/mosquitto-2.0.11/, the rest from its source's log__printf calls):
// see docs/bus-watch.md for which line gives which event. Input is hostile: anything that is not a
// line Mosquitto writes is dropped with a counter per reason; nothing here throws.
import {
  perBusEventKind,
  type BusEvent,
  type BusEventKind,
  type DisconnectReason,
  type DropCounts,
  type MqttProtocol,
  type Observability,
  type SourceAddress,
  type TlsFailure,
} from './bus-events.js';

/** Longer than any line Mosquitto writes for a 64 KB topic and a 64 KB client id. */
export const MAX_LOG_LINE = 140_000;

/** Why no Mosquitto source observes undeliverable publishes (the $SYS log's and the file's, in the same words). */
export const MOSQUITTO_UNDELIVERABLE_WHY =
  'Mosquitto 2.0 logs no line for a publish that reaches no subscriber, at any level (its debug log lists the deliveries made, never a missing one)';

/** What a Mosquitto 2.0 TLS failure line says, in whichever log it is read. */
export const MOSQUITTO_TLS_FAILURE_NOTE =
  'Mosquitto logs "certificate verify failed" alike for revoked, expired and foreign-CA certificates, and no certificate name';

/** What the $SYS log and a log file of Mosquitto 2.0 observe alike. */
const MOSQUITTO_LOG_ALIKE = {
  connect: { observed: true },
  disconnect: { observed: true },
  subscribe: { observed: true, note: 'granted subscriptions (log_type subscribe)' },
  unsubscribe: { observed: true, note: 'log_type unsubscribe' },
  undeliverable: { observed: false, why: MOSQUITTO_UNDELIVERABLE_WHY },
} satisfies Partial<Record<BusEventKind, Observability>>;

/**
 * A Mosquitto log source's `observes`: what every Mosquitto 2.0 log shows, and the source's own word
 * on the kinds its channel shows or not (the compiler asks for each of them), in BUS_EVENT_KINDS' order.
 */
export function mosquittoLogObserves(
  own: Record<Exclude<BusEventKind, keyof typeof MOSQUITTO_LOG_ALIKE>, Observability>,
): Readonly<Record<BusEventKind, Observability>> {
  const all: Record<BusEventKind, Observability> = { ...MOSQUITTO_LOG_ALIKE, ...own };
  return perBusEventKind((k) => all[k]);
}

export interface MosquittoLogParserOptions {
  broker: string;
  /** The clock for lines whose timestamp names no time zone (a custom log_timestamp_format). */
  now?: () => Date;
  /** Bound on the sessions and pending connections remembered (the oldest are forgotten first). */
  maxSessions?: number;
}

/** Why a line gave no event. `unrecognised`: a line that is no event (Mosquitto logs much else). */
export type DropReason =
  'not-text' | 'too-long' | 'invalid-utf8' | 'control-characters' | 'no-timestamp' | 'malformed' | 'ambiguous' | 'unrecognised';

const UTF8 = new TextDecoder('utf-8', { fatal: true });

const PROTOCOLS: Record<string, MqttProtocol> = { '1': 'mqtt3.1', '2': 'mqtt3.1.1', '5': 'mqtt5' };

const EPOCH_PREFIX = /^(\d{1,12}): /;
// A custom log_timestamp_format (strftime): digits first, no ": " inside.
const CUSTOM_PREFIX = /^(\d[0-9A-Za-z:\-+., /]{0,40}?): /;
const ZONED = /(?:Z|[+-]\d{2}:?\d{2})$/;
// C0 controls but tab, DEL and C1 controls: Mosquitto refuses client ids and topics with them.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const NEW_CONNECTION = /^New connection from (.+):(\d{1,5}) on port (\d{1,5})\.$/;
// The client id is greedy: it is the client's to choose; the username (a certificate CN here) is the CA's.
const CONNECTED = /^New client connected from (.+?):(\d{1,5}) as (.+) \(p([125]), c([01]), k(\d{1,5})(?:, u'(.*)')?\)\.$/;
const TAKEN_OVER = /^Client (.+) already connected, closing old connection\.$/;
const CONNECTION_FAILED = /^Client connection from (.+) failed: (.*)\.$/;
const OPENSSL_ERROR = /^OpenSSL Error\[(\d+)\]: (.*)$/;
const DENIED_PUBLISH = /^Denied PUBLISH from (.+) \(d[01], q([0-2]), r([01]), m\d+, '(.*)', \.\.\. \((\d+) bytes\)\)$/;
const RECEIVED_PUBLISH = /^Received PUBLISH from (.+) \(d[01], q([0-2]), r([01]), m\d+, '(.*)', \.\.\. \((\d+) bytes\)\)$/;
const RECEIVED_SUBSCRIBE = /^Received SUBSCRIBE from (.+)$/;
const SUBSCRIBE_REQUEST = /^\t(.*) \(QoS ([0-2])\)$/;
const SENDING_SUBACK = /^Sending SUBACK to (.+)$/;

/** "Client <id> <suffix>": the disconnect lines of do_disconnect (src/loop.c) and the kick. */
const DISCONNECTS: [suffix: string, reason: DisconnectReason][] = [
  [' disconnected.', 'client'],
  [' has exceeded timeout, disconnecting.', 'keepalive-timeout'],
  [' closed its connection.', 'connection-lost'],
  [' disconnected due to protocol error.', 'protocol-error'],
  [' disconnected due to malformed packet.', 'malformed-packet'],
  [' disconnected, not authorised.', 'not-authorised'],
  [' been disconnected by administrative action.', 'administrative'],
  [' disconnected due to oversize packet.', 'oversize'],
  [' disconnected due to oversize payload.', 'oversize'],
  [' disconnected due to out of memory.', 'out-of-memory'],
  [' disconnected due to QoS too high or retain not supported.', 'not-supported'],
];
const DISCONNECT_ERRNO = /^Client (.+) disconnected: (.*)\.$/;
const BAD_SOCKET = /^Bad socket read\/write on client (.+): (.*)$/;
const UNKNOWN_CLIENT = '<unknown>';

/** Lines that begin like an event's line: one that then fails to parse is `malformed`, not `unrecognised`. */
const EVENT_PREFIXES = [
  'New connection from ',
  'New client connected from ',
  'Client ',
  'OpenSSL Error[',
  'Denied PUBLISH from ',
  'Received PUBLISH from ',
];

/** The $SYS/broker/log/<level> topics that carry events (the others: warnings, information, debug never). */
const LEVELS = new Set(['N', 'E', 'M/subscribe', 'M/unsubscribe']);

export function tlsFailureOf(text: string): TlsFailure {
  if (/certificate verify failed/i.test(text)) return 'verify-failed';
  if (/peer did not return a certificate|no certificate returned/i.test(text)) return 'no-certificate';
  if (/unexpected eof while reading|shutdown while in init|Connection reset/i.test(text)) return 'closed-during-handshake';
  return 'other';
}

interface Pending {
  source: SourceAddress;
  at: number;
}

/**
 * A stateful reader of one broker's log, line by line in the broker's order. State, bounded by
 * maxSessions: the connected sessions (client id -> source address, to split "<id> <qos> <topic>"
 * lines and to give disconnects their source), the connections not yet past CONNECT (to give a
 * failed handshake its source when only one is pending), an OpenSSL error waiting for the
 * disconnect that tells whose it was, and a SUBSCRIBE being logged (debug lines: its denials).
 */
export class MosquittoLogParser {
  private readonly broker: string;
  private readonly now: () => Date;
  private readonly max: number;
  private readonly sessions = new Map<string, SourceAddress>();
  private readonly pending = new Map<string, Pending>();
  private tlsError: { text: string; at: Date } | undefined;
  private subscribing: { clientId: string; requested: { topic: string; qos: number }[]; granted: Set<string> } | undefined;
  private readonly drops: Record<string, number> = {};

  constructor(o: MosquittoLogParserOptions) {
    this.broker = o.broker;
    this.now = o.now ?? (() => new Date());
    this.max = o.maxSessions ?? 100_000;
  }

  dropped(): DropCounts {
    return { ...this.drops };
  }

  /** Forgets the sessions and connections under way: the broker restarted, or the log was lost for a while. */
  forgetSessions(): void {
    this.sessions.clear();
    this.pending.clear();
    this.tlsError = undefined;
    this.subscribing = undefined;
  }

  /** A `$SYS/broker/log/<level>` message: its topic and raw payload. */
  message(topic: string, payload: Uint8Array): BusEvent[] {
    const level = typeof topic === 'string' && topic.startsWith('$SYS/broker/log/') ? topic.slice(16) : undefined;
    if (level === undefined) return this.drop('unrecognised');
    if (!LEVELS.has(level)) return this.drop('unrecognised');
    return this.bytes(payload, level);
  }

  /** One line's raw bytes (a $SYS payload, or a line of a log file without its newline). */
  bytes(raw: Uint8Array, level?: string): BusEvent[] {
    if (!(raw instanceof Uint8Array)) return this.drop('not-text');
    if (raw.length > MAX_LOG_LINE * 3) return this.drop('too-long');
    let text: string;
    try {
      text = UTF8.decode(raw);
    } catch {
      return this.drop('invalid-utf8');
    }
    return this.line(text, level);
  }

  /** One line as Mosquitto writes it ("<timestamp>: <message>"); level: the $SYS topic's, if known. */
  line(text: string, level?: string): BusEvent[] {
    if (typeof text !== 'string') return this.drop('not-text');
    if (text.length > MAX_LOG_LINE) return this.drop('too-long');
    if (CONTROL.test(text)) return this.drop('control-characters');
    if (LONE_SURROGATE.test(text)) return this.drop('invalid-utf8');
    let at: Date;
    let msg: string;
    const epoch = EPOCH_PREFIX.exec(text);
    if (epoch) {
      at = new Date(Number(epoch[1]) * 1000);
      msg = text.slice(epoch[0].length);
    } else {
      const custom = CUSTOM_PREFIX.exec(text);
      if (!custom) return this.drop('no-timestamp');
      const parsed = ZONED.test(custom[1]!) ? Date.parse(custom[1]!) : NaN;
      at = Number.isNaN(parsed) ? this.now() : new Date(parsed);
      msg = text.slice(custom[0].length);
    }
    if (level === 'M/subscribe') return this.subscribeLine(msg, at);
    if (level === 'M/unsubscribe') return this.unsubscribeLine(msg, at);
    return this.messageLine(msg, at, level === undefined);
  }

  private messageLine(msg: string, at: Date, untyped: boolean): BusEvent[] {
    const base = { broker: this.broker, at };
    let m: RegExpExecArray | null;
    if ((m = NEW_CONNECTION.exec(msg))) {
      const source = address(m[1]!, m[2]!);
      if (!source) return this.drop('malformed');
      this.remember(this.pending, `${source.host}:${source.port}`, { source, at: at.getTime() });
      return [];
    }
    if ((m = CONNECTED.exec(msg))) {
      const source = address(m[1]!, m[2]!);
      if (!source) return this.drop('malformed');
      const clientId = m[3]!;
      this.pending.delete(`${source.host}:${source.port}`);
      this.sessions.delete(clientId);
      this.remember(this.sessions, clientId, source);
      return [
        {
          ...base,
          kind: 'connect',
          clientId,
          ...(m[7] !== undefined ? { username: m[7] } : {}),
          source,
          protocol: PROTOCOLS[m[4]!]!,
          cleanStart: m[5] === '1',
          keepAliveSeconds: Number(m[6]),
        },
      ];
    }
    if ((m = TAKEN_OVER.exec(msg))) {
      const clientId = m[1]!;
      const source = this.sessions.get(clientId);
      this.sessions.delete(clientId);
      return [{ ...base, kind: 'disconnect', clientId, reason: 'taken-over', ...(source ? { source } : {}) }];
    }
    if ((m = OPENSSL_ERROR.exec(msg))) {
      // Whose it is shows at the next disconnect: an unknown client's (a handshake) or a session's.
      if (m[1] === '0') this.tlsError = { text: m[2]!, at };
      return [];
    }
    if ((m = CONNECTION_FAILED.exec(msg))) {
      const host = m[1]!;
      for (const [k, p] of this.pending) if (p.source.host === host) this.pending.delete(k);
      return [{ ...base, kind: 'tls-failure', failure: tlsFailureOf(m[2]!), detail: m[2]!, source: { host } }];
    }
    if (msg.startsWith('Client ')) return this.disconnectLine(msg, at);
    if ((m = BAD_SOCKET.exec(msg))) return this.disconnected(m[1]!, 'other', at, m[2]!);
    if ((m = DENIED_PUBLISH.exec(msg)))
      return [{ ...base, kind: 'acl-denied', action: 'publish', clientId: m[1]!, topic: m[4]!, qos: Number(m[2]) }];
    if ((m = RECEIVED_PUBLISH.exec(msg)))
      return [{ ...base, kind: 'publish', clientId: m[1]!, topic: m[4]!, qos: Number(m[2]), retain: m[3] === '1', bytes: Number(m[5]) }];
    if ((m = RECEIVED_SUBSCRIBE.exec(msg))) {
      this.subscribing = { clientId: m[1]!, requested: [], granted: new Set() };
      return [];
    }
    if ((m = SUBSCRIBE_REQUEST.exec(msg)) && this.subscribing) {
      if (this.subscribing.requested.length < 1_000) this.subscribing.requested.push({ topic: m[1]!, qos: Number(m[2]) });
      return [];
    }
    const s = this.subscribing;
    if ((m = SENDING_SUBACK.exec(msg)) && s && s.clientId === m[1]) {
      // A subscription the broker refused is logged as requested and never as granted (handle_subscribe.c).
      this.subscribing = undefined;
      return s.requested
        .filter((r) => !s.granted.has(r.topic))
        .map((r) => ({
          ...base,
          kind: 'acl-denied' as const,
          action: 'subscribe' as const,
          clientId: s.clientId,
          topic: r.topic,
          qos: r.qos,
        }));
    }
    // A file's lines carry no level: a subscribe or unsubscribe line is one that begins with a connected session's id.
    if (untyped) {
      const sub = this.splitSubscribe(msg, true);
      if (sub) return this.subscribed(sub, at);
      const known = [...this.idsPrefixing(msg, ' ')];
      if (known.length === 1 && !/ [0-2] /.test(msg.slice(known[0]!.length, known[0]!.length + 3)))
        return [{ ...base, kind: 'unsubscribe', clientId: known[0]!, topic: msg.slice(known[0]!.length + 1) }];
    }
    return this.drop(EVENT_PREFIXES.some((p) => msg.startsWith(p)) ? 'malformed' : 'unrecognised');
  }

  private disconnectLine(msg: string, at: Date): BusEvent[] {
    for (const [suffix, reason] of DISCONNECTS) {
      if (msg.endsWith(suffix) && msg.length > 7 + suffix.length) return this.disconnected(msg.slice(7, -suffix.length), reason, at);
    }
    const m = DISCONNECT_ERRNO.exec(msg);
    if (m) return this.disconnected(m[1]!, 'socket-error', at, m[2]!);
    return this.drop('malformed');
  }

  private disconnected(id: string, reason: DisconnectReason, at: Date, detail?: string): BusEvent[] {
    const base = { broker: this.broker, at };
    const tls = this.tlsError;
    this.tlsError = undefined;
    if (id !== UNKNOWN_CLIENT) {
      // A session's own TLS error (e.g. "unexpected eof" of a killed client): the disconnect says it all.
      const source = this.sessions.get(id);
      this.sessions.delete(id);
      return [{ ...base, kind: 'disconnect', clientId: id, reason, ...(detail ? { detail } : {}), ...(source ? { source } : {}) }];
    }
    // A connection that never got past CONNECT: its source is known when only one is pending.
    this.expirePending(at);
    let source: SourceAddress | undefined;
    if (this.pending.size === 1) {
      const [k, p] = [...this.pending][0]!;
      this.pending.delete(k);
      source = p.source;
    }
    if (tls)
      return [
        { ...base, at: tls.at, kind: 'tls-failure', failure: tlsFailureOf(tls.text), detail: tls.text, ...(source ? { source } : {}) },
      ];
    return [{ ...base, kind: 'disconnect', reason, ...(detail ? { detail } : {}), ...(source ? { source } : {}) }];
  }

  private subscribeLine(msg: string, at: Date): BusEvent[] {
    const s = this.splitSubscribe(msg, false);
    if (!s) return this.drop(/ [0-2] /.test(msg) ? 'ambiguous' : 'malformed');
    return this.subscribed(s, at);
  }

  private subscribed(s: { clientId: string; qos: number; topic: string }, at: Date): BusEvent[] {
    if (this.subscribing?.clientId === s.clientId) this.subscribing.granted.add(s.topic);
    return [{ broker: this.broker, at, kind: 'subscribe', ...s }];
  }

  private unsubscribeLine(msg: string, at: Date): BusEvent[] {
    // "<client id> <topic>": split after a connected session's id, or at the only space.
    const known = [...this.idsPrefixing(msg, ' ')];
    let clientId: string | undefined;
    if (known.length === 1) clientId = known[0];
    else if (known.length === 0 && msg.indexOf(' ') > 0 && msg.indexOf(' ') === msg.lastIndexOf(' '))
      clientId = msg.slice(0, msg.indexOf(' '));
    if (clientId === undefined) return this.drop(msg.includes(' ') ? 'ambiguous' : 'malformed');
    const topic = msg.slice(clientId.length + 1);
    if (!topic) return this.drop('malformed');
    return [{ broker: this.broker, at, kind: 'unsubscribe', clientId, topic }];
  }

  /** "<client id> <qos> <topic>": both may hold spaces; split after a connected session's id, or where only one split exists. */
  private splitSubscribe(msg: string, knownOnly: boolean): { clientId: string; qos: number; topic: string } | undefined {
    const splits: { clientId: string; qos: number; topic: string }[] = [];
    const re = / ([0-2]) /g;
    let m: RegExpExecArray | null;
    while ((m = re.exec(msg)) && splits.length < 64) {
      const clientId = msg.slice(0, m.index);
      const topic = msg.slice(m.index + 3);
      if (clientId && topic) splits.push({ clientId, qos: Number(m[1]), topic });
      re.lastIndex = m.index + 1;
    }
    if (splits.length === 1 && !knownOnly) return splits[0];
    const known = splits.filter((s) => this.sessions.has(s.clientId));
    return known.length === 1 ? known[0] : undefined;
  }

  private *idsPrefixing(msg: string, sep: string): Iterable<string> {
    for (let i = msg.indexOf(sep); i > 0; i = msg.indexOf(sep, i + 1)) {
      if (this.sessions.has(msg.slice(0, i))) yield msg.slice(0, i);
    }
  }

  private expirePending(at: Date): void {
    // A handshake that neither connected nor failed within a minute is forgotten.
    for (const [k, p] of this.pending) {
      if (at.getTime() - p.at <= 60_000) break;
      this.pending.delete(k);
    }
  }

  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.set(key, value);
    if (map.size > this.max) map.delete(map.keys().next().value as string);
  }

  private drop(reason: DropReason): BusEvent[] {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
    return [];
  }
}

function address(host: string, port: string): SourceAddress | undefined {
  const p = Number(port);
  if (!host || p > 65_535) return undefined;
  return { host, port: p };
}

/**
 * Splits a log file's bytes, as they arrive in chunks, into lines (without "\n" or "\r\n").
 * Memory stays bounded: a line longer than `max` bytes is dropped whole (counted), up to its newline.
 */
export class LogLineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private overlong = false;
  /** Lines dropped for their length. */
  tooLong = 0;

  constructor(private readonly max = MAX_LOG_LINE * 3) {}

  push(chunk: Uint8Array): Buffer[] {
    const lines: Buffer[] = [];
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      const piece = buf.subarray(start, nl);
      start = nl + 1;
      if (this.overlong || this.size + piece.length > this.max) {
        this.tooLong++;
        this.reset();
        continue;
      }
      const line = this.parts.length ? Buffer.concat([...this.parts, piece]) : Buffer.from(piece);
      this.reset();
      lines.push(line.at(-1) === 13 ? line.subarray(0, -1) : line);
    }
    const rest = buf.subarray(start);
    if (!this.overlong && rest.length) {
      if (this.size + rest.length > this.max) {
        this.overlong = true;
        this.parts = [];
        this.size = 0;
      } else {
        this.parts.push(Buffer.from(rest));
        this.size += rest.length;
      }
    }
    return lines;
  }

  /** At the end of the input: the last line if it had no newline (it may be cut short). */
  end(): Buffer | undefined {
    const last = this.overlong ? undefined : this.parts.length ? Buffer.concat(this.parts) : undefined;
    if (this.overlong) this.tooLong++;
    this.reset();
    return last;
  }

  private reset(): void {
    this.parts = [];
    this.size = 0;
    this.overlong = false;
  }
}
