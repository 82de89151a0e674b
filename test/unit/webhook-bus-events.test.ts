import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mapWebhookEvent, parseBusEventBatch } from '../../src/broker/webhook-bus-events.js';
import { WebhookBusEventSource } from '../../src/broker/webhook-bus-source.js';
import { BUS_EVENT_KINDS, type BusEvent } from '../../src/broker/bus-events.js';
import { MOSQUITTO_SYS_LOG_OBSERVES } from '../../src/broker/mosquitto-log-source.js';
import { DomainError } from '../../src/shared/errors.js';

const NOW = new Date('2026-12-07T20:00:00Z');
const T = Date.parse('2026-12-07T19:59:59.123Z');
const map = (raw: unknown) => mapWebhookEvent('emqx-1', raw, NOW);
const eventOf = (raw: unknown): BusEvent => {
  const m = map(raw);
  assert.ok('event' in m, `expected an event, got ${JSON.stringify(m)}`);
  return m.event;
};
const droppedOf = (raw: unknown) => {
  const m = map(raw);
  assert.ok('dropped' in m, `expected a drop, got ${JSON.stringify(m)}`);
  return m.dropped;
};

/** EMQX 5's rule output for $events/client_connected (fields of emqx_rule_events:eventmsg_connected). */
const connected = {
  event: 'client.connected',
  clientid: 'meter-17',
  username: 'meter-17',
  mountpoint: 'undefined',
  peername: '203.0.113.9:52344',
  sockname: '10.0.0.2:8883',
  proto_name: 'MQTT',
  proto_ver: 5,
  keepalive: 60,
  clean_start: true,
  receive_maximum: 32,
  expiry_interval: 0,
  is_bridge: false,
  conn_props: { 'User-Property': {} },
  connected_at: T,
  client_attrs: {},
  timestamp: T,
  node: 'emqx@10.0.0.2',
};

