// Bus events posted by other brokers (POST /v1/bus-events): the batch envelope, and each event in
// EMQX 5's rule-engine shape or in the generic shape (BusEvent itself, which HiveMQ extensions and
// anyone else send), mapped to a BusEvent or dropped with a reason. Nothing here throws for an
// event: only a batch whose envelope is wrong is refused (DomainError, 400 / 413).
import { DomainError, badRequest } from '../shared/errors.js';
import { DISCONNECT_REASONS, TLS_FAILURES } from '../shared/bus-terms.js';
import {
  BUS_EVENT_KINDS,
  type BusEvent,
  type BusEventKind,
  type DisconnectReason,
  type MqttProtocol,
  type SourceAddress,
  type UndeliverableReason,
} from './bus-events.js';

/** The largest body POST /v1/bus-events reads (bytes); larger is 413. */
export const BUS_EVENT_BODY_LIMIT_BYTES = 1024 * 1024;
/** The most events one batch may carry; more is 413. */
export const BUS_EVENT_BATCH_MAX = 1000;

/** Why an event of a batch was dropped (counted per reason in the answer and in the source's dropped()). */
export type WebhookDropReason =
  /** An item of `events` that is not a JSON object. */
  | 'not-an-object'
  /** Neither an EMQX event (`event`) nor a generic one (`kind`). */
  | 'unrecognised'
  /** An EMQX `event` or a generic `kind` this service does not take (e.g. message.delivered). */
  | 'unsupported-event'
  /** A string holding NUL or an unpaired UTF-16 surrogate. */
  | 'not-text'
  /** A client id, username, address or detail with C0/C1 control characters (topics may carry them). */
  | 'control-characters'
  /** A field past its limit (client id, username 1,024 bytes; topic 65,535 bytes, MQTT's own limit). */
  | 'too-long'
  /** A field the event needs is absent. */
  | 'missing-field'
  /** A field of the wrong type or out of range (a QoS of 3, a peername without a port, a time before 2000). */
  | 'bad-field'
  /** A generic event naming another broker than the one whose secret signed the batch. */
  | 'broker-mismatch';

export type MappedWebhookEvent = { event: BusEvent } | { ignored: string } | { dropped: WebhookDropReason };

/**
 * The envelope `{ "events": [ ... ] }` from the exact bytes received: UTF-8, JSON, an object with
 * `events` alone, an array of at most BUS_EVENT_BATCH_MAX. Throws DomainError BadRequest (400),
 * PayloadTooLarge (413) past the limit.
 */
export function parseBusEventBatch(body: Buffer, maxEvents = BUS_EVENT_BATCH_MAX): unknown[] {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(body);
  } catch {
    throw badRequest('the body is not UTF-8 text');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw badRequest('the body is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw badRequest('the body must be a JSON object { "events": [ ... ] }');
  const keys = Object.keys(value);
  const events = (value as { events?: unknown }).events;
  if (!Array.isArray(events) || keys.length !== 1)
    throw badRequest('the body must be { "events": [ ... ] } and nothing else', {
      errors: [{ path: '/body/events', message: Array.isArray(events) ? 'must be the only member' : 'must be an array' }],
    });
  if (events.length > maxEvents)
    throw new DomainError('PayloadTooLarge', `a batch carries at most ${maxEvents} events; this one has ${events.length}`);
  return events;
}

// ---- field checks -------------------------------------------------------------------------------

class Drop extends Error {
  constructor(readonly reason: WebhookDropReason) {
    super(reason);
  }
}
const drop = (reason: WebhookDropReason): never => {
  throw new Drop(reason);
};

// eslint-disable-next-line no-control-regex -- the NUL is what this looks for
const NOT_TEXT = /[\u0000\p{Cs}]/u;
// eslint-disable-next-line no-control-regex -- control characters are what this looks for
const CONTROL = /[\u0001-\u001f\u007f-\u009f]/;

const IDENTITY_MAX_BYTES = 1024;
/** MQTT's own limit on a topic (a UTF-8 string of at most 65,535 bytes). */
const TOPIC_MAX_BYTES = 65_535;
const DETAIL_MAX_BYTES = 1024;

type Obj = Record<string, unknown>;

/** A string field: text, within `maxBytes`, without control characters unless `controls`. */
function text(o: Obj, key: string, opts: { maxBytes: number; controls?: boolean; optional?: boolean }): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return opts.optional ? undefined : drop('missing-field');
  if (typeof v !== 'string') return drop('bad-field');
  if (NOT_TEXT.test(v)) return drop('not-text');
  if (v.length > opts.maxBytes || Buffer.byteLength(v, 'utf8') > opts.maxBytes) return drop('too-long');
  if (!opts.controls && CONTROL.test(v)) return drop('control-characters');
  return v;
}

