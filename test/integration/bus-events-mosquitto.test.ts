// The Mosquitto bus event source for real: a private Mosquitto 2.0 with mutual TLS and dynsec, its
// mosquitto.conf from broker-setup with only the log types broker-setup names (no `log_type all`),
// devices with certificates enrolled from mqtt-ca doing each thing on mqtt.js, mosquitto_sub and raw
// sockets; the source, logged in with the connector's certificate, yields the typed events.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { MqttClient } from 'mqtt';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { writeTemp } from '../helpers/openssl.js';
import { until } from '../helpers/processes.js';
import { toolSkip } from '../helpers/tools.js';
import {
  connectDevice,
  enrollDevice,
  fleetSeed,
  startMosquittoTls,
  type DeviceCredentials,
  type MosquittoTls,
} from '../helpers/mosquitto-tls.js';
import { bootstrap } from '../../src/bootstrap.js';
import type { Service } from '../../src/main.js';
import type { BusEvent } from '../../src/broker/bus-events.js';
import { MosquittoLogSource } from '../../src/broker/mosquitto-log-source.js';

const pglite = dbTargets.find((t) => t.name === 'pglite')!;

/** An MQTT 3.1.1 CONNECT with a client id and keep-alive, nothing else. */
function connectPacket(clientId: string, keepAlive: number): Buffer {
  const id = Buffer.from(clientId);
  const body = Buffer.concat([
    Buffer.from([0, 4, ...Buffer.from('MQTT'), 4, 0x02, keepAlive >> 8, keepAlive & 255, id.length >> 8, id.length & 255]),
    id,
  ]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

describe(
  'Mosquitto bus events from $SYS/broker/log (real broker, mutual TLS)',
  { skip: toolSkip('mosquitto') ?? toolSkip('mosquitto_sub') },
  () => {
    let svc: Service & { dispose(): Promise<void> };
    let broker: MosquittoTls;
    let source: MosquittoLogSource;
    const events: BusEvent[] = [];
    const devices: Record<string, DeviceCredentials> = {};
    const open: MqttClient[] = [];
    const rawTls = (creds: DeviceCredentials): Promise<TLSSocket> =>
      new Promise((resolve, reject) => {
        const s = tlsConnect({
          host: '127.0.0.1',
          port: broker.port,
          servername: 'localhost',
          key: creds.key,
          cert: creds.cert,
          ca: creds.ca,
        });
        s.once('secureConnect', () => resolve(s));
        s.once('error', reject);
      });
    const closed = (s: TLSSocket) => new Promise<void>((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())));
    const seen = <K extends BusEvent['kind']>(what: string, kind: K, match: (e: Extract<BusEvent, { kind: K }>) => boolean) =>
      until(what, async () => events.find((e): e is Extract<BusEvent, { kind: K }> => e.kind === kind && match(e as never)), 10_000);

    before(async () => {
      svc = await makeService(pglite, {});
      await bootstrap(svc);
      for (const id of ['meter-1', 'meter-2', 'meter-3', 'meter-4']) devices[id] = await enrollDevice(svc, id);
      broker = await startMosquittoTls(svc, {
        logTypeAll: false,
        seed: fleetSeed(['meter-1', 'meter-2', 'meter-3', 'meter-4'], { rolename: 'meter' }),
      });
      const id = await svc.identities.ensure('broker-connector');
      source = new MosquittoLogSource({
        broker: 'mosquitto',
        url: broker.url,
        tls: async () => ({ key: id.key, cert: id.cert, ca: broker.caPem }),
      });
      await source.start((e) => events.push(e));
    });

    after(async () => {
      for (const c of open) c.end(true);
      await source?.stop();
      await broker?.stop();
      await svc?.dispose();
    });

    it('a device connecting with its certificate: client id, CN, source, protocol, clean start and keep-alive; subscribe, unsubscribe, clean disconnect', async () => {
      const m1 = await connectDevice(broker, devices['meter-1']!, { keepalive: 45 });
      open.push(m1);
      const c = await seen('meter-1 connected', 'connect', (e) => e.clientId === 'meter-1');
      assert.equal(c.username, 'meter-1', 'the certificate CN, as the username');
      assert.equal(c.source.host, '127.0.0.1');
      assert.ok(c.source.port && c.source.port > 0);
      assert.equal(c.protocol, 'mqtt5');
      assert.equal(c.cleanStart, true);
      assert.equal(c.keepAliveSeconds, 45);
      assert.equal(c.broker, 'mosquitto');
      assert.ok(Math.abs(c.at.getTime() - Date.now()) < 60_000, 'the broker time');

      await m1.subscribeAsync('fleet/meter-1/cmd', { qos: 1 });
      await seen('the subscribe', 'subscribe', (e) => e.clientId === 'meter-1' && e.topic === 'fleet/meter-1/cmd' && e.qos === 1);
      await m1.unsubscribeAsync('fleet/meter-1/cmd');
      await seen('the unsubscribe', 'unsubscribe', (e) => e.clientId === 'meter-1' && e.topic === 'fleet/meter-1/cmd');
      await m1.endAsync();
      const d = await seen('the disconnect', 'disconnect', (e) => e.clientId === 'meter-1');
      assert.equal(d.reason, 'client');
      assert.deepEqual(d.source, c.source);
    });

    it('disconnect reasons: a client id taken over, a killed client, a keep-alive timeout, garbage instead of MQTT', async () => {
      const first = await connectDevice(broker, devices['meter-2']!, { protocolVersion: 4 });
      open.push(first);
      const firstConnect = await seen('meter-2 connected', 'connect', (e) => e.clientId === 'meter-2');
      open.push(await connectDevice(broker, devices['meter-2']!));
      const over = await seen('the take-over', 'disconnect', (e) => e.clientId === 'meter-2');
      assert.equal(over.reason, 'taken-over');
      assert.deepEqual(over.source, firstConnect.source, 'the old session ended, with its source');
      assert.equal(firstConnect.protocol, 'mqtt3.1.1');

      // mosquitto_sub killed with SIGKILL: its socket closes without DISCONNECT.
      const creds = devices['meter-3']!;
      const cert = writeTemp(broker.dir, 'meter-3.pem', creds.cert);
      const key = writeTemp(broker.dir, 'meter-3.key', creds.key);
      const ca = writeTemp(broker.dir, 'meter-3-ca.pem', creds.ca);
      const sub = spawn('mosquitto_sub', [
        '-h',
        'localhost',
        '-p',
        String(broker.port),
        '--cafile',
        ca,
        '--cert',
        cert,
        '--key',
        key,
        '-i',
        'meter-3',
        '-t',
        'fleet/x',
      ]);
      await seen('mosquitto_sub connected', 'subscribe', (e) => e.clientId === 'meter-3');
      sub.kill('SIGKILL');
      const lost = await seen('the killed client', 'disconnect', (e) => e.clientId === 'meter-3');
      assert.equal(lost.reason, 'connection-lost');

      // CONNECT with a keep-alive of 1 s, then silence: the broker ends it after 1.5 x keep-alive.
      const idle = await rawTls(devices['meter-4']!);
      idle.on('data', () => undefined);
      idle.write(connectPacket('meter-idle', 1));
      const gone = await seen('the keep-alive timeout', 'disconnect', (e) => e.clientId === 'meter-idle');
      assert.equal(gone.reason, 'keepalive-timeout');
      await closed(idle);

      // Garbage instead of CONNECT: a protocol error before any client id, with the source port.
      const garbage = await rawTls(devices['meter-4']!);
      const port = garbage.localPort;
      garbage.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      const bad = await seen('the protocol error', 'disconnect', (e) => e.reason === 'protocol-error' && e.source?.port === port);
      assert.equal(bad.clientId, undefined);
      await closed(garbage);
    });

    it('a revoked certificate: a TLS failure with its source (Mosquitto does not say why it did not verify)', async () => {
      await svc.revocations.revoke(devices['meter-4']!.serial as never, { reason: 'keyCompromise' }, { actor: 'test' });
      await broker.reloadCrl();
      await assert.rejects(connectDevice(broker, devices['meter-4']!));
      const f = await seen('the TLS failure', 'tls-failure', () => true);
      assert.equal(f.failure, 'verify-failed');
      assert.equal(f.source?.host, '127.0.0.1');
      assert.match(f.detail, /certificate verify failed/);
    });

    it('says what it cannot see: ACL denials and publishes never reach $SYS in 2.0, and none is invented', async () => {
      assert.deepEqual(source.observes['acl-denied'].observed, false);
      assert.deepEqual(source.observes.publish.observed, false);
      const m1 = await connectDevice(broker, devices['meter-1']!, { clientId: 'meter-1-scan' });
      open.push(m1);
      await assert.rejects(m1.subscribeAsync('#', { qos: 0 }));
      await assert.rejects(m1.publishAsync('secret/x', 'x', { qos: 1 }));
      await m1.subscribeAsync('fleet/after', { qos: 0 });
      // The subscribe after them has arrived, so the log lines of the denials (had there been any) too.
      await seen('the later subscribe', 'subscribe', (e) => e.clientId === 'meter-1-scan' && e.topic === 'fleet/after');
      assert.deepEqual(
        events.filter((e) => 'clientId' in e && e.clientId === 'meter-1-scan').map((e) => e.kind),
        ['connect', 'subscribe'],
      );
      assert.deepEqual(source.dropped(), {});
    });
  },
);
