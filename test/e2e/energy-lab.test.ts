// The test lab of the example energy provider in "MQTT and the NIST Cybersecurity Framework"
// (OASIS), replayed over a real Mosquitto with mutual TLS, every certificate from mqtt-ca: the
// tablet UI lowers the supply to 114 V, the smart meter reports it, the distribution management
// system (DMS) closes the capacitor bank, raises the supply to 120 V, and publishes the updated
// single-line diagram to the tablet. The bus watch is on, as an operator sets it up from
// docs/bus-watch.md ("Point the watch at Mosquitto": broker-setup's log settings, the log file with
// `log_type debug`, the default DETECTION_RULES): it shows every lab device connected on the broker.
// Then the meter is compromised and scans topics: without a person acting, the watch detects it,
// blocks it at the broker and opens an incident, while the others carry on. The operator takes the
// incident over: it revokes, kicks and blocks the meter through the REST API; then the meter is
// recovered (re-admitted, unblocked, re-enrolled with a new key) and the scenario runs again.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { join as joinPath } from 'node:path';
import type { MqttClient } from 'mqtt';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { p256Csr } from '../helpers/csr.js';
import { freePort, until } from '../helpers/processes.js';
import { tempDir, writeTemp } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { assertProblem } from '../helpers/http.js';
import {
  connectDevice,
  dynsecCtrl,
  enrollDevice,
  startMosquittoTls,
  type DeviceCredentials,
  type MosquittoTls,
} from '../helpers/mosquitto-tls.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import type { WatchedBusEvent } from '../../src/broker/bus-events.js';

type Agent = ReturnType<typeof request>;
const target = dbTargets.find((t) => t.name === 'postgres' && !t.skip) ?? dbTargets.find((t) => t.name === 'pglite')!;

const T = {
  set: 'lab/power-supply/set',
  output: 'lab/power-supply/output',
  voltage: 'lab/meter/voltage',
  command: 'lab/capbank/command',
  status: 'lab/capbank/status',
  diagram: 'lab/dms/single-line-diagram',
};

/** A substation broker that bridges into the lab broker as a client, with its broker certificate. */
const BRIDGE = 'substation-broker';
const BRIDGE_TOPIC = 'lab/substation/status';

/** Least privilege per device, as the framework asks: each may publish and subscribe only its own topics (the DMS watches the substation). */
const ACCESS: Record<string, { publish: string[]; subscribe: string[] }> = {
  'tablet-ui': { publish: [T.set], subscribe: [T.output, T.diagram, 'mqtt-ca/events/#'] },
  'power-supply': { publish: [T.output], subscribe: [T.set] },
  'smart-meter': { publish: [T.voltage], subscribe: [T.output] },
  dms: { publish: [T.command, T.set, T.diagram], subscribe: [T.voltage, T.status, BRIDGE_TOPIC] },
  'capbank-ctl': { publish: [T.status], subscribe: [T.command] },
};