const clientIdOf = (o: Obj, key: string) => {
  const id = text(o, key, { maxBytes: IDENTITY_MAX_BYTES })!;
  return id.length ? id : drop('bad-field');
};
const topicOf = (o: Obj, key = 'topic') => {
  const t = text(o, key, { maxBytes: TOPIC_MAX_BYTES, controls: true })!;
  return t.length ? t : drop('bad-field');
};
const detailOf = (o: Obj, key: string) => text(o, key, { maxBytes: DETAIL_MAX_BYTES, optional: true });

function int(o: Obj, key: string, min: number, max: number, fallback?: number): number {
  const v = o[key];
  if (v === undefined || v === null) return fallback ?? drop('missing-field');
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) return drop('bad-field');
  return v;
}

function bool(o: Obj, key: string, fallback?: boolean): boolean {
  const v = o[key];
  if (v === undefined || v === null) return fallback ?? drop('missing-field');
  // EMQX writes some flags as the strings "true" / "false" (is_cache in its own examples).
  if (v === 'true' || v === 'false') return v === 'true';
  if (typeof v !== 'boolean') return drop('bad-field');
  return v;
}

const oneOf = <T extends string>(o: Obj, key: string, allowed: readonly T[], optional = false): T | undefined => {
  const v = o[key];
  if ((v === undefined || v === null) && optional) return undefined;
  if (v === undefined || v === null) return drop('missing-field');
  return typeof v === 'string' && (allowed as readonly string[]).includes(v) ? (v as T) : drop('bad-field');
};

/** An IPv4 or IPv6 address (letters, digits, dots, colons; a zone id after %). */
const HOST = /^[0-9A-Fa-f.:]{2,45}(%[A-Za-z0-9_.-]{1,32})?$/;

function hostOf(v: string): string {
  return HOST.test(v) ? v : drop('bad-field');
}

/**
 * EMQX's `peername`: `host:port` as its emqx_utils:ntoa writes it, the IPv6 address without brackets
 * (`::1:52344`), so the port is after the last colon. `[host]:port` is taken too.
 */
function peernameOf(v: unknown): SourceAddress | undefined {
  if (v === undefined || v === null || v === 'undefined') return undefined;
  if (typeof v !== 'string') return drop('bad-field');
  if (NOT_TEXT.test(v)) return drop('not-text');
  if (v.length > 80) return drop('too-long');
  const at = v.lastIndexOf(':');
  if (at <= 0) return drop('bad-field');
  let host = v.slice(0, at);
  const portText = v.slice(at + 1);
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65_535) return drop('bad-field');
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host: hostOf(host), port: Number(portText) };
}

/** A time: Unix milliseconds (EMQX's `timestamp`) or ISO-8601 text; absent: `now`. Between 2000 and 2200. */
function timeOf(v: unknown, now: Date): Date {
  if (v === undefined || v === null) return now;
  const at = typeof v === 'number' && Number.isFinite(v) ? new Date(v) : typeof v === 'string' && v.length <= 40 ? new Date(v) : undefined;
  if (!at || Number.isNaN(at.getTime()) || at.getTime() < Date.UTC(2000, 0, 1) || at.getTime() > Date.UTC(2200, 0, 1))
    return drop('bad-field');
  return at;
}