describe('EMQX 5 rule-engine events → bus events', () => {
  it('client.connected: client id, username, peername, protocol, clean start, keep-alive, time', () => {
    assert.deepEqual(eventOf(connected), {
      broker: 'emqx-1',
      at: new Date(T),
      kind: 'connect',
      clientId: 'meter-17',
      username: 'meter-17',
      source: { host: '203.0.113.9', port: 52344 },
      protocol: 'mqtt5',
      cleanStart: true,
      keepAliveSeconds: 60,
    });
    const v311 = eventOf({ ...connected, proto_ver: 4, username: 'undefined', peername: '::1:4000', clean_start: false });
    assert.equal(v311.kind === 'connect' && v311.protocol, 'mqtt3.1.1');
    assert.equal(v311.kind === 'connect' && v311.username, undefined, 'EMQX writes an absent username as "undefined"');
    assert.deepEqual(
      v311.kind === 'connect' && v311.source,
      { host: '::1', port: 4000 },
      'IPv6 without brackets: the port is after the last colon',
    );
    assert.equal(eventOf({ ...connected, proto_ver: 3, username: null }).kind, 'connect');
  });

  it('client.disconnected: EMQX reasons map to the disconnect reasons', () => {
    const reasonOf = (reason: string) => {
      const e = eventOf({ event: 'client.disconnected', clientid: 'c1', username: 'u', reason, peername: '198.51.100.4:1', timestamp: T });
      assert.equal(e.kind, 'disconnect');
      return e.kind === 'disconnect' ? [e.reason, e.detail] : [];
    };
    assert.deepEqual(reasonOf('normal'), ['client', undefined]);
    assert.deepEqual(reasonOf('keepalive_timeout'), ['keepalive-timeout', undefined]);
    assert.deepEqual(reasonOf('tcp_closed'), ['connection-lost', undefined]);
    assert.deepEqual(reasonOf('ssl_closed'), ['connection-lost', undefined]);
    assert.deepEqual(reasonOf('takenover'), ['taken-over', 'takenover']);
    assert.deepEqual(reasonOf('kicked'), ['administrative', 'kicked']);
    assert.deepEqual(reasonOf('not_authorized'), ['not-authorised', 'not_authorized']);
    assert.deepEqual(reasonOf('econnreset'), ['socket-error', 'econnreset']);
    assert.deepEqual(reasonOf('internal_error'), ['other', 'internal_error']);
  });

  it('client.connack: an accepted one is ignored, a refused one is a disconnect with the code', () => {
    assert.deepEqual(map({ ...connected, event: 'client.connack', reason_code: 'success' }), { ignored: 'connack-accepted' });
    const e = eventOf({ ...connected, event: 'client.connack', reason_code: 'bad_username_or_password' });
    assert.equal(e.kind, 'disconnect');
    if (e.kind === 'disconnect') {
      assert.equal(e.reason, 'not-authorised');
      assert.equal(e.detail, 'connection refused: bad_username_or_password');
      assert.equal(e.clientId, 'meter-17');
    }
  });

  it('authz deny, subscribe, unsubscribe, publish, message.dropped', () => {
    const authz = {
      event: 'client.check_authz_complete',
      clientid: 'c1',
      username: 'u',
      topic: 'site/+/#',
      action: 'subscribe',
      is_cache: 'false',
      timestamp: T,
    };
    assert.deepEqual(map({ ...authz, result: 'allow' }), { ignored: 'authz-allowed' });
    assert.deepEqual(eventOf({ ...authz, result: 'deny' }), {
      broker: 'emqx-1',
      at: new Date(T),
      kind: 'acl-denied',
      action: 'subscribe',
      clientId: 'c1',
      topic: 'site/+/#',
      qos: 0,
    });
    assert.deepEqual(eventOf({ event: 'session.subscribed', clientid: 'c1', topic: 't/a', qos: 1, timestamp: T }), {
      broker: 'emqx-1',
      at: new Date(T),
      kind: 'subscribe',
      clientId: 'c1',
      topic: 't/a',
      qos: 1,
    });
    assert.equal(eventOf({ event: 'session.unsubscribed', clientid: 'c1', topic: 't/a', qos: 0, timestamp: T }).kind, 'unsubscribe');
    const pub = eventOf({
      event: 'message.publish',
      clientid: 'c1',
      topic: 't/a',
      qos: 2,
      flags: { retain: true, dup: false },
      payload: 'héllo',
      timestamp: T,
    });
    assert.deepEqual(pub.kind === 'publish' && [pub.retain, pub.bytes, pub.qos], [true, 6, 2]);
    const sized = eventOf({ event: 'message.publish', clientid: 'c1', topic: 't/a', qos: 0, payload_bytes: 4096, timestamp: T });
    assert.deepEqual(sized.kind === 'publish' && [sized.retain, sized.bytes], [false, 4096]);
    assert.deepEqual(
      eventOf({ event: 'message.dropped', reason: 'no_subscribers', clientid: 'c1', topic: 'nowhere', qos: 1, timestamp: T }),
      {
        broker: 'emqx-1',
        at: new Date(T),
        kind: 'undeliverable',
        clientId: 'c1',
        topic: 'nowhere',
        reason: 'no-subscribers',
      },
    );
  });

  it('unsupported or malformed events are dropped with a reason, never thrown', () => {
    assert.equal(droppedOf({ event: 'message.delivered', clientid: 'c1' }), 'unsupported-event');
    assert.equal(droppedOf('a string'), 'not-an-object');
    assert.equal(droppedOf(null), 'not-an-object');
    assert.equal(droppedOf([connected]), 'not-an-object');
    assert.equal(droppedOf({ hello: 'world' }), 'unrecognised');
    assert.equal(droppedOf({ ...connected, clientid: 'a\u0000b' }), 'not-text');
    assert.equal(droppedOf({ ...connected, clientid: 'a\ud800b' }), 'not-text');
    assert.equal(droppedOf({ ...connected, username: 'evil\nline' }), 'control-characters');
    assert.equal(droppedOf({ ...connected, clientid: 'x'.repeat(1025) }), 'too-long');
    assert.equal(droppedOf({ ...connected, clientid: undefined }), 'missing-field');
    assert.equal(droppedOf({ ...connected, clientid: 17 }), 'bad-field');
    assert.equal(droppedOf({ ...connected, proto_ver: 6 }), 'bad-field');
    assert.equal(droppedOf({ ...connected, peername: 'host-without-port' }), 'bad-field');
    assert.equal(droppedOf({ ...connected, peername: 'not an ip:1' }), 'bad-field');
    assert.equal(droppedOf({ ...connected, peername: undefined }), 'missing-field');
    assert.equal(droppedOf({ ...connected, timestamp: 5 }), 'bad-field');
    assert.equal(droppedOf({ ...connected, keepalive: -1 }), 'bad-field');
    assert.equal(droppedOf({ event: 'session.subscribed', clientid: 'c1', topic: 't', qos: 3 }), 'bad-field');
    assert.equal(droppedOf({ event: 'session.subscribed', clientid: 'c1', topic: 't'.repeat(65_536), qos: 0 }), 'too-long');
  });

  it('topics: up to MQTT’s 65,535 bytes and with control characters other than NUL are kept (a scanner’s probes must count)', () => {
    const big = eventOf({ event: 'session.subscribed', clientid: 'c1', topic: 't'.repeat(65_535), qos: 0, timestamp: T });
    assert.equal(big.kind === 'subscribe' && big.topic.length, 65_535);
    const odd = eventOf({ event: 'session.subscribed', clientid: 'c1', topic: 'a\u0007b', qos: 0, timestamp: T });
    assert.equal(odd.kind === 'subscribe' && odd.topic, 'a\u0007b');
    assert.equal(droppedOf({ event: 'session.subscribed', clientid: 'c1', topic: 'a\u0000b', qos: 0 }), 'not-text');
  });
});

