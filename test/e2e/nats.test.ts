// NATS 2.9 (MQTT listener) configured only from `broker-setup --broker nats`, enforcing what this CA
// decides through the NATS connector: the allowlist of identities (NATS checks no client revocation),
// its reloads for revocations and the incident actions, and OCSP stapling of its own certificate
// (`ocsp { mode: always }`), which shuts the server down once that certificate is revoked.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { postgresTarget } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { connectDevice, enrollDevice, type DeviceCredentials } from '../helpers/mosquitto-tls.js';
import {
  NATS_SERVER,
  natsConnectorEnv,
  natsDir,
  natsPorts,
  startNats,
  writeNatsSetup,
  type NatsPorts,
  type NatsServer,
} from '../helpers/nats.js';
import { runAsync, tempDir } from '../helpers/openssl.js';
import { freePort, until } from '../helpers/processes.js';
import { toolSkip } from '../helpers/tools.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { NatsConnector } from '../../src/broker/nats-connector.js';
import { deviceUri } from '../../src/ca/profiles.js';
import type { Role } from '../../src/access/api-keys.js';

const target = postgresTarget;
const CLI = join(import.meta.dirname, '../../src/cli.ts');

describe('NATS 2.9 from broker-setup, kept by its connector', { skip: target.skip ?? toolSkip('nats-server') }, () => {
  const dir = natsDir();
  let ports: NatsPorts;
  let svc: Awaited<ReturnType<typeof makeApiService>>['svc'];
  let api: Awaited<ReturnType<typeof makeApiService>>['api'];
  let keys: Record<Role, string>;
  let http: Server;
  let nats: NatsServer;
  let brokerSerial: string;
  const clients: MqttClient[] = [];
  const creds = new Map<string, DeviceCredentials>();

  const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
  /** mqtt.js over TLS with the device's certificate; NATS 2.9 speaks MQTT 3.1.1. */
  const connect = async (id: string) => {
    const c = await connectDevice(nats, creds.get(id)!, { protocolVersion: 4 });
    clients.push(c);
    return c;
  };
  /**
   * Connects again with a client id whose session NATS just closed: NATS 2.9 refuses it ("other session with client id
   * ... is in the process of connecting") while it still tears the old session down in JetStream; a device retries.
   */
  const reconnect = (id: string) => until(`${id} to connect again`, () => connect(id).catch(() => false as const), 30_000);
  const closed = (c: MqttClient) => new Promise<number>((resolve) => c.once('close', () => resolve(Date.now())));
  /** Refused for its identity (NATS logs an authentication error for it), not for anything else. */
  const refused = async (id: string) => {
    const authErrors = () => nats.output().split(`"${id}" - authentication error`).length;
    const seen = authErrors();
    await assert.rejects(connect(id), /Not authorized|not authori[sz]ed|closed the connection/i);
    await until(`NATS to log the authentication error of ${id}`, async () => authErrors() > seen, 10_000);
  };

  /** What /connz?auth=true says of an identity's sessions (the broker's own view). */
  const sessionsOf = async (id: string) => {
    const connz = (await (await fetch(`${nats.monitorUrl}/connz?auth=true&limit=1024`)).json()) as {
      connections: { authorized_user?: string; mqtt_client?: string }[];
    };
    return connz.connections.filter((c) => c.authorized_user === deviceUri(id)).map((c) => c.mqtt_client);
  };
  const connector = () => svc.brokers.get('nats') as NatsConnector;
  const enroll = async (id: string) => {
    creds.set(id, await enrollDevice(svc, id));
  };
  /** The allowlist holds the device (the periodic sync, or this one at once). */
  const admitted = async (id: string) => {
    await connector().sync();
    assert.match(readFileSync(nats.usersFile, 'utf8'), new RegExp(`"${deviceUri(id)}"`));
  };

  before(async () => {
    ports = await natsPorts();
    const httpPort = await freePort();
    // NATS fetches its OCSP answers from this service: PUBLIC_URL is where it listens.
    ({ svc, api, keys } = await makeApiService(target, {
      env: {
        PUBLIC_URL: `http://127.0.0.1:${httpPort}`,
        OCSP_BROKER_VALIDITY_MINUTES: '1',
        ...natsConnectorEnv(dir, ports, 1),
      },
    }));
    http = createServer(createHttpHandler(svc));
    await new Promise<void>((r) => http.listen(httpPort, '127.0.0.1', r));
    await writeNatsSetup(svc, dir, ports);
    brokerSerial = /serial (\w+)/.exec(readFileSync(join(dir, 'README.txt'), 'utf8'))![1]!;
    nats = await startNats(dir, ports);
  });

  after(async () => {
    if (process.env.NATS_TEST_LOG) console.log(nats?.output());
    for (const c of clients) c.end(true);
    await nats?.stop();
    await new Promise<void>((r) => (http ? http.close(() => r()) : r()));
    await (svc as (Service & { dispose(): Promise<void> }) | undefined)?.dispose();
  });

  it('broker-setup writes nats.conf: root-first ca_file, verify_and_map, the users include, OCSP stapling, JetStream, monitoring', async () => {
    const conf = readFileSync(join(dir, 'nats.conf'), 'utf8');
    assert.match(conf, /^server_name: /m);
    assert.match(conf, /jetstream \{ store_dir: /);
    assert.match(conf, /verify_and_map: true/);
    assert.match(conf, /ocsp \{ mode: always/);
    assert.match(conf, /include "nats-users.conf"/);
    assert.match(conf, /\$MQTT\.sub\.>|"\$JS\.>"/);
    // The last certificate of ca.pem is the broker certificate's issuer (NATS's OCSP issuer); openssl agrees.
    const ca = readFileSync(join(dir, 'ca.pem'), 'utf8').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/g)!;
    const issuer = await runAsync('openssl', ['x509', '-noout', '-subject'], ca.at(-1)!);
    const leafIssuer = await runAsync('openssl', ['x509', '-noout', '-issuer', '-in', join(dir, 'broker.pem')]);
    assert.equal(issuer.stdout.replace('subject=', '').trim(), leafIssuer.stdout.replace('issuer=', '').trim());
    // NATS fetched a good OCSP answer for its certificate from this service (its own log says so), to staple on its client port.
    assert.match(nats.output(), /Found OCSP status for client certificate at '[^']+': good, next update/i);
    assert.match(readFileSync(join(dir, 'README.txt'), 'utf8'), /checks NO revocation of client certificates/);
  });

  it('a device with an active certificate publishes and a subscriber receives; one not in the allowlist is refused', async () => {
    await enroll('nats-pub');
    await enroll('nats-sub');
    await admitted('nats-pub');
    await admitted('nats-sub');
    const sub = await connect('nats-sub');
    await sub.subscribeAsync('fleet/#', { qos: 1 });
    const got = new Promise<{ topic: string; body: string }>((resolve) =>
      sub.once('message', (topic, body) => resolve({ topic, body: body.toString() })),
    );
    const pub = await connect('nats-pub');
    await pub.publishAsync('fleet/nats-pub/temp', '21.5', { qos: 1 });
    assert.deepEqual(await got, { topic: 'fleet/nats-pub/temp', body: '21.5' });
    assert.deepEqual(await sessionsOf('nats-pub'), ['nats-pub']);
    // A certificate from this CA is not enough: one whose identity is not in the allowlist (the broker's own, CN=localhost) is refused.
    await assert.rejects(
      connectDevice(
        nats,
        {
          deviceId: 'not-listed',
          serial: brokerSerial,
          key: readFileSync(join(dir, 'broker.key'), 'utf8'),
          cert: readFileSync(join(dir, 'broker.pem'), 'utf8'),
          ca: creds.get('nats-pub')!.ca,
        },
        { protocolVersion: 4 },
      ),
      /Not authorized|closed the connection/i,
    );
    await until('NATS to log the refusal', async () => /"not-listed" - authentication error/.test(nats.output()), 10_000);
  });

  it('a revocation reaches NATS: the live session ends and the next connection is refused', async () => {
    await enroll('nats-rev');
    await admitted('nats-rev');
    const c = await connect('nats-rev');
    const end = closed(c);
    const t0 = Date.now();
    await svc.revocations.revoke(creds.get('nats-rev')!.serial as never, { reason: 'keyCompromise' }, { actor: 'test' });
    const revokedAt = Date.now();
    const endedAt = await end;
    await refused('nats-rev');
    const refusedAt = Date.now();
    assert.deepEqual(await sessionsOf('nats-rev'), []);
    assert.doesNotMatch(readFileSync(nats.usersFile, 'utf8'), new RegExp(deviceUri('nats-rev')));
    console.log(
      `NATS: revoke call ${revokedAt - t0} ms (allowlist written and reload seen); session ended ${endedAt - t0} ms, next connection refused ${refusedAt - t0} ms after the revoke`,
    );
  });

  it('the incident actions: block ends the session and keeps the device out (across a restart of the connector), unblock lets it back, disconnect only ends the session', async () => {
    await enroll('nats-blk');
    await admitted('nats-blk');
    const inc = (
      await api
        .post('/v1/incidents')
        .set(auth('operator'))
        .send({ kind: 'device-compromise', title: 'nats device', targets: { devices: ['nats-blk'] } })
        .expect(201)
    ).body.id as string;
    const act = async (action: string) =>
      (await api.post(`/v1/incidents/${inc}/actions`).set(auth('operator')).send({ action }).expect(201)).body as {
        status: string;
        error: string | null;
        result: { connectors: { connector: string; effects: { clientId: string; confirmed: boolean; sessionsEnded?: string[] }[] }[] };
      };

    const c = await connect('nats-blk');
    const end = closed(c);
    const t0 = Date.now();
    const blocked = await act('block');
    assert.equal(blocked.status, 'succeeded', blocked.error ?? '');
    const effect = blocked.result.connectors.find((r) => r.connector === 'nats')!.effects[0]!;
    assert.equal(effect.confirmed, true);
    assert.deepEqual(effect.sessionsEnded, ['nats-blk']);
    const endedAt = await end;
    await refused('nats-blk');
    console.log(`NATS: block confirmed ${Date.now() - t0} ms, session ended ${endedAt - t0} ms after the action`);
    // The block list is kept beside the users file; the periodic sync (another connector, as after a restart) keeps it out.
    assert.deepEqual(JSON.parse(readFileSync(`${nats.usersFile}.blocked.json`, 'utf8')), { blocked: ['nats-blk'] });
    const again = new NatsConnector({
      usersFile: nats.usersFile,
      reload: { pidFile: nats.pidFile },
      monitorUrl: nats.monitorUrl,
      identity: deviceUri,
      activeDevices: () => Promise.resolve(['nats-blk', 'nats-pub', 'nats-sub', 'nats-late']),
    });
    await again.sync();
    await again.close();
    assert.doesNotMatch(readFileSync(nats.usersFile, 'utf8'), new RegExp(deviceUri('nats-blk')));
    await refused('nats-blk');

    const unblocked = await act('unblock');
    assert.equal(unblocked.status, 'succeeded', unblocked.error ?? '');
    const back = await reconnect('nats-blk');
    assert.ok(back.connected);

    const gone = closed(back);
    const kicked = await act('disconnect');
    assert.equal(kicked.status, 'succeeded', kicked.error ?? '');
    await gone;
    assert.deepEqual(kicked.result.connectors[0]!.effects[0]!.sessionsEnded, ['nats-blk']);
    (await reconnect('nats-blk')).end(true);
  });

  it('notify is reported not applied: the connector has no NATS identity to publish with', async () => {
    const r = await svc.brokers.notify({ kind: 'broker.quarantined', subject: 'b1' });
    const e = r.results.find((x) => x.connector === 'nats')!.effects[0]!;
    assert.equal(e.applied, false);
    assert.match(e.detail!, /no NATS or MQTT identity/);
  });

  it('with ocsp { mode: always } and 1-minute broker OCSP answers, NATS shuts down after its own certificate is revoked', async () => {
    const t0 = Date.now();
    await svc.revocations.revoke(brokerSerial as never, { reason: 'keyCompromise' }, { actor: 'test' });
    // It re-checks at half the remaining validity (about 30 s here); a generous bound, not a timing assertion.
    const exit = await until(
      'nats-server to exit',
      async () => Promise.race([nats.exited, new Promise<false>((r) => setTimeout(() => r(false), 500))]),
      180_000,
    );
    console.log(`NATS: shut down ${exit.at - t0} ms after its certificate was revoked (exit ${exit.code ?? exit.signal})`);
    console.log(
      nats
        .output()
        .split('\n')
        .filter((l) => /OCSP|revoked|shut/i.test(l))
        .slice(-5)
        .join('\n'),
    );
    assert.match(nats.output(), /revoked/i);
  });
});

describe('mqtt-ca broker-setup --broker nats', { skip: toolSkip('nats-server') }, () => {
  it('writes a nats.conf that nats-server accepts, with the users file beside it and the README of what NATS checks', async () => {
    const env = {
      ...process.env,
      DATA_DIR: tempDir(),
      MQTT_CA_KEK: Buffer.alloc(32, 9).toString('base64'),
      LOG_LEVEL: 'silent',
      DATABASE_URL: '',
    };
    const cli = (args: string[]) =>
      new Promise<{ status: number | null; out: string }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { env });
        let o = '';
        child.stdout.on('data', (c: Buffer) => (o += c));
        child.stderr.on('data', (c: Buffer) => (o += c));
        child.on('close', (status) => resolve({ status, out: o }));
      });
    assert.equal((await cli(['init'])).status, 0);
    const out = join(tempDir(), 'nats');
    const r = await cli(['broker-setup', '--broker', 'nats', '--dir', out, '--port', '8883', '--dns', 'nats.example']);
    assert.equal(r.status, 0, r.out);
    for (const f of ['nats.conf', 'nats-users.conf', 'ca.pem', 'crl.pem', 'broker.pem', 'broker.key', 'README.txt'])
      assert.match(r.out, new RegExp(`wrote ${join(out, f)}`));
    // nats-server's own configuration check (-t): it parses the file, the include and the TLS files.
    const t = await runAsync(NATS_SERVER, ['-t', '-c', join(out, 'nats.conf')]);
    assert.match(t.stdout + t.stderr, /configuration file .* is valid/, t.stdout + t.stderr);
    const users = readFileSync(join(out, 'nats-users.conf'), 'utf8');
    assert.match(users, /user: "urn:mqtt-ca:nobody"/);
    assert.doesNotMatch(users, /urn:mqtt-ca:device:/);
    const readme = readFileSync(join(out, 'README.txt'), 'utf8');
    assert.match(readme, /BROKER_NATS_USERS_FILE=/);
    assert.match(readme, /nats-server --signal reload=/);
  });
});