// ---- EMQX 5 ---------------------------------------------------------------------------------------

/** EMQX's proto_ver: 3 is MQTT 3.1, 4 is 3.1.1, 5 is 5.0. */
const PROTOCOL: Record<number, MqttProtocol> = { 3: 'mqtt3.1', 4: 'mqtt3.1.1', 5: 'mqtt5' };

/**
 * EMQX's `client.disconnected` reasons (emqx_rule_events reason/1: the atom of the exit reason):
 * those documented, and the TCP/TLS closes and takeovers its channel gives. Anything else is `other`
 * with EMQX's word as the detail; an errno name (econnreset, etimedout, ...) is a socket error.
 */
const EMQX_DISCONNECT: Record<string, DisconnectReason> = {
  normal: 'client',
  keepalive_timeout: 'keepalive-timeout',
  tcp_closed: 'connection-lost',
  ssl_closed: 'connection-lost',
  sock_closed: 'connection-lost',
  closed: 'connection-lost',
  takenover: 'taken-over',
  takeovered: 'taken-over',
  discarded: 'taken-over',
  kicked: 'administrative',
  not_authorized: 'not-authorised',
  protocol_error: 'protocol-error',
  frame_error: 'malformed-packet',
  malformed_packet: 'malformed-packet',
  frame_too_large: 'oversize',
  packet_too_large: 'oversize',
};

/** A refused CONNACK's reason code (EMQX's names for MQTT 3.1.1 and 5 codes) as a disconnect reason. */
const EMQX_CONNACK_REFUSED: Record<string, DisconnectReason> = {
  not_authorized: 'not-authorised',
  bad_username_or_password: 'not-authorised',
  malformed_username_or_password: 'not-authorised',
  unauthorized_client: 'not-authorised',
  banned: 'not-authorised',
  bad_authentication_method: 'not-authorised',
  client_identifier_not_valid: 'not-authorised',
  malformed_packet: 'malformed-packet',
  protocol_error: 'protocol-error',
  unsupported_protocol_version: 'not-supported',
  unacceptable_protocol_version: 'not-supported',
  packet_too_large: 'oversize',
};

const CONNACK_ACCEPTED = new Set(['success', 'connection_accepted']);

function usernameOf(o: Obj): string | undefined {
  const u = text(o, 'username', { maxBytes: IDENTITY_MAX_BYTES, optional: true });
  // EMQX writes an absent username as the atom `undefined` (JSON "undefined") or null.
  return u === undefined || u === '' || u === 'undefined' ? undefined : u;
}

