import { describe, it, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import type request from 'supertest';
import { postgresTarget, pgliteTarget } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem, listenOnLoopback } from '../helpers/http.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { webhookSignature } from '../../src/shared/webhook-signature.js';
import { BusRelay } from '../../src/cli/bus-relay.js';
import type { BusEvent } from '../../src/broker/bus-events.js';

/**
 * Issue 26, item 1 (other brokers): POST /v1/bus-events on a real service and PostgreSQL. Batches
 * signed like the service's webhooks, per broker; 401 for anything not signed by a known broker
 * within ±300 s or signed before (the replay guard); 400 for a bad envelope, per-event drops with
 * counters inside a good one; never a 500. And `mqtt-ca bus-relay` between EMQX and the service.
 */
const SECRETS = { 'emqx-1': 'e'.repeat(40), 'hive-1': { secret: 'h'.repeat(40), reports: 'generic' }, 'idle-1': 'i'.repeat(40) };
const EMQX_SECRET = SECRETS['emqx-1'];

const nowSeconds = () => Math.floor(Date.now() / 1000);
function signed(body: string | Buffer, opts: { broker?: string; secret?: string; ts?: number } = {}): Record<string, string> {
  const ts = String(opts.ts ?? nowSeconds());
  return {
    'Content-Type': 'application/json',
    'X-MqttCa-Broker': opts.broker ?? 'emqx-1',
    'X-MqttCa-Timestamp': ts,
    'X-MqttCa-Signature': `sha256=${webhookSignature(opts.secret ?? EMQX_SECRET, ts, body)}`,
  };
}

const T = Date.now() - 1000;
const connected = (clientid: string, extra: Record<string, unknown> = {}) => ({
  event: 'client.connected',
  clientid,
  username: clientid,
  peername: '203.0.113.9:52344',
  sockname: '10.0.0.2:8883',
  proto_name: 'MQTT',
  proto_ver: 5,
  keepalive: 60,
  clean_start: true,
  connected_at: T,
  timestamp: T,
  node: 'emqx@10.0.0.2',
  ...extra,
});

const target = postgresTarget.skip ? pgliteTarget : postgresTarget;