describe('the generic form (HiveMQ extensions, anyone): a BusEvent as JSON', () => {
  it('maps every kind; the broker is the signer’s, `at` is ISO-8601 or ms, else the arrival time', () => {
    const at = '2026-12-07T19:00:00.000Z';
    const samples: Record<string, unknown>[] = [
      {
        kind: 'connect',
        clientId: 'd1',
        username: 'd1',
        source: { host: '192.0.2.1', port: 1 },
        protocol: 'mqtt5',
        cleanStart: false,
        keepAliveSeconds: 30,
        at,
      },
      { kind: 'disconnect', clientId: 'd1', reason: 'connection-lost', at: Date.parse(at) },
      { kind: 'disconnect', reason: 'not-authorised', source: { host: '192.0.2.1' } },
      { kind: 'tls-failure', failure: 'verify-failed', detail: 'certificate revoked', source: { host: '192.0.2.1' } },
      { kind: 'subscribe', clientId: 'd1', topic: '#', qos: 0 },
      { kind: 'unsubscribe', clientId: 'd1', topic: '#' },
      { kind: 'acl-denied', action: 'publish', clientId: 'd1', topic: '$SYS/x', qos: 1 },
      { kind: 'publish', clientId: 'd1', topic: 'a/b', qos: 1, retain: false, bytes: 12 },
      { kind: 'undeliverable', clientId: 'd1', topic: 'a/b', reason: 'no-subscribers' },
    ];
    const kinds = samples.map((s) => {
      const e = eventOf(s);
      assert.equal(e.broker, 'emqx-1');
      return e.kind;
    });
    assert.deepEqual([...new Set(kinds)].sort(), [...BUS_EVENT_KINDS].sort(), 'every kind has a generic form');
    assert.deepEqual(eventOf(samples[0]).at, new Date(at));
    assert.deepEqual(eventOf(samples[1]).at, new Date(at));
    assert.deepEqual(eventOf(samples[2]).at, NOW);
    assert.equal(droppedOf({ ...samples[0], broker: 'someone-else' }), 'broker-mismatch');
    assert.equal(eventOf({ ...samples[0], broker: 'emqx-1' }).kind, 'connect');
    assert.equal(droppedOf({ kind: 'nonsense' }), 'unsupported-event');
    assert.equal(droppedOf({ ...samples[0], protocol: 'mqtt6' }), 'bad-field');
    assert.equal(droppedOf({ ...samples[0], source: { host: '192.0.2.1', port: 70_000 } }), 'bad-field');
    assert.equal(droppedOf({ ...samples[1], reason: 'bored' }), 'bad-field');
    assert.equal(droppedOf({ ...samples[3], detail: 'x'.repeat(2000) }), 'too-long');
  });
});

