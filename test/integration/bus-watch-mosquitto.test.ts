// The bus watch for real, wired as the service wires it (BROKER_MQTT_URL and BUS_WATCH_LOG_FILE):
// a private Mosquitto 2.0 with mutual TLS and dynsec logging to $SYS/broker/log and to a file with
// `log_type all`; devices with certificates from the service. The watch carries a device's identity
// over its session, sees denials and publishes in the file, records a gap when the broker restarts
// and sees again after it, follows the file through truncation and rotation, and drops garbage.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { appendFileSync, renameSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { tempDir } from '../helpers/openssl.js';
import { freePort, until } from '../helpers/processes.js';
import { toolSkip } from '../helpers/tools.js';
import {
  connectDevice,
  enrollDevice,
  fleetSeed,
  startMosquittoTls,
  type DeviceCredentials,
  type MosquittoTls,
} from '../helpers/mosquitto-tls.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import type { BusEvent, SourceStatus, WatchedBusEvent } from '../../src/broker/bus-events.js';
import { MosquittoLogSource } from '../../src/broker/mosquitto-log-source.js';
import type { BusWatchSourceStatus } from '../../src/detect/bus-watch.js';

const pglite = dbTargets.find((t) => t.name === 'pglite')!;

describe('bus watch on a real Mosquitto ($SYS log and log file)', { skip: toolSkip('mosquitto') }, () => {
  let svc: Service & { dispose(): Promise<void> };
  let api: ReturnType<typeof request>;
  let keys: Record<Role, string>;
  let broker: MosquittoTls;
  let logFile: string;
  const seen: WatchedBusEvent[] = [];
  const devices: Record<string, DeviceCredentials> = {};
  const open: MqttClient[] = [];

  const watched = <K extends WatchedBusEvent['event']['kind']>(
    what: string,
    kind: K,
    match: (e: Extract<WatchedBusEvent['event'], { kind: K }>, w: WatchedBusEvent) => boolean,
    timeoutMs = 10_000,
  ) => until(what, async () => seen.find((w) => w.event.kind === kind && match(w.event as never, w)), timeoutMs);
  const source = async (kind: string): Promise<BusWatchSourceStatus> => (await svc.busWatch.status()).sources.find((s) => s.kind === kind)!;

  before(async () => {
    const port = await freePort();
    logFile = join(tempDir(), 'mosquitto.log');
    ({ svc, api, keys } = await makeApiService(pglite, {
      env: { BROKER_MQTT_URL: `mqtts://localhost:${port}`, BUS_WATCH_LOG_FILE: logFile, BROKER_TIMEOUT_SECONDS: '5' },
    }));
    for (const id of ['meter-1', 'meter-2', 'meter-3']) devices[id] = await enrollDevice(svc, id);
    broker = await startMosquittoTls(svc, {
      port,
      conf: [`log_dest file ${logFile}`],
      seed: fleetSeed(['meter-1', 'meter-2', 'meter-3'], { rolename: 'meter' }),
    });
    svc.busWatch.addObserver({ observe: (w) => seen.push(w) });
    await svc.busWatch.start();
  });

  after(async () => {
    for (const c of open) c.end(true);
    await svc?.dispose();
    await broker?.stop();
  });

  it("both sources up, wired from the configuration: the log file (broker mosquitto) first, then the connector's $SYS log", async () => {
    const st = await svc.busWatch.status();
    assert.deepEqual(
      st.sources.map((s) => [s.broker, s.kind, s.up]),
      [
        ['mosquitto', 'mosquitto-log-file', true],
        ['mosquitto', 'mosquitto-sys-log', true],
      ],
    );
    assert.equal(st.sources[1]!.observes.publish.observed, false);
    assert.equal(st.sources[0]!.observes.publish.observed, true);
  });

  it("a device's identity (its certificate CN) carried from its connect to its subscribe, publish, denials and disconnect", async () => {
    const m = await connectDevice(broker, devices['meter-1']!, { clientId: 'm1-session' });
    open.push(m);
    const c = await watched('the connect', 'connect', (e) => e.clientId === 'm1-session');
    assert.equal(c.identity, 'meter-1');
    await m.subscribeAsync('fleet/meter-1/cmd', { qos: 1 });
    await m.publishAsync('fleet/meter-1/data', 'hello', { qos: 1 });
    await assert.rejects(m.subscribeAsync('#', { qos: 0 }));
    await m.publishAsync('secret/x', 'x', { qos: 1 }).catch(() => undefined);
    const s = await watched('the subscribe', 'subscribe', (e) => e.clientId === 'm1-session');
    assert.equal(s.identity, 'meter-1');
    const p = await watched('the publish', 'publish', (e) => e.clientId === 'm1-session' && e.topic === 'fleet/meter-1/data');
    assert.equal(p.identity, 'meter-1');
    assert.equal((p.event as { bytes: number }).bytes, 5);
    const denied = await watched('the denied subscribe to #', 'acl-denied', (e) => e.clientId === 'm1-session' && e.topic === '#');
    assert.equal(denied.identity, 'meter-1');
    assert.equal((denied.event as { action: string }).action, 'subscribe');
    await watched(
      'the denied publish',
      'acl-denied',
      (e) => e.clientId === 'm1-session' && e.topic === 'secret/x' && e.action === 'publish',
    );
    await m.endAsync();
    const d = await watched('the disconnect', 'disconnect', (e) => e.clientId === 'm1-session');
    assert.equal(d.identity, 'meter-1');
    assert.equal(svc.busWatch.identityOf('mosquitto', 'm1-session'), undefined, 'forgotten at disconnect');
    // Each event once: the $SYS source's copies of what the file delivers are not handed on.
    assert.equal(seen.filter((w) => w.event.kind === 'connect' && w.event.clientId === 'm1-session').length, 1);
    await until('the $SYS source saw its copy', async () => (await source('mosquitto-sys-log')).duplicates > 0, 10_000);
  });

  it('GET /v1/bus/watch: per source, up, events and drops per kind, what it observes, gaps; operator and auditor read it', async () => {
    for (const role of ['auditor', 'operator', 'admin'] as const) {
      const res = await api.get('/v1/bus/watch').set('Authorization', `Bearer ${keys[role]}`);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const file = res.body.sources.find((s: { kind: string }) => s.kind === 'mosquitto-log-file');
      assert.equal(file.up, true);
      assert.ok(file.events.connect >= 1);
      assert.ok(file.events['acl-denied'] >= 2);
      assert.equal(file.observes['acl-denied'].observed, true);
      const sys = res.body.sources.find((s: { kind: string }) => s.kind === 'mosquitto-sys-log');
      assert.match(sys.observes.publish.why, /debug/);
    }
    const refused = await api.get('/v1/bus/watch').set('Authorization', `Bearer ${keys.provisioner}`);
    assert.equal(refused.status, 403);
    assert.equal((await api.get('/v1/bus/watch')).status, 401);
  });

  it('garbage lines in the file are dropped and counted; the file source carries on', async () => {
    const before = (await source('mosquitto-log-file')).dropped;
    appendFileSync(
      logFile,
      Buffer.concat([Buffer.from('\xff\xfe not utf-8\n', 'latin1'), Buffer.from('1765000000: Client \u0001 evil\n')]),
    );
    appendFileSync(logFile, `${'x'.repeat(600_000)}\n`);
    appendFileSync(logFile, 'no timestamp at all\n1765000000: New client connected from 1.2.3.4:5 as\n');
    const m = await connectDevice(broker, devices['meter-2']!, { clientId: 'm2-after-garbage' });
    open.push(m);
    await watched('a connect after the garbage', 'connect', (e) => e.clientId === 'm2-after-garbage');
    const after = (await source('mosquitto-log-file')).dropped;
    for (const reason of ['invalid-utf8', 'control-characters', 'too-long', 'no-timestamp', 'malformed'])
      assert.ok((after[reason] ?? 0) > (before[reason] ?? 0), `${reason}: ${JSON.stringify(after)}`);
    await m.endAsync();
  });

  it('a truncated log file is read again from its start; a rotated one (renamed, the broker reopens on SIGHUP) too', async () => {
    truncateSync(logFile, 0);
    await new Promise((r) => setTimeout(r, 600));
    const a = await connectDevice(broker, devices['meter-3']!, { clientId: 'after-truncate' });
    open.push(a);
    await watched('a connect after the truncation', 'connect', (e) => e.clientId === 'after-truncate');
    await a.endAsync();
    renameSync(logFile, `${logFile}.1`);
    const b = await connectDevice(broker, devices['meter-3']!, { clientId: 'while-renamed' });
    open.push(b);
    await watched('a connect written to the renamed file', 'connect', (e) => e.clientId === 'while-renamed');
    await b.endAsync();
    await broker.reloadCrl(); // SIGHUP: the broker reopens its log file
    const c = await connectDevice(broker, devices['meter-3']!, { clientId: 'after-rotation' });
    open.push(c);
    const w = await watched('a connect in the new file', 'connect', (e) => e.clientId === 'after-rotation');
    assert.equal(w.identity, 'meter-3');
    const file = await source('mosquitto-log-file');
    assert.equal(file.up, true);
    assert.equal(file.gaps.filter((g) => g.why !== 'watch-starting').length, 0, 'no gap: nothing was missed');
    await c.endAsync();
  });

  it('the broker restarting: the $SYS source goes down, a gap from..to is recorded, and the watch sees events after it', async () => {
    const m = await connectDevice(broker, devices['meter-1']!, { clientId: 'before-restart', reconnectPeriod: 0 });
    m.on('error', () => undefined);
    await watched('a connect before the restart', 'connect', (e) => e.clientId === 'before-restart');
    // A source of the test's own beside the service's: it reads the connector's credentials for every connection.
    const id = await svc.identities.ensure('broker-connector');
    let credentialReads = 0;
    const own = new MosquittoLogSource({
      broker: 'mosquitto',
      url: broker.url,
      tls: async () => (credentialReads++, { key: id.key, cert: id.cert, ca: broker.caPem }),
      reconnect: { minMs: 200, maxMs: 1_000 },
    });
    const statuses: SourceStatus[] = [];
    own.onStatus((s) => statuses.push(s));
    const ownEvents: BusEvent[] = [];
    await own.start((e) => ownEvents.push(e));
    await broker.stop();
    const down = await until(
      'the $SYS source down',
      async () => {
        const s = await source('mosquitto-sys-log');
        return !s.up && s;
      },
      15_000,
    );
    assert.ok(down.why === 'broker-down' || down.why === 'session-dropped', down.why);
    assert.equal(svc.busWatch.identityOf('mosquitto', 'before-restart'), 'meter-1');
    await new Promise((r) => setTimeout(r, 1_000));
    await broker.start();
    const up = await until(
      'the $SYS source up again',
      async () => {
        const s = await source('mosquitto-sys-log');
        return s.up && s;
      },
      30_000,
    );
    const gap = up.gaps.find((g) => g.source === 'mosquitto-sys-log' && g.why !== 'watch-starting');
    assert.ok(gap, JSON.stringify(up.gaps));
    assert.ok(gap.to && gap.to.getTime() - gap.from.getTime() >= 900, `${gap.from.toISOString()}..${gap.to?.toISOString()}`);
    assert.equal(gap.why, 'broker-down');
    assert.equal(svc.busWatch.identityOf('mosquitto', 'before-restart'), undefined, 'sessions forgotten: the broker restarted');
    // Written to the database.
    const rows = await svc.db('bus_watch_gaps').where({ id: gap.id }).select('to_at');
    assert.ok(rows[0]?.to_at);
    await until('the own source back', async () => statuses.at(-1)?.up === true, 15_000);
    assert.equal(statuses[0]!.up, false);
    assert.ok(credentialReads >= 2, 'the credentials were read again to reconnect');
    assert.equal(own.connections, 2);
    const after = await connectDevice(broker, devices['meter-2']!, { clientId: 'after-restart' });
    open.push(after);
    const c = await watched('a connect after the restart', 'connect', (e) => e.clientId === 'after-restart');
    assert.equal(c.identity, 'meter-2');
    assert.ok((await source('mosquitto-sys-log')).events.connect! >= 2);
    await until(
      'the own source re-subscribed',
      async () => ownEvents.some((e) => e.kind === 'connect' && e.clientId === 'after-restart'),
      10_000,
    );
    await own.stop();
  });
});