function fromEmqx(broker: string, o: Obj, now: Date): MappedWebhookEvent {
  const name = o.event;
  if (typeof name !== 'string') return drop('bad-field');
  const at = timeOf(o.timestamp, now);
  const base = { broker, at };
  switch (name) {
    case 'client.connected': {
      const source = peernameOf(o.peername) ?? drop('missing-field');
      const username = usernameOf(o);
      return {
        event: {
          ...base,
          kind: 'connect',
          clientId: clientIdOf(o, 'clientid'),
          ...(username === undefined ? {} : { username }),
          source,
          protocol: PROTOCOL[int(o, 'proto_ver', 3, 5)]!,
          cleanStart: bool(o, 'clean_start'),
          keepAliveSeconds: int(o, 'keepalive', 0, 65_535, 0),
        },
      };
    }
    case 'client.disconnected': {
      const word = text(o, 'reason', { maxBytes: 128 }) ?? '';
      const reason = EMQX_DISCONNECT[word] ?? (/^e[a-z]{3,15}$/.test(word) ? 'socket-error' : 'other');
      const source = peernameOf(o.peername);
      return {
        event: {
          ...base,
          kind: 'disconnect',
          clientId: clientIdOf(o, 'clientid'),
          reason,
          ...(reason === 'client' || reason === 'keepalive-timeout' || reason === 'connection-lost' ? {} : { detail: word }),
          ...(source ? { source } : {}),
        },
      };
    }
    case 'client.connack': {
      const code = text(o, 'reason_code', { maxBytes: 128 })!;
      if (CONNACK_ACCEPTED.has(code)) return { ignored: 'connack-accepted' };
      const source = peernameOf(o.peername);
      return {
        event: {
          ...base,
          kind: 'disconnect',
          clientId: clientIdOf(o, 'clientid'),
          reason: EMQX_CONNACK_REFUSED[code] ?? 'other',
          detail: `connection refused: ${code}`,
          ...(source ? { source } : {}),
        },
      };
    }
    case 'client.check_authz_complete': {
      const result = oneOf(o, 'result', ['allow', 'deny'] as const);
      if (result === 'allow') return { ignored: 'authz-allowed' };
      return {
        event: {
          ...base,
          kind: 'acl-denied',
          action: oneOf(o, 'action', ['publish', 'subscribe'] as const)!,
          clientId: clientIdOf(o, 'clientid'),
          topic: topicOf(o),
          qos: int(o, 'qos', 0, 2, 0),
        },
      };
    }
    case 'session.subscribed':
      return { event: { ...base, kind: 'subscribe', clientId: clientIdOf(o, 'clientid'), topic: topicOf(o), qos: int(o, 'qos', 0, 2) } };
    case 'session.unsubscribed':
      return { event: { ...base, kind: 'unsubscribe', clientId: clientIdOf(o, 'clientid'), topic: topicOf(o) } };
    case 'message.publish': {
      const flags = o.flags && typeof o.flags === 'object' && !Array.isArray(o.flags) ? (o.flags as Obj) : {};
      return {
        event: {
          ...base,
          kind: 'publish',
          clientId: clientIdOf(o, 'clientid'),
          topic: topicOf(o),
          qos: int(o, 'qos', 0, 2),
          retain: o.retain !== undefined ? bool(o, 'retain') : bool(flags, 'retain', false),
          bytes: payloadBytes(o),
        },
      };
    }
    case 'message.dropped': {
      const word = text(o, 'reason', { maxBytes: 128 }) ?? '';
      const reason: UndeliverableReason = word === 'no_subscribers' ? 'no-subscribers' : 'other';
      return {
        event: {
          ...base,
          kind: 'undeliverable',
          clientId: clientIdOf(o, 'clientid'),
          topic: topicOf(o),
          reason,
          ...(reason === 'other' ? { detail: word } : {}),
        },
      };
    }
    default:
      return { dropped: 'unsupported-event' };
  }
}

/** The payload's size: `payload_bytes` where the rule computed it (byte_size(payload)), else the payload text's UTF-8 bytes. */
function payloadBytes(o: Obj): number {
  if (o.payload_bytes !== undefined) return int(o, 'payload_bytes', 0, 2 ** 28);
  return typeof o.payload === 'string' ? Buffer.byteLength(o.payload, 'utf8') : 0;
}

// ---- the generic form: a BusEvent as JSON --------------------------------------------------------

const PROTOCOLS: readonly MqttProtocol[] = ['mqtt3.1', 'mqtt3.1.1', 'mqtt5'];
const UNDELIVERABLE_REASONS: readonly UndeliverableReason[] = ['no-subscribers', 'other'];

function addressOf(v: unknown, optional: boolean): SourceAddress | undefined {
  if (v === undefined || v === null) return optional ? undefined : drop('missing-field');
  if (typeof v !== 'object' || Array.isArray(v)) return drop('bad-field');
  const a = v as Obj;
  const host = hostOf(text(a, 'host', { maxBytes: 80 })!);
  const port = a.port === undefined || a.port === null ? undefined : int(a, 'port', 0, 65_535);
  return port === undefined ? { host } : { host, port };
}