describe(`POST /v1/bus-events: signed batches of other brokers' events, on ${target.name}`, () => {
  let svc: Service & { dispose(): Promise<void> };
  let api: ReturnType<typeof request>;
  const got: BusEvent[] = [];
  const hive: BusEvent[] = [];

  before(async () => {
    ({ svc, api } = await makeApiService(target, { env: { BUS_EVENT_SECRETS: JSON.stringify(SECRETS) } }));
    assert.deepEqual([...svc.busEventWebhooks.keys()].sort(), ['emqx-1', 'hive-1', 'idle-1']);
    await svc.busEventWebhooks.get('emqx-1')!.start((e) => got.push(e));
    await svc.busEventWebhooks.get('hive-1')!.start((e) => hive.push(e));
  });
  after(async () => {
    await svc?.dispose();
  });
  beforeEach(() => {
    got.length = 0;
    hive.length = 0;
  });

  /** The bytes as given (superagent would serialize a Buffer sent as JSON). */
  const post = (body: string | Buffer, headers: Record<string, string>) =>
    api
      .post('/v1/bus-events')
      .set(headers)
      .serialize((x: unknown) => x as string)
      .send(body as string);

  it('a good signed batch is 202, and the broker’s source hands the mapped events on, in order', async () => {
    const body = JSON.stringify({
      events: [
        connected('meter-1'),
        { event: 'client.connack', clientid: 'meter-1', reason_code: 'success', peername: '203.0.113.9:52344', timestamp: T },
        { event: 'session.subscribed', clientid: 'meter-1', topic: 'site/1/#', qos: 1, timestamp: T },
        { event: 'client.check_authz_complete', clientid: 'meter-1', topic: '$SYS/#', action: 'subscribe', result: 'deny', timestamp: T },
        { event: 'message.dropped', reason: 'no_subscribers', clientid: 'meter-1', topic: 'nowhere', qos: 0, timestamp: T },
        { event: 'client.disconnected', clientid: 'meter-1', reason: 'keepalive_timeout', peername: '203.0.113.9:52344', timestamp: T },
      ],
    });
    const res = await post(body, signed(body)).expect(202);
    assert.deepEqual(res.body, { broker: 'emqx-1', accepted: 5, ignored: 1, dropped: {} });
    assert.deepEqual(
      got.map((e) => `${e.broker} ${e.kind}`),
      ['emqx-1 connect', 'emqx-1 subscribe', 'emqx-1 acl-denied', 'emqx-1 undeliverable', 'emqx-1 disconnect'],
    );
    const c = got[0]!;
    assert.ok(c.kind === 'connect');
    assert.deepEqual(
      [c.clientId, c.username, c.source, c.protocol, c.at.getTime()],
      ['meter-1', 'meter-1', { host: '203.0.113.9', port: 52344 }, 'mqtt5', T],
    );
  });

  it('the generic form, from another broker with its own secret: events go to that broker’s source only', async () => {
    const body = JSON.stringify({
      events: [{ kind: 'tls-failure', failure: 'verify-failed', detail: 'certificate revoked', source: { host: '192.0.2.7', port: 1 } }],
    });
    const res = await post(body, signed(body, { broker: 'hive-1', secret: SECRETS['hive-1'].secret })).expect(202);
    assert.deepEqual(res.body, { broker: 'hive-1', accepted: 1, ignored: 0, dropped: {} });
    assert.equal(hive.length, 1);
    assert.equal(hive[0]!.broker, 'hive-1');
    assert.equal(got.length, 0);
  });

  it('401, alike, for unsigned, a wrong signature, a stale or future timestamp, another broker’s secret, an unknown broker, and a replay', async () => {
    const body = JSON.stringify({ events: [connected('meter-2')] });
    const good = signed(body);
    const cases: [string, Record<string, string>][] = [
      ['unsigned', { 'Content-Type': 'application/json' }],
      ['no broker', { ...good, 'X-MqttCa-Broker': '' }],
      ['a signature not hex', { ...good, 'X-MqttCa-Signature': 'sha256=zz' }],
      ['a wrong signature', { ...good, 'X-MqttCa-Signature': `sha256=${'0'.repeat(64)}` }],
      ['signed over another body', signed(body.replace('meter-2', 'meter-3'))],
      ['stale', signed(body, { ts: nowSeconds() - 302 })],
      ['from the future', signed(body, { ts: nowSeconds() + 310 })],
      ['another broker’s secret', signed(body, { secret: SECRETS['hive-1'].secret })],
      ['an unknown broker', signed(body, { broker: 'nobody', secret: EMQX_SECRET })],
      ['a timestamp not a number', { ...good, 'X-MqttCa-Timestamp': 'soon' }],
    ];
    const details = new Set<string>();
    for (const [name, headers] of cases) {
      const res = await post(body, headers);
      assertProblem(res, 401);
      assert.match(String(res.headers['www-authenticate']), /MqttCa-Signature/, name);
      details.add(String(res.body.detail));
    }
    assert.equal(details.size, 1, 'every refusal says the same: nothing tells a wrong broker from a wrong signature');
    assert.equal(got.length, 0);
    await post(body, good).expect(202);
    assertProblem(await post(body, good), 401);
    assert.equal(got.length, 1, 'the replay delivered nothing');
  });

  it('a bad envelope is 400 and a huge body 413 (signed or not, never a 500); bad events inside are dropped and counted', async () => {
    for (const garbage of ['', 'garbage', '{"events":[{"event":"client.conn', '[]', '{"events":{}}', '{"events":[],"x":1}']) {
      const res = await post(garbage, signed(garbage));
      assert.equal(res.status, 400, `${JSON.stringify(garbage)}: ${res.text}`);
      assertProblem(res, 400);
    }
    const notUtf8 = Buffer.from([0x7b, 0xff, 0xfe, 0x7d]);
    assertProblem(await post(notUtf8, signed(notUtf8)), 400);
    const many = JSON.stringify({ events: Array.from({ length: 1001 }, () => ({})) });
    assertProblem(await post(many, signed(many)), 413);
    const huge = JSON.stringify({ events: [{ kind: 'subscribe', clientId: 'x', topic: 'x'.repeat(1024 * 1024), qos: 0 }] });
    assertProblem(await post(huge, signed(huge)), 413);
    assertProblem(await post(huge, { 'Content-Type': 'application/json' }), 413);
    const text = 'events';
    assertProblem(await post(text, { ...signed(text), 'Content-Type': 'text/plain' }), 415);

    const bad = JSON.stringify({
      events: [
        connected('nul\u0000id'),
        connected('lone\ud800'),
        connected('ctl\u0007id'),
        connected('ok-1', { peername: 'nowhere' }),
        connected('ok-2', { proto_ver: 9 }),
        { event: 'session.subscribed', clientid: 'scanner', topic: 't'.repeat(65_535), qos: 0, timestamp: T },
        { event: 'session.subscribed', clientid: 'scanner', topic: 't'.repeat(65_536), qos: 0, timestamp: T },
        { event: 'message.delivered', clientid: 'x' },
        'a string',
        { kind: 'connect', broker: 'emqx-2' },
        connected('good-one'),
      ],
    });
    const res = await post(bad, signed(bad)).expect(202);
    assert.deepEqual(res.body, {
      broker: 'emqx-1',
      accepted: 2,
      ignored: 0,
      dropped: {
        'not-text': 2,
        'control-characters': 1,
        'bad-field': 2,
        'too-long': 1,
        'unsupported-event': 1,
        'not-an-object': 1,
        'broker-mismatch': 1,
      },
    });
    assert.deepEqual(
      got.map((e) => (e.kind === 'connect' ? e.clientId : `${e.kind} ${e.kind === 'subscribe' ? e.topic.length : ''}`)),
      ['subscribe 65535', 'good-one'],
    );
    assert.ok((svc.busEventWebhooks.get('emqx-1')!.dropped()['not-text'] ?? 0) >= 2, 'the source keeps the counts');
  });

  it('503 with Retry-After while no watch takes the broker’s events (its source not started)', async () => {
    const body = JSON.stringify({ events: [connected('meter-9')] });
    const res = await post(body, signed(body, { broker: 'idle-1', secret: SECRETS['idle-1'] }));
    assertProblem(res, 503);
    assert.equal(res.headers['retry-after'], '1');
  });

  it('bus-relay: EMQX-shaped posts, one event each, arrive batched, signed and mapped; its counters say what happened', async () => {
    const http = await listenOnLoopback(createHttpHandler(svc));
    const relay = new BusRelay({ url: http.url, broker: 'emqx-1', secret: EMQX_SECRET, maxDelayMs: 50, maxBatch: 25 });
    const wrong = new BusRelay({ url: http.url, broker: 'emqx-1', secret: 'w'.repeat(40), maxDelayMs: 20 });
    try {
      const at = await relay.start();
      const posts = Array.from({ length: 60 }, (_, i) =>
        i % 2 === 0
          ? connected(`relay-${i}`)
          : { event: 'client.disconnected', clientid: `relay-${i - 1}`, reason: 'tcp_closed', peername: '203.0.113.9:1', timestamp: T },
      );
      for (const p of posts) {
        const r = await fetch(`${at.url}/`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(p) });
        assert.equal(r.status, 202);
      }
      const garbage = await fetch(`${at.url}/`, { method: 'POST', body: 'not json' });
      assert.equal(garbage.status, 400);
      await relay.drained();
      assert.equal(got.length, 60);
      assert.deepEqual(
        got.slice(0, 4).map((e) => `${e.kind} ${'clientId' in e ? e.clientId : ''}`),
        ['connect relay-0', 'disconnect relay-0', 'connect relay-2', 'disconnect relay-2'],
      );
      const s = relay.stats();
      assert.equal(s.received, 60);
      assert.equal(s.forwarded, 60);
      assert.equal(s.service.accepted, 60);
      assert.deepEqual(s.dropped, { 'not-json': 1 });
      assert.equal(s.buffered, 0);

      // A relay with the wrong secret: the service refuses (401); the relay drops and counts, it does not retry forever.
      const w = await wrong.start();
      await fetch(`${w.url}/`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(connected('x')) });
      await wrong.drained();
      assert.deepEqual(wrong.stats().dropped, { 'refused-401': 1 });
    } finally {
      await relay.stop();
      await wrong.stop();
      await http.close();
    }
  });

  it('bus-relay: holds batches while the service answers 503 and sends them, signed anew, once it takes them; a full buffer refuses and counts', async () => {
    const http = await listenOnLoopback(createHttpHandler(svc));
    const idle = svc.busEventWebhooks.get('idle-1')!;
    const idleGot: BusEvent[] = [];
    const relay = new BusRelay({
      url: http.url,
      broker: 'idle-1',
      secret: SECRETS['idle-1'],
      maxDelayMs: 10,
      retryInitialMs: 50,
      retryMaxMs: 200,
      maxBuffered: 5,
    });
    try {
      const at = await relay.start();
      const send = (p: unknown) =>
        fetch(`${at.url}/`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(p) });
      for (let i = 0; i < 5; i++) assert.equal((await send(connected(`held-${i}`))).status, 202);
      assert.equal((await send(connected('one-too-many'))).status, 503);
      await new Promise((r) => setTimeout(r, 400));
      assert.ok(relay.stats().retries >= 2, `retried: ${JSON.stringify(relay.stats())}`);
      assert.equal(relay.stats().buffered, 5);
      await idle.start((e) => idleGot.push(e));
      await relay.drained();
      assert.deepEqual(
        idleGot.map((e) => (e.kind === 'connect' ? e.clientId : e.kind)),
        ['held-0', 'held-1', 'held-2', 'held-3', 'held-4'],
      );
      assert.deepEqual(relay.stats().dropped, { 'buffer-full': 1 });
    } finally {
      await idle.stop();
      await relay.stop();
      await http.close();
    }
  });
});

describe(`POST /v1/bus-events without BUS_EVENT_SECRETS, on ${target.name}`, () => {
  let svc: Service & { dispose(): Promise<void> };
  let api: ReturnType<typeof request>;
  before(async () => {
    ({ svc, api } = await makeApiService(target));
  });
  after(async () => {
    await svc?.dispose();
  });

  it('is 404 whatever is sent: the ingestion is off', async () => {
    assert.equal(svc.busEventWebhooks.size, 0);
    const body = JSON.stringify({ events: [connected('x')] });
    assertProblem(await api.post('/v1/bus-events').set(signed(body)).send(body), 404);
    assertProblem(await api.post('/v1/bus-events').send('garbage'), 404);
  });
});
