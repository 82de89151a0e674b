// The bus watch's Detect function end to end (issue 26, "Done when"): the service on PostgreSQL with
// its watch started, a private Mosquitto 2.0 with mutual TLS from this CA, dynsec, its log on
// $SYS/broker/log and in a file with `log_type all`, and DETECTION_RULES as an operator would set
// them (small windows so that it runs in seconds). Real clients, mqtt.js and mosquitto_pub/sub with
// certificates from this CA (and one from a foreign CA), do each bad thing: a reconnect loop, a
// revoked device let in by a stale CRL and then refused with a foreign-CA certificate, a topic scan,
// a subscribe to `#` the ACL forbids, a client that connects and sends nothing, a device gone
// silent, one client id from two addresses. Each yields its event once per episode (GET /v1/events),
// the blocking rules' responses are applied and confirmed at the broker (mosquitto_ctrl) with an
// incident opened (GET /v1/incidents), the other devices carry on, presence follows the sessions
// (GET /v1/devices/{id}), and the posture's Detect rows are measured (GET /v1/posture).
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { TcpNetConnectOpts } from 'node:net';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { run, tempDir, writeTemp } from '../helpers/openssl.js';
import { freePort, runAsync, until } from '../helpers/processes.js';
import { toolSkip } from '../helpers/tools.js';
import {
  connectDevice,
  dynsecCtrl,
  enrollDevice,
  fleetSeed,
  startMosquittoTls,
  type DeviceCredentials,
  type MosquittoTls,
} from '../helpers/mosquitto-tls.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import { defaultRulesWith } from '../helpers/detection-rules.js';

const target = dbTargets.find((t) => t.name === 'postgres' && !t.skip) ?? dbTargets.find((t) => t.name === 'pglite')!;

/** The windows the test waits out (a second burst of reconnects comes after the first's quiet window). */
const RECONNECT_WINDOW_S = 8;
const IDLE_S = 10;
/** The schema's least silentAfterSeconds: the other misdeeds run while gone-1's silence lasts. */
const SILENT_S = 60;

/** The operator's rules: the defaults, the bus watch's rules tightened for the test. */
const RULES = defaultRulesWith({
  'bus-reconnect-loop': { threshold: 5, windowSeconds: RECONNECT_WINDOW_S },
  'bus-connect-flood': { threshold: 1000 },
  'bus-tls-failures': { threshold: 4, windowSeconds: 60 },
  'bus-topic-scan': { distinctTopics: 8, denials: 3, windowSeconds: 30 },
  'bus-idle-connected': { idleSeconds: IDLE_S },
  'bus-silent': { silentAfterSeconds: SILENT_S, profile: 'device' },
  'bus-revoked-certificate': { windowSeconds: 600 },
  // A cloned credential, or a device that moved: an incident to look at, no block.
  'bus-client-id-two-sources': { windowSeconds: 60, actions: ['open-incident'] },
});

const DEVICES = ['loop-1', 'stolen-1', 'held-1', 'scanner-1', 'nosy-1', 'idle-1', 'gone-1', 'twin-1', 'meter-a', 'meter-b'];

interface SecurityEvent {
  id: number;
  kind: string;
  severity: string;
  subject: string | null;
  source: string | null;
  details: Record<string, any>;
}

interface Presence {
  broker: string;
  connected: boolean;
  lastDisconnectReason: string | null;
  source: { host: string; port: number | null } | null;
  clientId: string | null;
  username: string | null;
  sessions: number;
}