function fromGeneric(broker: string, o: Obj, now: Date): MappedWebhookEvent {
  const kind = o.kind;
  if (typeof kind !== 'string' || !(BUS_EVENT_KINDS as readonly string[]).includes(kind)) return { dropped: 'unsupported-event' };
  if (o.broker !== undefined && o.broker !== broker) return { dropped: 'broker-mismatch' };
  const base = { broker, at: timeOf(o.at, now) };
  switch (kind as BusEventKind) {
    case 'connect': {
      const username = text(o, 'username', { maxBytes: IDENTITY_MAX_BYTES, optional: true });
      return {
        event: {
          ...base,
          kind: 'connect',
          clientId: clientIdOf(o, 'clientId'),
          ...(username ? { username } : {}),
          source: addressOf(o.source, false)!,
          protocol: oneOf(o, 'protocol', PROTOCOLS)!,
          cleanStart: bool(o, 'cleanStart'),
          keepAliveSeconds: int(o, 'keepAliveSeconds', 0, 65_535),
        },
      };
    }
    case 'disconnect': {
      const clientId = o.clientId === undefined || o.clientId === null ? undefined : clientIdOf(o, 'clientId');
      const detail = detailOf(o, 'detail');
      const source = addressOf(o.source, true);
      return {
        event: {
          ...base,
          kind: 'disconnect',
          ...(clientId === undefined ? {} : { clientId }),
          reason: oneOf(o, 'reason', DISCONNECT_REASONS)!,
          ...(detail ? { detail } : {}),
          ...(source ? { source } : {}),
        },
      };
    }
    case 'tls-failure': {
      const source = addressOf(o.source, true);
      return {
        event: {
          ...base,
          kind: 'tls-failure',
          failure: oneOf(o, 'failure', TLS_FAILURES)!,
          detail: detailOf(o, 'detail') ?? '',
          ...(source ? { source } : {}),
        },
      };
    }
    case 'subscribe':
      return { event: { ...base, kind: 'subscribe', clientId: clientIdOf(o, 'clientId'), topic: topicOf(o), qos: int(o, 'qos', 0, 2) } };
    case 'unsubscribe':
      return { event: { ...base, kind: 'unsubscribe', clientId: clientIdOf(o, 'clientId'), topic: topicOf(o) } };
    case 'acl-denied':
      return {
        event: {
          ...base,
          kind: 'acl-denied',
          action: oneOf(o, 'action', ['publish', 'subscribe'] as const)!,
          clientId: clientIdOf(o, 'clientId'),
          topic: topicOf(o),
          qos: int(o, 'qos', 0, 2),
        },
      };
    case 'publish':
      return {
        event: {
          ...base,
          kind: 'publish',
          clientId: clientIdOf(o, 'clientId'),
          topic: topicOf(o),
          qos: int(o, 'qos', 0, 2),
          retain: bool(o, 'retain'),
          bytes: int(o, 'bytes', 0, 2 ** 28),
        },
      };
    case 'undeliverable': {
      const detail = detailOf(o, 'detail');
      return {
        event: {
          ...base,
          kind: 'undeliverable',
          clientId: clientIdOf(o, 'clientId'),
          topic: topicOf(o),
          reason: oneOf(o, 'reason', UNDELIVERABLE_REASONS)!,
          ...(detail ? { detail } : {}),
        },
      };
    }
  }
}

/**
 * One posted event as a BusEvent of `broker` (the broker whose secret signed the batch), or why not:
 * `ignored` for a well-formed report that is no bus event (an accepted CONNACK, an allowed ACL
 * check), `dropped` with the reason for a malformed one. An object with `event` is EMQX's shape;
 * one with `kind`, the generic shape. Never throws.
 */
export function mapWebhookEvent(broker: string, raw: unknown, now: Date): MappedWebhookEvent {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return { dropped: 'not-an-object' };
  const o = raw as Obj;
  try {
    if (o.event !== undefined) return fromEmqx(broker, o, now);
    if (o.kind !== undefined) return fromGeneric(broker, o, now);
    return { dropped: 'unrecognised' };
  } catch (e) {
    if (e instanceof Drop) return { dropped: e.reason };
    throw e;
  }
}
