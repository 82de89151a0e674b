// The bus watch's detectors with a hand-moved clock: one event per episode, re-armed after a quiet
// window, thresholds from the rules, memory bounded under a flood of distinct keys, hostile ids
// and topics kept storable; and the shared ResponseRunner's broker actions (never on a broker).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { perBusEventKind, type BusEvent, type BusEventKind, type Observability } from '../../src/broker/bus-events.js';
import { BusDetectors, type BusDetectorOptions, type BusDetectorPorts, type DeviceStanding } from '../../src/detect/bus-detectors.js';
import { ResponseRunner, type ResponsePorts } from '../../src/detect/response-runner.js';
import { DetectionResponsePorts } from '../../src/detect/response-ports.js';
import { SourceBlocks } from '../../src/detect/source-blocks.js';
import type { SecurityEventInput } from '../../src/detect/security-events.js';
import { DEFAULT_RULES, rulesSchema } from '../../src/shared/detection-rules.js';
import { ManualClock } from '../../src/shared/clock.js';
import { pgJsonObject } from '../../src/shared/pg-text.js';
import type { BrokerFanout } from '../../src/broker/connector.js';
import { MOSQUITTO_SYS_LOG_OBSERVES } from '../../src/broker/mosquitto-log-source.js';
import { MOSQUITTO_LOG_FILE_OBSERVES } from '../../src/broker/mosquitto-log-file-source.js';

const broker = 'mosquitto';
const all = (observed: boolean) =>
  perBusEventKind<Observability>((k) => (observed ? { observed: true } : { observed: false, why: `${k} is debug-level` }));
/** What Mosquitto's $SYS log source observes. */
const MOSQUITTO_SYS: Record<BusEventKind, Observability> = {
  ...all(true),
  'acl-denied': { observed: false, why: 'Mosquitto 2.0 logs denials at debug level only' },
  publish: { observed: false, why: 'debug level only' },
  undeliverable: { observed: false, why: 'Mosquitto logs no line for a publish nobody receives' },
};

class FakePorts implements ResponsePorts {
  calls: string[] = [];
  async suspendDevice(id: string) {
    this.calls.push(`suspend ${id}`);
    return { held: 'abc' };
  }
  async openIncident(input: { kind: string; title: string; description: string; devices: string[] }) {
    this.calls.push(`incident ${input.title} :: ${input.description}`);
    return { incidentId: 'inc_1' };
  }
  async blockClients(ids: string[]) {
    this.calls.push(`block ${ids.join(',')}`);
    return {
      confirmed: true,
      connectors: [{ connector: 'mosquitto', effects: ids.map((clientId) => ({ clientId, applied: true, confirmed: true })) }],
      failures: [],
    };
  }
  async disconnectClients(ids: string[]) {
    this.calls.push(`disconnect ${ids.join(',')}`);
    return { confirmed: true, connectors: [], failures: [] };
  }
}

function rig(
  rules: unknown[],
  opts: { ports?: BusDetectorPorts; options?: BusDetectorOptions; record?: (e: SecurityEventInput) => Promise<unknown> } = {},
) {
  const clock = new ManualClock(new Date('2026-12-07T12:00:00Z'));
  const recorded: SecurityEventInput[] = [];
  const errors: unknown[] = [];
  const ports = new FakePorts();
  const runner = new ResponseRunner(ports, new SourceBlocks(clock), (e) => errors.push(e));
  const detectors = new BusDetectors(
    rulesSchema.parse(rules),
    {
      record:
        opts.record ??
        (async (e) => (recorded.push(pgJsonObject(e as unknown as Record<string, unknown>) as unknown as SecurityEventInput), { id: 1 })),
    },
    runner,
    opts.ports ?? {},
    clock,
    { onError: (e) => errors.push(e), ...opts.options },
  );
  const at = () => clock.now();
  const feed = (event: Omit<BusEvent, 'broker' | 'at'>, identity?: string) =>
    detectors.observe({ event: { broker, at: at(), ...event } as BusEvent, ...(identity !== undefined ? { identity } : {}) });
  return { clock, recorded, errors, ports, detectors, feed };
}

const connect = (clientId: string, host = '10.0.0.1', extra: Record<string, unknown> = {}) =>
  ({
    kind: 'connect',
    clientId,
    username: clientId,
    source: { host, port: 40000 },
    protocol: 'mqtt5',
    cleanStart: true,
    keepAliveSeconds: 60,
    ...extra,
  }) as const;