const json = (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>;

/**
 * What became of an MQTT act of a client the broker may end: done, refused, or its session ended
 * first (mqtt.js keeps a QoS 1 act of a session the broker closed pending for ever).
 */
function attempt(c: MqttClient, act: Promise<unknown>): Promise<'done' | 'refused' | 'closed'> {
  if (!c.connected) {
    act.catch(() => undefined); // rejected when the client is ended
    return Promise.resolve('closed');
  }
  return new Promise((resolve) => {
    const closed = () => resolve('closed');
    c.once('close', closed);
    void act
      .then(
        () => 'done' as const,
        () => 'refused' as const,
      )
      .then((r) => {
        c.off('close', closed);
        resolve(r);
      });
  });
}

const skip = toolSkip('mosquitto') ?? toolSkip('mosquitto_ctrl');

describe(`the energy-provider test lab over mutual-TLS Mosquitto (${target.name})`, { skip }, () => {
  let svc: Service & { dispose(): Promise<void> };
  let api: Agent;
  let keys: Record<Role, string>;
  let broker: MosquittoTls;
  /** The connector's certificate and key in files, for mosquitto_ctrl: the broker's own view of dynsec. */
  const connector = { cert: '', key: '' };
  /** What the bus watch handed its observers (the test's own observer, after presence and the detectors). */
  const watched: WatchedBusEvent[] = [];
  const creds = new Map<string, DeviceCredentials>();
  const clients = new Map<string, MqttClient>();
  const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });

  /** What each participant saw, in order. */
  const seen: Record<string, { topic: string; body: Record<string, unknown> }[]> = {};
  let capBank: 'open' | 'closed' = 'open';

  /** Each device's behaviour in the lab. */
  const behave: Record<string, (c: MqttClient, topic: string, body: Record<string, unknown>) => void> = {
    'power-supply': (c, topic, body) => {
      if (topic === T.set) void c.publishAsync(T.output, JSON.stringify({ volts: body.volts }), { qos: 1 });
    },
    'smart-meter': (c, topic, body) => {
      if (topic === T.output) void c.publishAsync(T.voltage, JSON.stringify({ meter: 'smart-meter', volts: body.volts }), { qos: 1 });
    },
    dms: (c, topic, body) => {
      if (topic === T.voltage && Number(body.volts) < 117 && capBank === 'open')
        void c.publishAsync(T.command, JSON.stringify({ capBank: 'close' }), { qos: 1 });
      if (topic === T.status && body.state === 'closed') {
        capBank = 'closed';
        void c.publishAsync(T.set, JSON.stringify({ volts: 120 }), { qos: 1 });
      }
      if (topic === T.voltage && Number(body.volts) >= 118 && capBank === 'closed') {
        void c.publishAsync(T.diagram, JSON.stringify({ feeder: 'lab', capBank: 'closed', meterVolts: body.volts }), { qos: 1 });
      }
    },
    'capbank-ctl': (c, topic, body) => {
      if (topic === T.command && body.capBank === 'close') void c.publishAsync(T.status, JSON.stringify({ state: 'closed' }), { qos: 1 });
    },
    'tablet-ui': () => undefined,
    [BRIDGE]: () => undefined,
  };

  async function join(id: string, c: DeviceCredentials): Promise<MqttClient> {
    const client = await connectDevice(broker, c);
    seen[id] ??= [];
    client.on('message', (topic, payload) => {
      const body = json(payload);
      seen[id]!.push({ topic, body });
      behave[id]!(client, topic, body);
    });
    const topics = ACCESS[id]?.subscribe ?? [];
    if (topics.length) {
      const granted = await client.subscribeAsync(topics, { qos: 1 });
      assert.ok(
        granted.every((g) => g.qos === 1),
        `${id} may subscribe to its topics: ${JSON.stringify(granted)}`,
      );
    }
    clients.set(id, client);
    return client;
  }

  /** The tablet lowers the supply to 114 V; resolves when the tablet has the updated diagram. */
  async function runScenario(round: number): Promise<void> {
    capBank = 'open';
    for (const k of Object.keys(seen)) seen[k] = [];
    await clients.get('tablet-ui')!.publishAsync(T.set, JSON.stringify({ volts: 114, round }), { qos: 1 });
    await until(
      `round ${round}: the tablet gets the single-line diagram`,
      async () => seen['tablet-ui']!.some((m) => m.topic === T.diagram),
      15_000,
    );
    const of = (id: string, topic: string) => seen[id]!.filter((m) => m.topic === topic).map((m) => m.body);
    assert.deepEqual(
      of('power-supply', T.set).map((b) => b.volts),
      [114, 120],
      'the supply went to 114 V, then 120 V',
    );
    assert.deepEqual(
      of('smart-meter', T.output).map((b) => b.volts),
      [114, 120],
    );
    assert.deepEqual(
      of('dms', T.voltage).map((b) => b.volts),
      [114, 120],
      'the DMS saw the meter report 114 V, then 120 V',
    );
    assert.deepEqual(of('capbank-ctl', T.command), [{ capBank: 'close' }]);
    assert.deepEqual(of('dms', T.status), [{ state: 'closed' }]);
    assert.deepEqual(of('tablet-ui', T.diagram), [{ feeder: 'lab', capBank: 'closed', meterVolts: 120 }]);
  }

  before(async () => {
    const port = await freePort();
    // The watch as docs/bus-watch.md sets it up: on (the default with a broker connector), the
    // connector's $SYS log and the broker's log file, and the default DETECTION_RULES.
    const logFile = joinPath(tempDir(), 'mosquitto.log');
    ({ svc, api, keys } = await makeApiService(target, {
      env: { BROKER_MQTT_URL: `mqtts://localhost:${port}`, BUS_WATCH_LOG_FILE: logFile },
    }));
    const roles = Object.entries(ACCESS).map(([id, a]) => ({
      rolename: `lab-${id}`,
      acls: [
        ...a.publish.map((topic) => ({ acltype: 'publishClientSend', topic, allow: true })),
        ...a.subscribe.map((topic) => ({ acltype: 'subscribePattern', topic, allow: true })),
      ],
    }));
    roles.push({ rolename: 'lab-bridge', acls: [{ acltype: 'publishClientSend', topic: BRIDGE_TOPIC, allow: true }] });
    const labClients = [
      ...Object.keys(ACCESS).map((id) => ({ username: id, roles: [{ rolename: `lab-${id}` }] })),
      { username: BRIDGE, roles: [{ rolename: 'lab-bridge' }] },
    ];
    // broker-setup's mosquitto.conf and the file the recipe adds: no `log_type all`, just what the docs say.
    broker = await startMosquittoTls(svc, {
      port,
      seed: { roles, clients: labClients },
      logTypeAll: false,
      conf: [`log_dest file ${logFile}`, 'log_type debug'],
    });
    const own = await svc.identities.ensure('broker-connector');
    connector.cert = writeTemp(broker.dir, 'connector.pem', own.cert);
    connector.key = writeTemp(broker.dir, 'connector.key', own.key);
    svc.busWatch.addObserver({ observe: (w) => watched.push(w) });
    await svc.busWatch.start();
    for (const id of Object.keys(ACCESS)) creds.set(id, await enrollDevice(svc, id));
    for (const [id, c] of creds) await join(id, c);
    // The substation broker, bridged in: a device of kind broker, with a certificate naming its DNS name.
    await api.post('/v1/devices').set(auth('provisioner')).send({ id: BRIDGE, kind: 'broker', site: 'substation 7' }).expect(201);
    creds.set(BRIDGE, await enrollBridge());
    await join(BRIDGE, creds.get(BRIDGE)!);
  });
  after(async () => {
    for (const c of clients.values()) c.end(true);
    await broker?.stop();
    await svc?.dispose();
  });

  it('runs the lab scenario with every certificate from mqtt-ca', async () => {
    await runScenario(1);
  });

  it('the bus watch sees the lab: each device connected on the broker (GET /v1/devices/{id}) and counted on the network map', async () => {
    type Presence = {
      broker: string;
      connected: boolean;
      clientId: string;
      username: string;
      protocol: string;
      source: { host: string };
    };
    for (const id of [...Object.keys(ACCESS), BRIDGE]) {
      const p = await until(
        `${id} shown connected on the broker`,
        async () =>
          ((await api.get(`/v1/devices/${id}`).set(auth('auditor')).expect(200)).body.presence as Presence[]).find(
            (x) => x.broker === 'mosquitto' && x.connected,
          ),
        10_000,
      );
      assert.deepEqual([p.clientId, p.username, p.protocol, p.source.host], [id, id, 'mqtt5', '127.0.0.1']);
    }
    type Counts = { connected: number; seen24h: number; known: number };
    const map = (await api.get('/v1/bus/map').set(auth('auditor')).expect(200)).body as {
      brokers: ({ broker: string; groups: ({ site: string | null; lot: string | null } & Counts)[]; unregistered: Counts } & Counts)[];
    };
    const lab = map.brokers.find((b) => b.broker === 'mosquitto')!;
    const group = (site: string | null) => lab.groups.find((g) => g.site === site && g.lot === null);
    assert.deepEqual(group(null), { site: null, lot: null, connected: 5, seen24h: 5, known: 5 }, 'the five lab devices');
    assert.deepEqual(group('substation 7'), { site: 'substation 7', lot: null, connected: 1, seen24h: 1, known: 1 }, 'the bridge');
    // The service's own connector is on the bus too, and no device.
    assert.ok(lab.unregistered.connected >= 1, JSON.stringify(lab.unregistered));
    assert.equal(lab.connected, 6 + lab.unregistered.connected);
  });

  /** The incident the watch opened for the compromised meter: the operator takes it over. */
  let incidentId: string;
  it('the meter, compromised, scans topics: without a person acting, the watch raises one bus.topic-scan, blocks it at the broker and opens an incident with the evidence, and the others carry on', async () => {
    const meter = clients.get('smart-meter')!;
    // Its firmware taken over, the meter tries what it may not: read everything, drive the grid.
    const probe = [
      '#',
      '$SYS/#',
      'lab/#',
      T.set,
      T.command,
      T.status,
      T.diagram,
      BRIDGE_TOPIC,
      'lab/+/command',
      'mqtt-ca/events/#',
      '$CONTROL/dynamic-security/v1/#',
      'lab/meter/#',
    ];
    const outcomes: string[] = [];
    for (const topic of probe) {
      const r = await attempt(meter, meter.subscribeAsync(topic, { qos: 1 }));
      outcomes.push(r);
      if (r === 'closed') break;
    }
    if (meter.connected) {
      // QoS 0: nothing to wait for from a session the broker may end at any moment.
      meter.publish(T.set, JSON.stringify({ volts: 90 }), { qos: 0 });
      meter.publish(T.command, JSON.stringify({ capBank: 'open' }), { qos: 0 });
    }
    assert.ok(!outcomes.includes('done'), `every subscription outside its ACL is refused: ${outcomes.join(', ')}`);
    await until('the broker ended the scanning session (the block kicks it)', async () => !meter.connected, 20_000);

    // The watch's event, once: subject the meter, the rule's responses in its details.
    type Event = { kind: string; severity: string; subject: string; details: Record<string, any> };
    const scans = async () =>
      (await api.get('/v1/events').query({ kind: 'bus.topic-scan' }).set(auth('auditor')).expect(200)).body.items as Event[];
    const [event] = await until('the bus.topic-scan event', async () => (await scans()).length > 0 && scans(), 20_000);
    assert.equal(event!.subject, 'smart-meter');
    assert.equal(event!.severity, 'critical');
    assert.equal(event!.details.rule, 'bus-topic-scan', 'the default rule');
    assert.ok(event!.details.denials >= 10, JSON.stringify(event!.details));
    const block = event!.details.responses['block-client'];
    assert.equal(block.confirmed, true, JSON.stringify(block));
    assert.deepEqual(block.failures, []);
    const effect = block.connectors[0].effects[0];
    assert.deepEqual(
      [block.connectors[0].connector, effect.clientId, effect.applied, effect.confirmed, effect.sessionsEnded],
      ['mosquitto', 'smart-meter', true, true, ['smart-meter']],
    );

    // Confirmed at the broker itself: its dynsec shows the deny role on the meter alone.
    const denyRole = svc.config.brokers.denyRole;
    const view = await dynsecCtrl(broker, connector, ['getClient', 'smart-meter']);
    assert.equal(view.status, 0, view.out);
    assert.match(view.out, new RegExp(denyRole));
    for (const other of ['dms', 'power-supply'])
      assert.doesNotMatch((await dynsecCtrl(broker, connector, ['getClient', other])).out, new RegExp(denyRole));

    // Its certificate still logs it in (nobody has revoked it yet), but the broker refuses it everything, even its own topics.
    const mark = watched.length;
    const back = await connectDevice(broker, creds.get('smart-meter')!);
    await assert.rejects(back.subscribeAsync(T.output, { qos: 1 }), (err: any) => err.packet?.granted?.[0] === 0x87);
    await assert.rejects(back.publishAsync(T.voltage, JSON.stringify({ meter: 'smart-meter', volts: 90 }), { qos: 1 }));
    await assert.rejects(back.publishAsync(T.set, JSON.stringify({ volts: 90 }), { qos: 1 }));
    for (const topic of ['lab/#', T.command, T.set]) assert.equal(await attempt(back, back.subscribeAsync(topic, { qos: 1 })), 'refused');
    clients.set('smart-meter', back); // the attacker stays on, harmless, until the operator acts
    await until(
      'the watch saw the refusals after the block',
      async () => {
        const after = watched.slice(mark);
        const reconnected = after.findIndex((w) => w.event.kind === 'connect' && w.identity === 'smart-meter');
        return (
          reconnected >= 0 &&
          after.slice(reconnected).filter((w) => w.event.kind === 'acl-denied' && w.identity === 'smart-meter').length >= 5
        );
      },
      10_000,
    );

    // The incident: opened by detection, naming the meter, with the evidence and the block's outcome.
    const incidents = (await api.get('/v1/incidents').query({ status: 'open' }).set(auth('auditor')).expect(200)).body.items as {
      id: string;
      openedBy: string;
    }[];
    const opened = incidents.filter((i) => i.openedBy === 'system:detection');
    assert.equal(opened.length, 1, JSON.stringify(incidents));
    incidentId = event!.details.responses['open-incident'].incidentId;
    assert.equal(opened[0]!.id, incidentId);
    const incident = (await api.get(`/v1/incidents/${incidentId}`).set(auth('auditor')).expect(200)).body as {
      kind: string;
      title: string;
      description: string;
      targets: { devices: string[] };
      timeline: unknown[];
    };
    assert.equal(incident.kind, 'device-compromise');
    assert.equal(incident.title, 'bus.topic-scan: smart-meter');
    assert.deepEqual(incident.targets.devices, ['smart-meter']);
    assert.match(incident.description, /rule bus-topic-scan, detector topic-scan/);
    assert.match(incident.description, /"block-client":\{"confirmed":true/);
    assert.ok(
      probe.some((t) => incident.description.includes(`"${t}"`)),
      `the scanned topics are in the evidence: ${incident.description}`,
    );
    assert.deepEqual(incident.timeline, [], 'no person has acted on it');

    // Nothing of the meter's got through, before the block or after it.
    assert.ok(!seen['power-supply']!.some((m) => m.body.volts === 90), "the meter's 90 V never reached the supply");
    assert.ok(!seen['capbank-ctl']!.some((m) => m.body.capBank === 'open'), "nor its 'open' the capacitor bank");
    assert.ok(!seen.dms!.some((m) => m.topic === T.voltage && m.body.volts === 90), 'nor its false reading the DMS');

    // The others carry on: the tablet drives the supply, the DMS the capacitor bank and the tablet's
    // diagram, the substation reports to the DMS.
    for (const k of Object.keys(seen)) seen[k] = [];
    capBank = 'open';
    await clients.get('tablet-ui')!.publishAsync(T.set, JSON.stringify({ volts: 116 }), { qos: 1 });
    await until('the supply answers the tablet', async () => seen['tablet-ui']!.some((m) => m.topic === T.output), 10_000);
    await clients.get('dms')!.publishAsync(T.command, JSON.stringify({ capBank: 'close' }), { qos: 1 });
    await until('the capacitor bank answers the DMS', async () => seen.dms!.some((m) => m.topic === T.status), 10_000);
    await until(
      'the DMS raised the supply',
      async () => seen['tablet-ui']!.some((m) => m.topic === T.output && m.body.volts === 120),
      10_000,
    );
    await clients.get('dms')!.publishAsync(T.diagram, JSON.stringify({ feeder: 'lab', meter: 'blocked' }), { qos: 1 });
    await until('the DMS reaches the tablet', async () => seen['tablet-ui']!.some((m) => m.topic === T.diagram), 10_000);
    await clients.get(BRIDGE)!.publishAsync(BRIDGE_TOPIC, JSON.stringify({ ok: true }), { qos: 1 });
    await until('the substation reaches the DMS', async () => seen.dms!.some((m) => m.topic === BRIDGE_TOPIC), 10_000);
    assert.deepEqual(
      seen['power-supply']!.map((m) => m.body.volts),
      [116, 120],
      'the supply obeyed the tablet, then the DMS',
    );
    assert.deepEqual(
      seen['capbank-ctl']!.map((m) => m.body),
      [{ capBank: 'close' }],
      'the bank obeyed the DMS',
    );
    assert.deepEqual(
      seen.dms!.filter((m) => m.topic === T.voltage),
      [],
      'no meter reading reached the DMS',
    );

    // One event for the episode: the refusals after the block (within its window) raised no other, and the attacker was not kicked again.
    assert.equal((await scans()).length, 1);
    assert.ok(back.connected);
  });

  it('the operator takes the incident over: the meter is revoked, kicked and blocked, and can neither publish nor reconnect while the others carry on', async () => {
    const act = async (action: string, extra: Record<string, unknown> = {}) =>
      (
        await api
          .post(`/v1/incidents/${incidentId}/actions`)
          .set(auth('operator'))
          .send({ action, ...extra })
          .expect(201)
      ).body as { status: string; touched: { type: string; id: string }[]; error: string | null; result: Record<string, unknown> };

    const dry = await act('block', { dryRun: true });
    assert.deepEqual(dry.touched, [{ type: 'broker-client', id: 'smart-meter' }]);
    assert.ok(clients.get('smart-meter')!.connected, 'a dry run leaves the meter connected');

    const revoked = await act('revoke-certificates');
    assert.equal(revoked.status, 'succeeded');
    assert.deepEqual(revoked.touched, [{ type: 'certificate', id: creds.get('smart-meter')!.serial }]);
    const meter = clients.get('smart-meter')!;
    const gone = new Promise<void>((resolve) => meter.once('close', () => resolve()));
    const blocked = await act('block');
    assert.equal(blocked.status, 'succeeded', blocked.error ?? '');
    await gone; // the kick ended its session
    // Until the brokers reload the CRL a certificate login still works, but the deny role refuses everything
    // (should the watch's revoked-certificate rule kick it meanwhile, its session ends: refused too).
    const sneaky = await connectDevice(broker, creds.get('smart-meter')!);
    // The watch sees the revoked meter back on the bus before the CRL reload: the revocation made it forget the meter's standing.
    await until(
      'the revoked meter seen reconnecting',
      async () =>
        (await api.get('/v1/events?kind=bus.revoked-certificate&subject=smart-meter').set(auth('auditor')).expect(200)).body.items
          .length === 1,
      20_000,
    );
    assert.notEqual(
      await attempt(sneaky, sneaky.publishAsync(T.voltage, JSON.stringify({ meter: 'smart-meter', volts: 90 }), { qos: 1 })),
      'done',
    );
    assert.notEqual(await attempt(sneaky, sneaky.subscribeAsync(T.output, { qos: 1 })), 'done');
    sneaky.end(true);
    await broker.reloadCrl();

    // Its stolen certificate gets nobody in any more.
    await assert.rejects(connectDevice(broker, creds.get('smart-meter')!));

    // The others carry on: the tablet still drives the supply and the DMS still reaches the tablet.
    for (const k of Object.keys(seen)) seen[k] = [];
    await clients.get('tablet-ui')!.publishAsync(T.set, JSON.stringify({ volts: 116 }), { qos: 1 });
    await until('the supply answers the tablet', async () => seen['tablet-ui']!.some((m) => m.topic === T.output), 10_000);
    await clients.get('dms')!.publishAsync(T.diagram, JSON.stringify({ feeder: 'lab', meter: 'offline' }), { qos: 1 });
    await until('the DMS still reaches the tablet', async () => seen['tablet-ui']!.some((m) => m.topic === T.diagram), 10_000);
    assert.deepEqual(
      seen.dms!.filter((m) => m.topic === T.voltage),
      [],
      'no meter reading reached the DMS',
    );

    const timeline = (await api.get(`/v1/incidents/${incidentId}`).set(auth('auditor')).expect(200)).body.timeline as {
      action: string;
      status: string;
    }[];
    assert.deepEqual(
      timeline.map((s) => `${s.action}:${s.status}`),
      ['block:succeeded', 'revoke-certificates:succeeded', 'block:succeeded'],
    );
  });

  it('recovery: the meter is re-admitted, unblocked and re-enrolled with a new key, and the scenario runs to completion again', async () => {
    const act = async (action: string, extra: Record<string, unknown> = {}) =>
      (
        await api
          .post(`/v1/incidents/${incidentId}/actions`)
          .set(auth('operator'))
          .send({ action, ...extra })
          .expect(201)
      ).body as {
        status: string;
        error: string | null;
        approvalId: string | null;
      };
    assert.equal((await act('readmit')).status, 'succeeded');
    // One deny role at the broker, the watch's block and the operator's alike: unblocking lifts it.
    const unblocked = await act('unblock');
    assert.equal(unblocked.status, 'succeeded', unblocked.error ?? '');
    // The operator proposes the reissue (tokens are device credentials); the provisioner on call approves it and gets the token.
    const proposed = await act('reissue');
    assert.equal(proposed.status, 'proposed');
    const approved = (await api.post(`/v1/approvals/${proposed.approvalId}/approve`).set(auth('provisioner')).expect(200)).body as {
      status: string;
      secrets: { tokens: { deviceId: string; token: string }[] };
    };
    assert.equal(approved.status, 'executed');
    const token = approved.secrets.tokens[0]!;
    assert.equal(token.deviceId, 'smart-meter');
    const csr = p256Csr('smart-meter');
    const enrolled = (
      await api
        .post('/v1/enroll')
        .set({ Authorization: `Bearer ${token.token}` })
        .send({ csr: csr.pem })
        .expect(201)
    ).body as { serial: string; certificate: string; chain: string[] };
    const old = creds.get('smart-meter')!;
    assert.notEqual(enrolled.serial, old.serial);
    const renewed: DeviceCredentials = {
      ...old,
      serial: enrolled.serial,
      key: csr.keyPem,
      cert: enrolled.certificate + enrolled.chain.join(''),
    };
    creds.set('smart-meter', renewed);
    await join('smart-meter', renewed);
    await runScenario(2);

    // The old key stays locked out.
    await assert.rejects(connectDevice(broker, old));
  });

  /** The bridge broker's certificate, through a broker token that names its DNS name. */
  async function enrollBridge(): Promise<DeviceCredentials> {
    const tok = (
      await api
        .post('/v1/enrollment-tokens')
        .set(auth('admin'))
        .send({ deviceId: BRIDGE, dnsNames: ['substation.lab.example'] })
        .expect(201)
    ).body.token as string;
    const csr = p256Csr(BRIDGE, { sans: [{ type: 'dns', value: 'substation.lab.example' }] });
    const r = (
      await api
        .post('/v1/enroll')
        .set({ Authorization: `Bearer ${tok}` })
        .send({ csr: csr.pem })
        .expect(201)
    ).body as { serial: string; certificate: string; chain: string[] };
    return { deviceId: BRIDGE, serial: r.serial, key: csr.keyPem, cert: r.certificate + r.chain.join(''), ca: creds.get('tablet-ui')!.ca };
  }

  it('a compromised substation broker is quarantined (revoked, blocked, its peers told) and restored', async () => {
    const bridgeCreds = creds.get(BRIDGE)!;
    const bridge = clients.get(BRIDGE)!;
    await bridge.publishAsync(BRIDGE_TOPIC, JSON.stringify({ ok: true }), { qos: 1 });
    const id = (
      await api
        .post('/v1/incidents')
        .set(auth('operator'))
        .send({ kind: 'broker-compromise', title: 'substation broker rooted', targets: { brokers: [BRIDGE] } })
        .expect(201)
    ).body.id as string;
    const act = async (action: string, extra: Record<string, unknown> = {}) =>
      (
        await api
          .post(`/v1/incidents/${id}/actions`)
          .set(auth('operator'))
          .send({ action, ...extra })
          .expect(201)
      ).body as {
        status: string;
        error: string | null;
        touched: { type: string; id: string }[];
        secrets?: { tokens: { token: string }[] };
      };
    const dry = await act('quarantine-broker', { dryRun: true });
    assert.deepEqual(dry.touched, [
      { type: 'device', id: BRIDGE },
      { type: 'certificate', id: bridgeCreds.serial },
    ]);

    seen['tablet-ui'] = [];
    const gone = new Promise<void>((resolve) => bridge.once('close', () => resolve()));
    const q = await act('quarantine-broker');
    assert.equal(q.status, 'succeeded', q.error ?? '');
    await gone;
    await until(
      'the peers hear of the quarantine',
      async () => seen['tablet-ui']!.some((m) => m.topic === 'mqtt-ca/events/broker-quarantined' && m.body.subject === BRIDGE),
      10_000,
    );
    const cert = (await api.get(`/v1/certificates/${bridgeCreds.serial}`).set(auth('auditor')).expect(200)).body as {
      revocation: { reason: string };
    };
    assert.equal(cert.revocation.reason, 'keyCompromise');
    assert.equal((await api.get(`/v1/devices/${BRIDGE}`).set(auth('auditor')).expect(200)).body.status, 'revoked');
    // Nothing more is issued to it, and after the CRL reload it cannot get back in.
    assertProblem(
      await api
        .post('/v1/enrollment-tokens')
        .set(auth('admin'))
        .send({ deviceId: BRIDGE, dnsNames: ['substation.lab.example'] }),
      400,
      /revoked/,
    );
    await broker.reloadCrl();
    await assert.rejects(connectDevice(broker, bridgeCreds));

    // Restored: re-admitted, unblocked, its peers told; a new certificate gets it back on the bus.
    seen['tablet-ui'] = [];
    const r = await act('restore-broker');
    assert.equal(r.status, 'succeeded', r.error ?? '');
    await until(
      'the peers hear of the restore',
      async () => seen['tablet-ui']!.some((m) => m.topic === 'mqtt-ca/events/broker-restored' && m.body.subject === BRIDGE),
      10_000,
    );
    const fresh = await enrollBridge();
    const back = await join(BRIDGE, fresh);
    await back.publishAsync(BRIDGE_TOPIC, JSON.stringify({ ok: true, restored: true }), { qos: 1 });
    await api.post(`/v1/incidents/${id}/close`).set(auth('operator')).send({ summary: 'broker rebuilt and re-keyed' }).expect(200);
  });

  it('a broker that cannot be reached: the action is a recorded failed step, retried once the broker is back', async () => {
    await broker.stop();
    const failed = (await api.post(`/v1/incidents/${incidentId}/actions`).set(auth('operator')).send({ action: 'disconnect' }).expect(201))
      .body as { id: string; status: string; error: string };
    assert.equal(failed.status, 'failed');
    assert.match(failed.error, /mosquitto/);
    assertProblem(await api.post(`/v1/incidents/${incidentId}/close`).set(auth('operator')).send({ summary: 'x' }), 409);
    await broker.start();
    const retried = (await api.post(`/v1/incidents/${incidentId}/steps/${failed.id}/retry`).set(auth('operator')).send().expect(201))
      .body as { status: string; retryOf: string; error: string | null };
    assert.equal(retried.status, 'succeeded', retried.error ?? '');
    assert.equal(retried.retryOf, failed.id);
    await api
      .post(`/v1/incidents/${incidentId}/close`)
      .set(auth('operator'))
      .send({ summary: 'meter re-keyed and back in service' })
      .expect(200);
  });
});