describe(
  `bus watch detection end to end: real clients misbehave on a mutual-TLS Mosquitto (${target.name})`,
  { skip: toolSkip('mosquitto') ?? toolSkip('mosquitto_ctrl') ?? toolSkip('mosquitto_sub') ?? toolSkip('openssl') },
  () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    let keys: Record<Role, string>;
    let broker: MosquittoTls;
    const creds: Record<string, DeviceCredentials> = {};
    const files: Record<string, { cert: string; key: string; ca: string }> = {};
    const admin = {} as { cert: string; key: string };
    const open: MqttClient[] = [];
    const children: ChildProcess[] = [];
    let meterA: MqttClient;
    let meterB: MqttClient;
    const received: string[] = [];
    let reconnectBurstEnd = 0;

    const auth = (role: Role = 'auditor') => ({ Authorization: `Bearer ${keys[role]}` });
    /** GET /v1/events of a kind (and subject). */
    const events = async (kind: string, subject?: string): Promise<SecurityEvent[]> => {
      const res = await api
        .get('/v1/events')
        .query({ kind, limit: 100, ...(subject ? { subject } : {}) })
        .set(auth());
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body.items;
    };
    const firstEvent = (kind: string, subject: string, timeoutMs = 30_000) =>
      until(`${kind} for ${subject}`, async () => (await events(kind, subject))[0], timeoutMs);
    /** GET /v1/devices/{id}: its presence on the broker. */
    const presence = async (id: string): Promise<Presence | undefined> => {
      const res = await api.get(`/v1/devices/${id}`).set(auth());
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return (res.body.presence as Presence[]).find((p) => p.broker === 'mosquitto');
    };
    const presenceUntil = (what: string, id: string, ok: (p: Presence) => boolean, timeoutMs = 20_000) =>
      until(
        `${id}: ${what}`,
        async () => {
          const p = await presence(id);
          return p && ok(p) && p;
        },
        timeoutMs,
      );
    /** The log file source's events of a kind so far (GET /v1/bus/watch). */
    const fileSeen = async (kind: string): Promise<number> => {
      const res = await api.get('/v1/bus/watch').set(auth());
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return res.body.sources.find((s: { kind: string }) => s.kind === 'mosquitto-log-file').events[kind] ?? 0;
    };
    /** An incident opened by detection naming the device (GET /v1/incidents). */
    const incidentFor = (device: string, kind: string) =>
      until(
        `the incident of ${kind} for ${device}`,
        async () => {
          const res = await api.get('/v1/incidents').query({ status: 'open', limit: 100 }).set(auth());
          assert.equal(res.status, 200, JSON.stringify(res.body));
          return (
            res.body.items as { id: string; title: string; targets: { devices: string[] }; openedBy: string; description: string }[]
          ).find((i) => i.targets.devices.includes(device) && i.title.startsWith(`${kind}:`));
        },
        20_000,
      );
    /** The broker's own view of a blocked client: mosquitto_ctrl shows the deny role. */
    const blockedAtBroker = async (id: string) => {
      const view = await dynsecCtrl(broker, admin, ['getClient', id]);
      assert.equal(view.status, 0, view.out);
      assert.match(view.out, /mqtt-ca-blocked/, `${id} at the broker: ${view.out}`);
    };
    /** A block's outcome in the event: applied and confirmed at the broker by the Mosquitto connector. */
    const assertBlocked = (e: SecurityEvent, id: string) => {
      const block = e.details.responses['block-client'];
      assert.equal(block.confirmed, true, JSON.stringify(block));
      assert.deepEqual(block.failures, []);
      const effect = block.connectors[0].effects[0];
      assert.deepEqual([block.connectors[0].connector, effect.clientId, effect.applied, effect.confirmed], ['mosquitto', id, true, true]);
    };
    /** meter-a publishes, meter-b receives: the rest of the fleet carries on. */
    const fleetCarriesOn = async (tag: string) => {
      await meterA.publishAsync('fleet/meter-a/data', tag, { qos: 1 });
      await until(`meter-b receives ${tag}`, async () => received.includes(tag), 10_000);
    };
    /** mosquitto_pub / mosquitto_sub with a device's certificate, run to its end (never blocking this process). */
    const cli = (cmd: 'mosquitto_pub' | 'mosquitto_sub', who: string, args: string[]) =>
      runAsync(
        cmd,
        [
          '-h',
          'localhost',
          '-p',
          String(broker.port),
          '--cafile',
          files[who]!.ca,
          '--cert',
          files[who]!.cert,
          '--key',
          files[who]!.key,
          ...args,
        ],
        20_000,
      );
    const device = async (id: string, opts: Parameters<typeof connectDevice>[2] = {}) => {
      const c = await connectDevice(broker, creds[id]!, opts);
      c.on('error', () => undefined);
      open.push(c);
      return c;
    };

    before(async () => {
      const port = await freePort();
      const dir = tempDir();
      const logFile = join(dir, 'mosquitto.log');
      ({ svc, api, keys } = await makeApiService(target, {
        env: {
          BROKER_MQTT_URL: `mqtts://localhost:${port}`,
          BROKER_TIMEOUT_SECONDS: '5',
          BUS_WATCH: 'on',
          BUS_WATCH_LOG_FILE: logFile,
          DETECTION_RULES: JSON.stringify(RULES),
        },
      }));
      for (const id of DEVICES) {
        creds[id] = await enrollDevice(svc, id);
        files[id] = {
          cert: writeTemp(dir, `${id}.pem`, creds[id].cert),
          key: writeTemp(dir, `${id}.key`, creds[id].key),
          ca: writeTemp(dir, 'ca.pem', creds[id].ca),
        };
      }
      // A certificate from another CA, naming a real device of the fleet.
      const foreign = (name: string) => join(dir, name);
      const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
      for (const args of [
        ['req', '-x509', ...ec, '-keyout', foreign('f-ca.key'), '-out', foreign('f-ca.pem'), '-subj', '/CN=Foreign CA', '-days', '2'],
        ['req', ...ec, '-keyout', foreign('f-dev.key'), '-out', foreign('f-dev.csr'), '-subj', '/CN=meter-a'],
        // prettier-ignore
        ['x509', '-req', '-in', foreign('f-dev.csr'), '-CA', foreign('f-ca.pem'), '-CAkey', foreign('f-ca.key'), '-CAcreateserial', '-out', foreign('f-dev.pem'), '-days', '2'],
      ]) {
        const r = run('openssl', args);
        assert.equal(r.status, 0, r.stderr);
      }
      files.foreign = { cert: foreign('f-dev.pem'), key: foreign('f-dev.key'), ca: files['meter-a']!.ca };

      broker = await startMosquittoTls(svc, {
        port,
        conf: [`log_dest file ${logFile}`],
        seed: fleetSeed(DEVICES),
      });
      const id = await svc.identities.ensure('broker-connector');
      admin.cert = writeTemp(dir, 'connector.pem', id.cert);
      admin.key = writeTemp(dir, 'connector.key', id.key);

      await svc.busWatch.start();
      await until(
        'both sources of the watch up',
        async () => {
          const res = await api.get('/v1/bus/watch').set(auth());
          return res.body.sources.length === 2 && res.body.sources.every((s: { up: boolean }) => s.up);
        },
        20_000,
      );

      // The fleet that behaves: meter-b listens to meter-a.
      meterA = await device('meter-a');
      meterB = await device('meter-b');
      meterB.on('message', (_t, payload) => received.push(payload.toString()));
      await meterB.subscribeAsync('fleet/meter-a/data', { qos: 1 });
      await fleetCarriesOn('before');
      // gone-1 is seen once and then never again; idle-1 connects and says nothing. Both are judged later.
      const gone = await device('gone-1');
      await gone.publishAsync('fleet/gone-1/data', 'last words', { qos: 1 });
      await gone.endAsync();
      await device('idle-1');
    });

    after(async () => {
      for (const c of open) c.end(true);
      for (const c of children) c.kill('SIGKILL');
      await svc?.dispose();
      await broker?.stop();
    });

    it('a reconnect loop: one bus.reconnect-loop event for the burst; presence counts the sessions', async () => {
      for (let i = 0; i < 6; i++) await (await device('loop-1')).endAsync();
      const p = await presenceUntil('6 sessions, disconnected', 'loop-1', (x) => x.sessions === 6 && !x.connected);
      reconnectBurstEnd = Date.now(); // the detectors saw every connect before presence wrote it
      assert.equal(p.lastDisconnectReason, 'client');
      assert.equal(p.username, 'loop-1');
      const e = await firstEvent('bus.reconnect-loop', 'loop-1');
      assert.equal(e.details.count, 5, 'fired at the threshold');
      assert.equal(e.details.rule, 'bus-reconnect-loop');
      assert.equal((await events('bus.reconnect-loop', 'loop-1')).length, 1, 'once for the burst');
    });

    it('a revoked and a suspended device the broker still lets in (its CRL is stale): bus.revoked-certificate each, blocked and confirmed at the broker, an incident each', async () => {
      for (const [id, reason, status] of [
        ['stolen-1', 'keyCompromise', 'revoked'],
        ['held-1', 'certificateHold', 'suspended'],
      ] as const) {
        const revoked = await api.post(`/v1/certificates/${creds[id]!.serial}/revoke`).set(auth('operator')).send({ reason });
        assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
        assert.equal((await api.get(`/v1/devices/${id}`).set(auth())).body.status, status);
        // The broker has not reloaded its CRL: the certificate still passes.
        const client = await device(id);
        const kicked = new Promise<void>((resolve) => client.once('close', () => resolve()));
        const e = await firstEvent('bus.revoked-certificate', id);
        assert.equal(e.severity, 'critical');
        assert.equal(e.details.status, status);
        assert.equal(e.details.why, `the device is ${status}`);
        assertBlocked(e, id);
        await kicked;
        await blockedAtBroker(id);
        const incident = await incidentFor(id, 'bus.revoked-certificate');
        assert.equal(incident.openedBy, 'system:detection');
        assert.match(incident.description, /"block-client":\{"confirmed":true/);
        assert.equal(e.details.responses['open-incident'].incidentId, incident.id);
        const p = await presenceUntil('kicked', id, (x) => !x.connected);
        assert.equal(p.lastDisconnectReason, 'administrative');
      }
    });

    it('the CRL reloaded: the revoked certificate and a foreign-CA one are refused in the handshake; one bus.tls-failures event for the source', async () => {
      await broker.reloadCrl();
      const before = await fileSeen('tls-failure');
      for (const who of ['stolen-1', 'foreign', 'stolen-1', 'foreign', 'foreign']) {
        const r = await cli('mosquitto_pub', who, ['-i', `${who}-try`, '-t', 'fleet/x', '-m', 'x']);
        assert.notEqual(r.status, 0, `${who} refused: ${r.stdout}${r.stderr}`);
      }
      await until('the watch saw the five failed handshakes', async () => (await fileSeen('tls-failure')) >= before + 5, 20_000);
      const e = await until('bus.tls-failures', async () => (await events('bus.tls-failures'))[0], 20_000);
      assert.equal(e.source, '127.0.0.1');
      assert.equal(e.subject, null, 'per source: about the address');
      assert.equal(e.details.count, 4);
      assert.ok(
        e.details.evidence.every((x: { failure: string }) => x.failure === 'verify-failed'),
        JSON.stringify(e.details.evidence),
      );
      assert.equal((await events('bus.tls-failures')).length, 1, 'once for the episode');
      await fleetCarriesOn('after the handshakes');
    });

    it('a client scanning topics (subscribes and publishes, some denied): one bus.topic-scan, blocked and confirmed at the broker, an incident; the fleet carries on', async () => {
      const scanner = await device('scanner-1');
      const kicked = new Promise<void>((resolve) => scanner.once('close', () => resolve()));
      const tries = [
        ...['meter-a', 'meter-b', 'meter-c', 'meter-d'].map((m) => ({ sub: `fleet/${m}/#` })),
        { pub: 'plant/valve-1/set' },
        ...['meter-e', 'meter-f'].map((m) => ({ sub: `fleet/${m}/cmd` })),
        { pub: 'fleet/meter-g/cmd' },
        ...Array.from({ length: 8 }, (_, i) => ({ sub: `fleet/meter-${i + 10}/#` })),
      ];
      for (const t of tries) {
        if (scanner.disconnected || scanner.disconnecting) break;
        // Each try until it is answered or the broker ends the session (the block's kick).
        const op = 'sub' in t ? scanner.subscribeAsync(t.sub!, { qos: 0 }) : scanner.publishAsync(t.pub!, 'probe', { qos: 0 });
        await Promise.race([op.catch(() => undefined), kicked]);
      }
      await kicked;
      const e = await firstEvent('bus.topic-scan', 'scanner-1');
      assert.equal(e.details.detector, 'topic-scan');
      assert.ok(e.details.distinctTopics >= 8 || e.details.denials >= 3, JSON.stringify(e.details));
      assert.ok(e.details.topics.length > 0);
      assertBlocked(e, 'scanner-1');
      await blockedAtBroker('scanner-1');
      const incident = await incidentFor('scanner-1', 'bus.topic-scan');
      assert.equal(incident.openedBy, 'system:detection');
      assert.match(incident.description, /rule bus-topic-scan, detector topic-scan/);
      // Back again, it may do nothing: its subscribe is refused.
      const again = await device('scanner-1');
      await assert.rejects(again.subscribeAsync('fleet/meter-a/data', { qos: 1 }), (err: any) => err.packet?.granted?.[0] >= 0x80);
      again.end(true);
      await fleetCarriesOn('after the scan');
      assert.equal((await events('bus.topic-scan', 'scanner-1')).length, 1, 'once for the episode');
      assert.equal(meterA.connected && meterB.connected, true);
    });

    it('a client subscribing to `#` where its ACL forbids it: denials seen in the log file, counted by topic-scan → one event, blocked', async () => {
      const before = await fileSeen('acl-denied');
      for (let i = 0; i < 3; i++) {
        const r = await cli('mosquitto_sub', 'nosy-1', ['-i', 'nosy-1', '-t', '#', '-W', '3']);
        assert.match(
          `${r.stdout}${r.stderr}`,
          /All subscription requests were denied/,
          `mosquitto_sub: ${r.status} ${r.stdout}${r.stderr}`,
        );
      }
      await until('the watch saw the three denials', async () => (await fileSeen('acl-denied')) >= before + 3, 20_000);
      const e = await firstEvent('bus.topic-scan', 'nosy-1');
      assert.equal(e.details.denials, 3, JSON.stringify(e.details));
      assert.equal(e.details.distinctTopics, 1);
      assert.deepEqual(e.details.topics, ['#']);
      assert.ok(
        e.details.evidence.some(
          (x: { kind: string; action: string; topic: string }) => x.kind === 'acl-denied' && x.action === 'subscribe' && x.topic === '#',
        ),
        JSON.stringify(e.details.evidence),
      );
      assertBlocked(e, 'nosy-1');
      await blockedAtBroker('nosy-1');
      await incidentFor('nosy-1', 'bus.topic-scan');
      assert.equal((await events('bus.topic-scan', 'nosy-1')).length, 1);
    });

    it('one client id from two addresses (mqtt.js bound to 127.0.0.2, mosquitto_sub to 127.0.0.3): one bus.client-id-two-sources, an incident', async () => {
      // mqtt.js hands its options on to tls.connect, which binds the socket to localAddress (not in mqtt.js's types).
      const from2: IClientOptions & Pick<TcpNetConnectOpts, 'localAddress'> = { localAddress: '127.0.0.2' };
      const first = await device('twin-1', from2);
      const takenOver = new Promise<void>((resolve) => first.once('close', () => resolve()));
      await presenceUntil('connected from 127.0.0.2', 'twin-1', (x) => x.connected && x.source?.host === '127.0.0.2');
      const clone = spawn('mosquitto_sub', [
        ...['-h', '127.0.0.1', '-p', String(broker.port), '-A', '127.0.0.3'],
        ...['--cafile', files['twin-1']!.ca, '--cert', files['twin-1']!.cert, '--key', files['twin-1']!.key],
        ...['-i', 'twin-1', '-t', 'fleet/twin-1/cmd'],
      ]);
      children.push(clone);
      await takenOver;
      const p = await presenceUntil('connected from 127.0.0.3', 'twin-1', (x) => x.connected && x.source?.host === '127.0.0.3');
      assert.equal(p.clientId, 'twin-1');
      const e = await firstEvent('bus.client-id-two-sources', 'twin-1');
      assert.deepEqual([...e.details.sources].sort(), ['127.0.0.2', '127.0.0.3']);
      await incidentFor('twin-1', 'bus.client-id-two-sources');
      clone.kill('SIGTERM');
      await presenceUntil('gone', 'twin-1', (x) => !x.connected);
      assert.equal((await events('bus.client-id-two-sources', 'twin-1')).length, 1);
    });

    it('a client that connects and sends nothing: one bus.idle-connected; presence shows it connected', async () => {
      const e = await firstEvent('bus.idle-connected', 'idle-1', (IDLE_S + 30) * 1000);
      assert.ok(e.details.idleSeconds >= IDLE_S, JSON.stringify(e.details));
      assert.equal(e.severity, 'info');
      const p = await presence('idle-1');
      assert.equal(p?.connected, true);
      assert.equal(p?.sessions, 1);
    });

    it('the reconnect loop again after its quiet window: a second bus.reconnect-loop event', async () => {
      const quietUntil = reconnectBurstEnd + RECONNECT_WINDOW_S * 1000 + 1000;
      if (Date.now() < quietUntil) await new Promise((r) => setTimeout(r, quietUntil - Date.now()));
      for (let i = 0; i < 6; i++) await cli('mosquitto_pub', 'loop-1', ['-i', 'loop-1', '-t', 'fleet/loop-1/boot', '-m', `${i}`]);
      await presenceUntil('12 sessions', 'loop-1', (x) => x.sessions === 12 && !x.connected);
      const both = await until('the second event', async () => (await events('bus.reconnect-loop', 'loop-1')).length === 2, 20_000);
      assert.ok(both);
    });

    it('a device gone silent past silentAfterSeconds: one bus.silent event', async () => {
      const p = await presence('gone-1');
      assert.equal(p?.connected, false);
      assert.equal(p?.lastDisconnectReason, 'client');
      const e = await firstEvent('bus.silent', 'gone-1', (SILENT_S + 60) * 1000);
      assert.ok(e.details.silentSeconds >= SILENT_S, JSON.stringify(e.details));
      assert.equal(e.details.profile, 'device');
    });

    it('each misdeed raised its events once per episode; the fleet carried on', async () => {
      const once: [string, string, number][] = [
        ['bus.reconnect-loop', 'loop-1', 2],
        ['bus.revoked-certificate', 'stolen-1', 1],
        ['bus.revoked-certificate', 'held-1', 1],
        ['bus.topic-scan', 'scanner-1', 1],
        ['bus.topic-scan', 'nosy-1', 1],
        ['bus.client-id-two-sources', 'twin-1', 1],
        ['bus.idle-connected', 'idle-1', 1],
        ['bus.silent', 'gone-1', 1],
      ];
      for (const [kind, subject, n] of once) assert.equal((await events(kind, subject)).length, n, `${kind} ${subject}`);
      assert.equal((await events('bus.tls-failures')).length, 1);
      assert.equal((await events('bus.topic-scan')).length, 2, 'no one else scanned');
      assert.equal((await events('bus.revoked-certificate')).length, 2);
      assert.equal((await events('bus.idle-connected', svc.config.brokers.clientCn)).length, 0, "the service's own sessions only listen");
      assert.equal((await events('bus.connect-flood,bus.undeliverable')).length, 0);
      await fleetCarriesOn('at the end');
    });

    it("the posture's Detect rows on the bus are measured (met: watched now, every active device seen, no gap open); undeliverable stays not observed (Mosquitto cannot say)", async () => {
      const res = await api.get('/v1/posture').query({ fresh: true }).set(auth());
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const detect = (res.body.outcomes as { function: string; subcategory: string; status: string; evidence: string }[]).filter(
        (o) => o.function === 'detect',
      );
      const row = (name: string) => {
        const o = detect.find((x) => x.subcategory.startsWith(name));
        assert.ok(o, `${name} in ${JSON.stringify(detect.map((x) => x.subcategory))}`);
        return o;
      };
      for (const [name, rules] of [
        ['Repeated connection attempts', ['bus-reconnect-loop', 'bus-client-id-two-sources']],
        ['Abnormal termination of connections', ['bus-abnormal-terminations']],
        ['Client availability verification', ['bus-silent']],
        ['Topic scanning', ['bus-topic-scan']],
        ['Clients that connect but do not send data', ['bus-idle-connected']],
      ] as const) {
        const o = row(name);
        assert.doesNotMatch(o.evidence, /not observed/, `${name}: ${o.evidence}`);
        assert.equal(o.status, 'met', `${name}: ${o.evidence}`);
        for (const rule of rules) assert.match(o.evidence, new RegExp(`${rule}: `), `${name}: ${o.evidence}`);
        assert.match(o.evidence, /100\.0 % of active devices seen in 24 h on mosquitto/);
      }
      assert.match(row('Topic scanning').evidence, /→ block-client, open-incident; 2 raised in 24 h/);
      assert.match(
        row('Repeated authentication attempts').evidence,
        /at the broker: bus-tls-failures: .*bus-revoked-certificate: .*3 raised in 24 h/,
      );
      const undeliverable = row('Sending undeliverable messages');
      assert.equal(undeliverable.status, 'unmet');
      assert.match(undeliverable.evidence, /^not observed: bus-undeliverable: undeliverable is not observed \(Mosquitto 2\.0 logs no line/);
      assert.equal(undeliverable.evidence.split('logs no line').length, 2, `said once: ${undeliverable.evidence}`);

      const bus = res.body.figures.bus;
      assert.deepEqual(
        bus.brokers.map((b: { broker: string; watchedNow: boolean }) => [b.broker, b.watchedNow]),
        [['mosquitto', true]],
      );
      assert.deepEqual(
        bus.coverage,
        { activeSeen24h: 8, active: 8, share: 1 },
        'every active device (the revoked and suspended ones are not) seen',
      );
      assert.deepEqual(
        bus.rules.filter((r: { observed: boolean }) => !r.observed).map((r: { rule: string }) => r.rule),
        ['bus-undeliverable'],
      );
      assert.equal(bus.gaps24h.filter((g: { to: string | null }) => g.to === null).length, 0, JSON.stringify(bus.gaps24h));
      assert.ok(bus.lag24h.count >= 8, `the time from act to event, over the events with a broker time: ${JSON.stringify(bus.lag24h)}`);
    });
  },
);