const raise = (kind: string) => ({ kind, severity: 'warning' });

describe('BusDetectors', () => {
  it('connect-attempts per client: one event per burst at the threshold, quiet while it goes on, re-armed after windowSeconds without a connect', async () => {
    const r = rig([
      { name: 'loop', watch: 'connect-attempts', per: 'client', threshold: 5, windowSeconds: 60, raise: raise('bus.reconnect-loop') },
    ]);
    for (let i = 0; i < 4; i++) {
      r.feed(connect('meter-1'), 'meter-1');
      r.clock.advance(1000);
    }
    await r.detectors.settled();
    assert.equal(r.recorded.length, 0, 'below the threshold');
    for (let i = 0; i < 200; i++) {
      r.feed(connect('meter-1'), 'meter-1');
      r.clock.advance(1000);
    }
    await r.detectors.settled();
    assert.equal(r.recorded.length, 1, 'one event for the whole burst');
    const e = r.recorded[0]!;
    assert.equal(e.kind, 'bus.reconnect-loop');
    assert.equal(e.subject, 'meter-1');
    assert.equal(e.source, '10.0.0.1');
    assert.equal(e.details!.rule, 'loop');
    assert.equal(e.details!.detector, 'connect-attempts');
    assert.equal(e.details!.count, 5);
    assert.equal(e.details!.windowSeconds, 60);
    assert.equal((e.details!.evidence as unknown[]).length, 3);
    // Quiet for a window: re-armed, and the next burst is a new episode.
    r.clock.advance(61_000);
    for (let i = 0; i < 5; i++) {
      r.feed(connect('meter-1'), 'meter-1');
      r.clock.advance(1000);
    }
    await r.detectors.settled();
    assert.equal(r.recorded.length, 2);
    assert.deepEqual(r.detectors.stats().fired, { loop: 2 });
  });

  it('connect-attempts: slow reconnects (fewer than the threshold within the window) never fire; per source counts every client of the address', async () => {
    const r = rig([
      { name: 'loop', watch: 'connect-attempts', per: 'client', threshold: 3, windowSeconds: 10, raise: raise('bus.reconnect-loop') },
      { name: 'flood', watch: 'connect-attempts', per: 'source', threshold: 50, windowSeconds: 60, raise: raise('bus.connect-flood') },
    ]);
    for (let i = 0; i < 20; i++) {
      r.feed(connect('slow'), 'slow');
      r.clock.advance(6000);
    }
    for (let i = 0; i < 60; i++) r.feed(connect(`dev-${i}`, '192.0.2.9'), `dev-${i}`);
    await r.detectors.settled();
    assert.deepEqual(
      r.recorded.map((e) => [e.kind, e.subject, e.source]),
      [['bus.connect-flood', undefined, '192.0.2.9']],
    );
  });

  it('abnormal-terminations per device counts only the configured reasons', async () => {
    const r = rig([
      {
        name: 'abn',
        watch: 'abnormal-terminations',
        per: 'device',
        threshold: 3,
        windowSeconds: 600,
        raise: raise('bus.abnormal-terminations'),
      },
      {
        name: 'abn2',
        watch: 'abnormal-terminations',
        per: 'device',
        threshold: 2,
        windowSeconds: 600,
        reasons: ['taken-over'],
        raise: raise('bus.taken-over'),
      },
    ]);
    for (const reason of ['client', 'client', 'not-authorised', 'administrative', 'keepalive-timeout', 'socket-error'])
      r.feed({ kind: 'disconnect', clientId: 'meter-2', reason } as never, 'meter-2');
    await r.detectors.settled();
    assert.equal(r.recorded.length, 0);
    r.feed({ kind: 'disconnect', clientId: 'meter-2', reason: 'protocol-error' } as never, 'meter-2');
    r.feed({ kind: 'disconnect', reason: 'protocol-error' } as never); // no client: no device to count it for
    r.feed({ kind: 'disconnect', clientId: 'meter-2', reason: 'taken-over' } as never, 'meter-2');
    r.feed({ kind: 'disconnect', clientId: 'meter-2', reason: 'taken-over' } as never, 'meter-2');
    await r.detectors.settled();
    assert.deepEqual(r.recorded.map((e) => [e.kind, e.subject, e.details!.count]).sort(), [
      ['bus.abnormal-terminations', 'meter-2', 3],
      ['bus.taken-over', 'meter-2', 2],
    ]);
  });

  it('tls-failures per source; a failure tied to no source is not counted against anyone', async () => {
    const r = rig([
      {
        name: 'tls',
        watch: 'tls-failures',
        per: 'source',
        threshold: 3,
        windowSeconds: 300,
        failures: ['verify-failed'],
        raise: raise('bus.tls-failures'),
      },
    ]);
    for (let i = 0; i < 5; i++) r.feed({ kind: 'tls-failure', failure: 'verify-failed', detail: 'certificate verify failed' } as never);
    for (let i = 0; i < 5; i++)
      r.feed({ kind: 'tls-failure', failure: 'no-certificate', detail: 'x', source: { host: '198.51.100.7' } } as never);
    await r.detectors.settled();
    assert.equal(r.recorded.length, 0);
    for (let i = 0; i < 3; i++)
      r.feed({ kind: 'tls-failure', failure: 'verify-failed', detail: 'x', source: { host: '198.51.100.7' } } as never);
    await r.detectors.settled();
    assert.deepEqual(
      r.recorded.map((e) => [e.kind, e.source, e.subject]),
      [['bus.tls-failures', '198.51.100.7', undefined]],
    );
  });

  it('topic-scan: distinct topics in the window (a topic used again is not new), or ACL denials; blocks the client and opens an incident with the evidence', async () => {
    const r = rig([
      {
        name: 'scan',
        watch: 'topic-scan',
        per: 'client',
        distinctTopics: 10,
        denials: 3,
        windowSeconds: 60,
        raise: raise('bus.topic-scan'),
        actions: ['open-incident', 'block-client'],
      },
    ]);
    for (let i = 0; i < 100; i++)
      r.feed({ kind: 'publish', clientId: 'meter-3', topic: 'fleet/meter-3/temp', qos: 0, retain: false, bytes: 4 } as never, 'meter-3');
    for (let i = 0; i < 8; i++)
      r.feed({ kind: 'subscribe', clientId: 'meter-3', topic: `fleet/meter-${i + 10}/#`, qos: 0 } as never, 'meter-3');
    await r.detectors.settled();
    assert.equal(r.recorded.length, 0, '9 distinct topics (one published 100 times)');
    r.feed({ kind: 'subscribe', clientId: 'meter-3', topic: 'secret/#', qos: 0 } as never, 'meter-3');
    for (let i = 0; i < 50; i++) r.feed({ kind: 'subscribe', clientId: 'meter-3', topic: `more/${i}`, qos: 0 } as never, 'meter-3');
    await r.detectors.settled();
    assert.equal(r.recorded.length, 1);
    const e = r.recorded[0]!;
    assert.equal(e.subject, 'meter-3');
    assert.equal(e.details!.distinctTopics, 10);
    assert.deepEqual((e.details!.topics as string[]).slice(-2), ['fleet/meter-17/#', 'secret/#']);
    const responses = e.details!.responses as Record<string, any>;
    assert.equal(responses['block-client'].confirmed, true);
    assert.equal(responses['open-incident'].incidentId, 'inc_1');
    // block first, then the incident, whose description carries the block's outcome and the evidence.
    assert.equal(r.ports.calls[0], 'block meter-3');
    assert.match(
      r.ports.calls[1]!,
      /^incident bus\.topic-scan: meter-3 :: Opened by detection: .*rule scan.*Responses: .*block-client.*Evidence: .*fleet\/meter-1/s,
    );

    // denials alone, for another client
    for (let i = 0; i < 3; i++)
      r.feed({ kind: 'acl-denied', action: 'subscribe', clientId: 'meter-4', topic: '#', qos: 0 } as never, 'meter-4');
    await r.detectors.settled();
    assert.deepEqual(
      r.recorded.map((x) => [x.subject, x.details!.denials]),
      [
        ['meter-3', 0],
        ['meter-4', 3],
      ],
    );
  });

  it('hostile client ids and topics (NUL, control characters, lone surrogates, 64 KB) are counted by digest and recorded cut and storable', async () => {
    const r = rig([
      {
        name: 'scan',
        watch: 'topic-scan',
        per: 'client',
        distinctTopics: 3,
        windowSeconds: 60,
        raise: raise('bus.topic-scan'),
        actions: ['block-client'],
      },
      { name: 'loop', watch: 'connect-attempts', per: 'client', threshold: 2, windowSeconds: 60, raise: raise('bus.reconnect-loop') },
    ]);
    const id = `evil\u0000\u0001\ud800${'x'.repeat(70_000)}`;
    const huge = `a/${'\u0000\u001b'.repeat(32_000)}`;
    r.feed(connect(id), id);
    r.feed(connect(id), id);
    for (const t of [huge, `${huge}b`, '\ud800/\u0007', 'plain'])
      r.feed({ kind: 'subscribe', clientId: id, topic: t, qos: 0 } as never, id);
    await r.detectors.settled();
    assert.equal(r.recorded.length, 2);
    const text = JSON.stringify(r.recorded);
    assert.ok(text.length < 20_000, `recorded ${text.length} characters`);
    assert.doesNotMatch(text, /\\u0000|\\ud800/i);
    for (const e of r.recorded) assert.ok(e.subject!.length <= 256);
    // an identity no device can have is not acted on
    const scan = r.recorded.find((e) => e.kind === 'bus.topic-scan')!;
    assert.deepEqual((scan.details!.responses as any)['block-client'], { skipped: 'no client identity' });
    assert.deepEqual(r.ports.calls, []);
  });

  it('a flood of 1,000,000 distinct client ids keeps at most maxKeysPerRule keys, the rest evicted and counted', async () => {
    const r = rig(
      [{ name: 'loop', watch: 'connect-attempts', per: 'client', threshold: 3, windowSeconds: 60, raise: raise('bus.reconnect-loop') }],
      {
        options: { maxKeysPerRule: 10_000 },
      },
    );
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 1_000_000; i++) {
      const id = `c${i}`;
      r.detectors.observe({
        event: {
          kind: 'connect',
          broker,
          at: r.clock.now(),
          clientId: id,
          source: { host: '10.1.1.1' },
          protocol: 'mqtt5',
          cleanStart: true,
          keepAliveSeconds: 60,
        },
        identity: id,
      });
    }
    const s = r.detectors.stats();
    assert.ok(s.keys.loop! <= 10_000 && s.keys.loop! > 9000, `${s.keys.loop} keys`);
    assert.equal(s.evictions.loop, 1_000_000 - s.keys.loop!);
    assert.equal(s.seen.connect, 1_000_000);
    global.gc?.();
    const grown = (process.memoryUsage().heapUsed - before) / 1e6;
    assert.ok(grown < 150, `heap grew ${grown.toFixed(0)} MB`);
  });

  it('one client with 200,000 distinct 1 KB topics: its window holds at most distinctTopics + 1 of them, by hash', async () => {
    const r = rig([
      { name: 'scan', watch: 'topic-scan', per: 'client', distinctTopics: 50, windowSeconds: 60, raise: raise('bus.topic-scan') },
    ]);
    const pad = 'x'.repeat(1000);
    for (let i = 0; i < 200_000; i++) r.feed({ kind: 'subscribe', clientId: 'scanner', topic: `${pad}/${i}`, qos: 0 } as never, 'scanner');
    await r.detectors.settled();
    assert.equal(r.recorded.length, 1);
    assert.ok(r.detectors.stats().largestWindow.scan! <= 51, `${r.detectors.stats().largestWindow.scan}`);
    assert.ok((r.recorded[0]!.details!.topics as string[]).every((t) => t.length <= 81));
  });

  it('undeliverable: the publishes a broker reports undeliverable, per client, one event per burst; observed where a source reports them', async () => {
    const r = rig([
      { name: 'dropped', watch: 'undeliverable', per: 'client', threshold: 3, windowSeconds: 60, raise: raise('bus.undeliverable') },
    ]);
    for (let i = 0; i < 10; i++) {
      r.feed({ kind: 'undeliverable', clientId: 'meter-9', topic: `nowhere/${i}`, reason: 'no-subscribers' } as never, 'meter-9');
      r.clock.advance(1000);
    }
    r.feed({ kind: 'undeliverable', clientId: 'meter-8', topic: 'nowhere', reason: 'no-subscribers' } as never, 'meter-8');
    await r.detectors.settled();
    assert.deepEqual(
      r.recorded.map((e) => [e.kind, e.subject]),
      [['bus.undeliverable', 'meter-9']],
    );
    assert.equal(r.detectors.observability([all(true)])[0]!.observed, true);
    assert.equal(r.detectors.observability([MOSQUITTO_SYS])[0]!.observed, false);
  });

  it('undeliverable is reported not observed; the others follow what the running sources observe', () => {
    assert.deepEqual(rig([]).detectors.observability([MOSQUITTO_SYS]), []);
    const d = rig(DEFAULT_RULES, { ports: { silentDevices: async () => [] } });
    const byRule = Object.fromEntries(d.detectors.observability([MOSQUITTO_SYS]).map((o) => [o.rule, o]));
    assert.equal(byRule['bus-undeliverable']!.observed, false);
    assert.match((byRule['bus-undeliverable'] as { why: string }).why, /undeliverable/);
    assert.equal(byRule['bus-reconnect-loop']!.observed, true);
    assert.equal(byRule['bus-tls-failures']!.observed, true);
    assert.equal(byRule['bus-idle-connected']!.observed, false, 'publishes are not observed');
    assert.match((byRule['bus-idle-connected'] as { why: string }).why, /publish is not observed \(debug level only\)/);
    assert.equal(byRule['bus-topic-scan']!.observed, true);
    assert.match((byRule['bus-topic-scan'] as { note: string }).note, /counts subscribe only/);
    assert.equal(byRule['bus-revoked-certificate']!.observed, false, 'no standing lookup');
    assert.equal(byRule['bus-silent']!.observed, true);
    assert.ok(
      d.detectors.observability([]).every((o) => !o.observed),
      'no source: nothing observed',
    );
  });

  it("a Mosquitto broker watched through its $SYS log and its log file: undeliverable's why is said once (the two sources use the same words)", () => {
    const d = rig(DEFAULT_RULES);
    const [rule] = d.detectors
      .observability([MOSQUITTO_SYS_LOG_OBSERVES, MOSQUITTO_LOG_FILE_OBSERVES])
      .filter((o) => o.rule === 'bus-undeliverable');
    assert.equal(rule!.observed, false);
    const why = (rule as { why: string }).why;
    assert.equal(why.split('logs no line for a publish').length, 2, why);
  });

  it('idle-connected: fires once per idle stretch on the sweep, re-armed by a publish; never while publishes are not observed', async () => {
    const rules = [{ name: 'idle', watch: 'idle-connected', per: 'client', idleSeconds: 600, raise: raise('bus.idle-connected') }];
    const blind = rig(rules, { options: { sources: () => [MOSQUITTO_SYS] } });
    blind.feed(connect('quiet-1'), 'quiet-1');
    blind.clock.advance(3_600_000);
    await blind.detectors.sweep();
    await blind.detectors.settled();
    assert.equal(blind.recorded.length, 0);

    const r = rig(rules, { options: { sources: () => [all(true)] } });
    r.feed(connect('quiet-1'), 'quiet-1');
    r.feed(connect('busy-1'), 'busy-1');
    r.clock.advance(300_000);
    r.feed({ kind: 'publish', clientId: 'busy-1', topic: 't', qos: 0, retain: false, bytes: 1 } as never, 'busy-1');
    r.clock.advance(301_000);
    await r.detectors.sweep();
    await r.detectors.sweep();
    await r.detectors.settled();
    assert.deepEqual(
      r.recorded.map((e) => [e.subject, e.details!.idleSeconds]),
      [['quiet-1', 601]],
    );
    r.feed({ kind: 'subscribe', clientId: 'quiet-1', topic: 't', qos: 0 } as never, 'quiet-1');
    r.clock.advance(600_000);
    await r.detectors.sweep();
    await r.detectors.settled();
    assert.deepEqual(
      r.recorded.map((e) => e.subject),
      ['quiet-1', 'busy-1', 'quiet-1'],
    );
    r.feed({ kind: 'disconnect', clientId: 'quiet-1', reason: 'client' } as never, 'quiet-1');
    r.clock.advance(6_000_000);
    await r.detectors.sweep();
    await r.detectors.settled();
    assert.equal(r.recorded.length, 3, 'a disconnected client is not idle');
  });

  it("idle-connected leaves the service's own sessions out (its $SYS log reader and dynsec connector only listen)", async () => {
    const rules = [{ name: 'idle', watch: 'idle-connected', per: 'client', idleSeconds: 600, raise: raise('bus.idle-connected') }];
    const r = rig(rules, { options: { sources: () => [all(true)], own: (id) => id === 'mqtt-ca-connector' } });
    r.feed(connect('mqtt-ca-sys-log'), 'mqtt-ca-connector');
    r.feed({ kind: 'subscribe', clientId: 'mqtt-ca-sys-log', topic: '$SYS/broker/log/#', qos: 0 } as never, 'mqtt-ca-connector');
    r.feed(connect('quiet-1'), 'quiet-1');
    r.clock.advance(601_000);
    await r.detectors.sweep();
    await r.detectors.settled();
    assert.deepEqual(
      r.recorded.map((e) => e.subject),
      ['quiet-1'],
    );
    assert.equal(r.detectors.stats().keys.idle, 1, 'only the device was remembered');
  });

  it("the idle sweep runs every tenth of the rule's idleSeconds (10 s: every second), not every 30 s; an explicit period wins", async () => {
    const rules = [{ name: 'idle', watch: 'idle-connected', per: 'client', idleSeconds: 10, raise: raise('bus.idle-connected') }];
    const r = rig(rules, { options: { sources: () => [all(true)] } });
    r.detectors.start();
    try {
      r.feed(connect('quiet-1'), 'quiet-1');
      r.clock.advance(11_000);
      const started = Date.now();
      while (r.recorded.length === 0 && Date.now() - started < 10_000) await new Promise((res) => setTimeout(res, 50));
      assert.equal(r.recorded[0]?.subject, 'quiet-1', 'swept within 10 s of real time');
    } finally {
      await r.detectors.stop();
    }
    const slow = rig(rules, { options: { sources: () => [all(true)], idleSweepSeconds: 3600 } });
    slow.detectors.start();
    slow.feed(connect('quiet-1'), 'quiet-1');
    slow.clock.advance(11_000);
    await new Promise((res) => setTimeout(res, 1_500));
    await slow.detectors.stop();
    assert.equal(slow.recorded.length, 0, 'the explicit hourly period: no sweep yet');
  });
  it('silent: a periodic sweep through the presence port, each silence once, re-armed when the device connects again', async () => {
    const asked: unknown[] = [];
    let rows = [
      { deviceId: 'meter-7', broker, lastSeenAt: new Date('2026-12-05T00:00:00Z') },
      { deviceId: 'meter-8', broker, lastSeenAt: new Date('2026-12-06T00:00:00Z') },
    ];
    const r = rig(
      [{ name: 'silent', watch: 'silent', per: 'device', silentAfterSeconds: 86_400, lot: 'lot-7', limit: 50, raise: raise('bus.silent') }],
      {
        ports: {
          silentDevices: async (q) => {
            asked.push(q);
            return rows;
          },
        },
      },
    );
    await r.detectors.sweep();
    await r.detectors.sweep();
    await r.detectors.settled();
    assert.deepEqual(asked[0], { before: new Date('2026-12-06T12:00:00Z'), lot: 'lot-7', limit: 50 });
    assert.deepEqual(
      r.recorded.map((e) => [e.subject, e.details!.lastSeenAt]),
      [
        ['meter-7', '2026-12-05T00:00:00.000Z'],
        ['meter-8', '2026-12-06T00:00:00.000Z'],
      ],
    );
    r.feed(connect('meter-7'), 'meter-7'); // back
    rows = [{ deviceId: 'meter-7', broker, lastSeenAt: new Date('2026-12-05T00:00:00Z') }, rows[1]!];
    await r.detectors.sweep();
    await r.detectors.settled();
    assert.equal(r.recorded.length, 3, 'meter-7 re-armed by its connect');
    rows = [{ deviceId: 'meter-8', broker, lastSeenAt: new Date('2026-12-06T06:00:00Z') }];
    await r.detectors.sweep();
    await r.detectors.settled();
    assert.equal(r.recorded.length, 4, 'seen again and silent again: a new silence');
  });

  it('revoked-certificate: a revoked, suspended or decommissioned device, or a certificate not its current one; lookups batched and cached; once per episode', async () => {
    const standings: Record<string, DeviceStanding> = {
      'good-1': { status: 'active', currentSerial: '0a0b' },
      'rev-1': { status: 'revoked', currentSerial: null },
      'sus-1': { status: 'suspended', currentSerial: '01' },
      'old-1': { status: 'active', currentSerial: '0abc' },
    };
    const batches: string[][] = [];
    const r = rig(
      [
        {
          name: 'revoked',
          watch: 'revoked-certificate',
          per: 'device',
          windowSeconds: 600,
          raise: raise('bus.revoked-certificate'),
          actions: ['block-client'],
        },
      ],
      {
        ports: {
          deviceStanding: async (ids) => {
            batches.push(ids);
            return ids.map((id) => standings[id]);
          },
        },
      },
    );
    r.feed(connect('good-1', '10.0.0.1', { certificateSerial: '0A:0B' }), 'good-1');
    for (let i = 0; i < 5; i++) r.feed(connect('rev-1'), 'rev-1');
    r.feed(connect('sus-1'), 'sus-1');
    r.feed(connect('old-1', '10.0.0.1', { certificateSerial: '0abd' }), 'old-1');
    r.feed(connect('stranger'), 'stranger');
    await r.detectors.settled();
    assert.equal(batches.length, 1, 'one lookup for the turn');
    assert.deepEqual(new Set(batches[0]), new Set(['good-1', 'rev-1', 'sus-1', 'old-1', 'stranger']));
    assert.deepEqual(r.recorded.map((e) => [e.subject, e.details!.why]).sort(), [
      ['old-1', "the certificate is not the device's current one (revoked or superseded)"],
      ['rev-1', 'the device is revoked'],
      ['sus-1', 'the device is suspended'],
    ]);
    assert.deepEqual(r.ports.calls.sort(), ['block old-1', 'block rev-1', 'block sus-1']);
    // cached (10 s): no second lookup; in the episode: no second event
    r.clock.advance(5_000);
    r.feed(connect('rev-1'), 'rev-1');
    await r.detectors.settled();
    assert.equal(batches.length, 1);
    assert.equal(r.recorded.length, 3);
    // after the cache and a quiet window: looked up again, a new episode
    r.clock.advance(700_000);
    r.feed(connect('rev-1'), 'rev-1');
    await r.detectors.settled();
    assert.equal(batches.length, 2);
    assert.equal(r.recorded.length, 4);
  });

  it('revoked-certificate: a revocation here forgets the cached standings, so the revoked device reconnecting before the CRL reaches the broker is seen', async () => {
    const standings: Record<string, DeviceStanding> = { 'meter-7': { status: 'active', currentSerial: '07' } };
    let lookups = 0;
    const r = rig(
      [{ name: 'revoked', watch: 'revoked-certificate', per: 'device', windowSeconds: 600, raise: raise('bus.revoked-certificate') }],
      {
        ports: {
          deviceStanding: async (ids) => {
            lookups++;
            return ids.map((id) => standings[id]);
          },
        },
      },
    );
    r.feed(connect('meter-7'), 'meter-7');
    await r.detectors.settled();
    assert.equal(r.recorded.length, 0);
    standings['meter-7'] = { status: 'revoked', currentSerial: null };
    r.detectors.forgetStandings();
    r.clock.advance(1000);
    r.feed(connect('meter-7'), 'meter-7');
    await r.detectors.settled();
    assert.equal(lookups, 2, 'looked up again at once');
    assert.deepEqual(
      r.recorded.map((e) => [e.kind, e.subject]),
      [['bus.revoked-certificate', 'meter-7']],
    );
  });

  it('client-id-two-sources: one client id from two hosts within the window (a take-over too); one host reconnecting never', async () => {
    const r = rig([
      { name: 'two', watch: 'client-id-two-sources', per: 'client', windowSeconds: 300, raise: raise('bus.client-id-two-sources') },
    ]);
    for (let i = 0; i < 20; i++) {
      r.feed(connect('meter-5', '10.0.0.5'), 'meter-5');
      r.clock.advance(1000);
    }
    await r.detectors.settled();
    assert.equal(r.recorded.length, 0);
    r.feed(connect('meter-5', '203.0.113.66'), 'meter-5');
    r.feed({ kind: 'disconnect', clientId: 'meter-5', reason: 'taken-over', source: { host: '10.0.0.5' } } as never, 'meter-5');
    r.feed(connect('meter-5', '10.0.0.5'), 'meter-5');
    await r.detectors.settled();
    assert.equal(r.recorded.length, 1);
    assert.deepEqual(new Set(r.recorded[0]!.details!.sources as string[]), new Set(['10.0.0.5', '203.0.113.66']));
    // a take-over from another host alone
    r.feed(connect('meter-6', '10.0.0.6'), 'meter-6');
    r.feed({ kind: 'disconnect', clientId: 'meter-6', reason: 'taken-over', source: { host: '10.9.9.9' } } as never, 'meter-6');
    await r.detectors.settled();
    assert.equal(r.recorded.length, 2);
    // quiet for the window: re-armed
    r.clock.advance(301_000);
    r.feed(connect('meter-5', '10.0.0.5'), 'meter-5');
    r.feed(connect('meter-5', '10.0.0.7'), 'meter-5');
    await r.detectors.settled();
    assert.equal(r.recorded.length, 3);
  });

  it('observe never throws: a failing record or action goes to onError, counted', async () => {
    const r = rig(
      [{ name: 'loop', watch: 'connect-attempts', per: 'client', threshold: 1, windowSeconds: 60, raise: raise('bus.reconnect-loop') }],
      {
        record: async () => {
          throw new Error('database away');
        },
      },
    );
    assert.doesNotThrow(() => r.feed(connect('x'), 'x'));
    assert.doesNotThrow(() => r.detectors.observe({ event: null as unknown as BusEvent }));
    await r.detectors.settled();
    assert.equal(r.detectors.stats().errors, 2);
    assert.match(String(r.errors.map((e) => (e as Error).message)), /database away/);
  });
});