describe('the batch envelope', () => {
  const refused = (body: string | Buffer, kind: string) =>
    assert.throws(
      () => parseBusEventBatch(Buffer.isBuffer(body) ? body : Buffer.from(body)),
      (e: unknown) => e instanceof DomainError && e.kind === kind,
    );
  it('takes { events: [...] } only; garbage, truncated JSON, other shapes are 400, too many events 413', () => {
    assert.deepEqual(parseBusEventBatch(Buffer.from('{"events":[{"a":1},2]}')), [{ a: 1 }, 2]);
    refused('', 'BadRequest');
    refused('{"events":[{"event":"client.conn', 'BadRequest');
    refused(Buffer.from([0xff, 0xfe, 0x00, 0x7b]), 'BadRequest');
    refused('[]', 'BadRequest');
    refused('null', 'BadRequest');
    refused('{"events":{}}', 'BadRequest');
    refused('{"events":[],"more":1}', 'BadRequest');
    refused(JSON.stringify({ events: Array.from({ length: 1001 }, () => ({})) }), 'PayloadTooLarge');
  });
});

describe('WebhookBusEventSource', () => {
  it('delivers a batch in order once started, counts drops per reason, refuses (Unavailable) before start and after stop', async () => {
    const s = new WebhookBusEventSource({ broker: 'emqx-1', now: () => NOW });
    assert.throws(
      () => s.receive([connected]),
      (e: unknown) => e instanceof DomainError && e.kind === 'Unavailable',
    );
    const got: BusEvent[] = [];
    await s.start((e) => got.push(e));
    const r = s.receive([
      connected,
      { nonsense: 1 },
      { ...connected, event: 'client.connack', reason_code: 'success' },
      { event: 'client.disconnected', clientid: 'meter-17', reason: 'normal' },
      7,
    ]);
    assert.deepEqual(r, { accepted: 2, ignored: 1, dropped: { unrecognised: 1, 'not-an-object': 1 } });
    assert.deepEqual(
      got.map((e) => e.kind),
      ['connect', 'disconnect'],
    );
    assert.deepEqual(s.dropped(), { unrecognised: 1, 'not-an-object': 1 });
    await s.stop();
    assert.throws(
      () => s.receive([connected]),
      (e: unknown) => e instanceof DomainError && e.kind === 'Unavailable',
    );
  });

  it('observes: EMQX sees no TLS failure; the generic form carries every kind; Mosquitto declares undeliverable unobserved', () => {
    const emqx = new WebhookBusEventSource({ broker: 'e' });
    assert.deepEqual(Object.keys(emqx.observes).sort(), [...BUS_EVENT_KINDS].sort());
    assert.equal(emqx.observes['tls-failure'].observed, false);
    assert.equal(emqx.observes.undeliverable.observed, true);
    const generic = new WebhookBusEventSource({ broker: 'h', reports: 'generic' });
    assert.ok(BUS_EVENT_KINDS.every((k) => generic.observes[k].observed));
    assert.deepEqual(Object.keys(MOSQUITTO_SYS_LOG_OBSERVES).sort(), [...BUS_EVENT_KINDS].sort());
    assert.equal(MOSQUITTO_SYS_LOG_OBSERVES.undeliverable.observed, false);
  });
});
