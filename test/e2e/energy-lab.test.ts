// The test lab of the example energy provider in "MQTT and the NIST Cybersecurity Framework"
// (OASIS), replayed over a real Mosquitto with mutual TLS, every certificate from mqtt-ca: the
// tablet UI lowers the supply to 114 V, the smart meter reports it, the distribution management
// system (DMS) closes the capacitor bank, raises the supply to 120 V, and publishes the updated
// single-line diagram to the tablet. Then the meter is declared compromised and an incident
// revokes, kicks and blocks it through the REST API, while the others carry on; then it is
// recovered (re-admitted, unblocked, re-enrolled with a new key) and the scenario runs again.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type { MqttClient } from 'mqtt';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { p256Csr } from '../helpers/csr.js';
import { freePort, until } from '../helpers/processes.js';
import { toolSkip } from '../helpers/tools.js';
import { assertProblem } from '../helpers/http.js';
import { connectDevice, enrollDevice, startMosquittoTls, type DeviceCredentials, type MosquittoTls } from '../helpers/mosquitto-tls.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

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

/** Least privilege per device, as the framework asks: each may publish and subscribe only its own topics. */
const ACCESS: Record<string, { publish: string[]; subscribe: string[] }> = {
  'tablet-ui': { publish: [T.set], subscribe: [T.output, T.diagram, 'mqtt-ca/events/#'] },
  'power-supply': { publish: [T.output], subscribe: [T.set] },
  'smart-meter': { publish: [T.voltage], subscribe: [T.output] },
  dms: { publish: [T.command, T.set, T.diagram], subscribe: [T.voltage, T.status] },
  'capbank-ctl': { publish: [T.status], subscribe: [T.command] },
};

/** A substation broker that bridges into the lab broker as a client, with its broker certificate. */
const BRIDGE = 'substation-broker';
const BRIDGE_TOPIC = 'lab/substation/status';

const json = (b: Buffer) => JSON.parse(b.toString()) as Record<string, unknown>;

describe(`the energy-provider test lab over mutual-TLS Mosquitto (${target.name})`, { skip: toolSkip('mosquitto') }, () => {
  let svc: Service & { dispose(): Promise<void> };
  let api: Agent;
  let keys: Record<Role, string>;
  let broker: MosquittoTls;
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
    ({ svc, api, keys } = await makeApiService(target, { env: { BROKER_MQTT_URL: `mqtts://localhost:${port}` } }));
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
    broker = await startMosquittoTls(svc, { port, seed: { roles, clients: labClients } });
    for (const id of Object.keys(ACCESS)) creds.set(id, await enrollDevice(svc, id));
    for (const [id, c] of creds) await join(id, c);
  });
  after(async () => {
    for (const c of clients.values()) c.end(true);
    await broker?.stop();
    await svc?.dispose();
  });

  it('runs the lab scenario with every certificate from mqtt-ca', async () => {
    await runScenario(1);
  });

  let incidentId: string;
  it('a compromised meter is revoked, kicked and blocked by an incident, and can neither publish nor reconnect while the others carry on', async () => {
    incidentId = (
      await api
        .post('/v1/incidents')
        .set(auth('operator'))
        .send({ kind: 'device-compromise', title: 'smart meter tampered in the field', targets: { devices: ['smart-meter'] } })
        .expect(201)
    ).body.id;
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
    // Until the brokers reload the CRL a certificate login still works, but the deny role refuses everything.
    const sneaky = await connectDevice(broker, creds.get('smart-meter')!);
    await assert.rejects(sneaky.publishAsync(T.voltage, JSON.stringify({ meter: 'smart-meter', volts: 90 }), { qos: 1 }));
    await assert.rejects(sneaky.subscribeAsync(T.output, { qos: 1 }));
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
    await api.post('/v1/devices').set(auth('provisioner')).send({ id: BRIDGE, kind: 'broker', site: 'substation 7' }).expect(201);
    const bridgeCreds = await enrollBridge();
    const bridge = await join(BRIDGE, bridgeCreds);
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