describe('DetectionResponsePorts: block-client and disconnect-client through the broker connectors', () => {
  const fanout = (ids: string[], confirmed: boolean): BrokerFanout => ({
    results: [
      {
        connector: 'mosquitto',
        effects: ids.map((clientId) => ({
          clientId,
          action: 'block',
          applied: true,
          confirmed,
          ...(confirmed ? {} : { detail: 'no kick seen' }),
        })),
      },
    ],
    failures: [],
  });
  const deps = (calls: string[], confirmed = true) => ({
    device: async () => ({ kind: 'client', status: 'active', currentSerial: null }),
    knownDevices: async (ids: string[]) =>
      ids.filter((id) => id !== 'unknown').map((id) => ({ id, kind: id.startsWith('broker') ? 'broker' : 'client' })),
    hold: async () => undefined,
    openIncident: async () => ({ id: 'inc_x' }),
    brokers: {
      configured: true,
      block: async (ids: string[]) => (calls.push(`block ${ids}`), fanout(ids, confirmed)),
      disconnect: async (ids: string[]) => (calls.push(`disconnect ${ids}`), fanout(ids, confirmed)),
    },
  });

  it('reports each connector’s effects, applied and confirmed; never acts on a broker; says so with no connector', async () => {
    const calls: string[] = [];
    const ports = new DetectionResponsePorts(deps(calls));
    const ok = await ports.blockClients(['meter-1'], 'why');
    assert.equal(ok.confirmed, true);
    assert.deepEqual(ok.connectors, [{ connector: 'mosquitto', effects: [{ clientId: 'meter-1', applied: true, confirmed: true }] }]);
    assert.deepEqual(await ports.blockClients(['broker-1'], 'why'), {
      confirmed: false,
      connectors: [],
      failures: [],
      skipped: 'a broker: not acted on automatically',
    });
    const own = new DetectionResponsePorts({ ...deps(calls), reserved: (n) => n === 'mqtt-ca-connector' });
    assert.equal((await own.disconnectClients(['mqtt-ca-connector'], 'why')).skipped, "the service's own identity: not acted on");
    assert.deepEqual(calls, ['block meter-1']);
    const unconfirmed = await new DetectionResponsePorts(deps(calls, false)).disconnectClients(['unknown'], 'why');
    assert.equal(unconfirmed.confirmed, false);
    assert.equal(unconfirmed.connectors[0]!.effects[0]!.detail, 'no kick seen');
    const failing = new DetectionResponsePorts({
      ...deps(calls),
      brokers: {
        configured: true,
        block: async () => ({ results: [], failures: [{ connector: 'mosquitto', error: new Error('unreachable') as never }] }),
        disconnect: async () => ({ results: [], failures: [] }),
      },
    });
    assert.deepEqual(await failing.blockClients(['meter-1'], 'why'), {
      confirmed: false,
      connectors: [],
      failures: [{ connector: 'mosquitto', error: 'unreachable' }],
    });
    const none = new DetectionResponsePorts({ ...deps(calls), brokers: undefined });
    assert.equal((await none.blockClients(['meter-1'], 'why')).skipped, 'no broker connector configured');
  });

  it('the runner reports a failing action and carries on', async () => {
    const errors: unknown[] = [];
    const clock = new ManualClock();
    const ports = new FakePorts();
    ports.blockClients = async () => {
      throw new Error('boom');
    };
    const runner = new ResponseRunner(ports, new SourceBlocks(clock), (e) => errors.push(e));
    const out = await runner.run(['block-client', 'disconnect-client', 'suspend-device'], {
      rule: { name: 'r', raise: { kind: 'bus.x' }, incidentKind: 'device-compromise' },
      identity: 'meter-1',
      why: 'test',
      incident: { title: 't', evidence: '', devices: [] },
    });
    assert.deepEqual(out['block-client'], { error: 'boom' });
    assert.deepEqual(out['suspend-device'], { held: 'abc' });
    assert.equal(errors.length, 1);
  });
});
