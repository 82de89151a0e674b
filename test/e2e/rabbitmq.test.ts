// Private RabbitMQ nodes configured only from `mqtt-ca broker-setup --broker rabbitmq` (one per CRL
// mode), with device and broker certificates from this CA, judged by mqtt.js clients: a valid device
// publishes and a subscriber receives; a revoked device is refused on its next connection (HTTP mode:
// Erlang fetches the CRLs from the service at each handshake; hash-dir mode: `crl-sync --hash-dir`
// keeps the directory); the incident's block ends a live session through the RabbitMQ connector and
// keeps the device out until unblock; with the CA away, the hash-dir node keeps letting valid devices
// in and revoked ones out, while the HTTP node refuses everyone. The time from revocation to refusal
// is printed, not asserted.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { pino } from 'pino';
import { postgresTarget, databaseUrlOf, disposeDb } from '../helpers/db.js';
import { enrollDevice, type DeviceCredentials } from '../helpers/mosquitto-tls.js';
import { freePort, until } from '../helpers/processes.js';
import { run, tempDir } from '../helpers/openssl.js';
import { connectRabbitDevice, startRabbitFromSetup, type RabbitNode } from '../helpers/rabbitmq.js';
import { envSkip, toolSkip } from '../helpers/tools.js';
import { loadConfig } from '../../src/config/config.js';
import { RabbitMqConnector } from '../../src/broker/rabbitmq-connector.js';
import { DomainError } from '../../src/shared/errors.js';
import { buildService, listen, type Service } from '../../src/main.js';
import type { Db } from '../../src/store/db.js';

const ROOT = join(import.meta.dirname, '../..');
const TSX = import.meta.resolve('tsx');
const CLI = join(ROOT, 'src/cli.ts');
const MODES = ['http', 'hash-dir'] as const;
type Mode = (typeof MODES)[number];

/** The CLI in a child process with its own environment, asynchronously (the service it talks to may run here). */
function cli(args: string[], env: Record<string, string>, timeoutMs = 120_000): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    const base = { ...process.env };
    delete base.REDIS_URL;
    const c = spawn(process.execPath, ['--import', TSX, CLI, ...args], { env: { ...base, LOG_LEVEL: 'warn', ...env } });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d));
    c.stderr.on('data', (d: Buffer) => (out += d));
    const t = setTimeout(() => c.kill(), timeoutMs);
    c.on('close', (status) => (clearTimeout(t), resolve({ status, out })));
  });
}

/** Whether a connection of the device is refused (resolves true) or accepted (false, and closed again). */
async function refused(node: RabbitNode, d: DeviceCredentials): Promise<boolean> {
  try {
    const c = await connectRabbitDevice(node, d, { connectTimeout: 8_000 });
    c.end(true);
    return false;
  } catch {
    return true;
  }
}

// One CRL per CA: with partitioned CRLs (CRL_SHARDS > 0) a hash-dir node missed revocations here, in
// whichever shard was not the last file of the issuer (docs/brokers/rabbitmq.md, "Partitioned CRLs").
const SHARDS = 0;
const ADMIN = { actor: 'test', keyId: 'test-key', name: 'test', role: 'admin' as const };

describe(
  'RabbitMQ from broker-setup: certificate logins, CRLs in both modes, the connector',
  { skip: envSkip('DATABASE_URL', 'the RabbitMQ test (broker-setup runs as a CLI beside the service) is') ?? toolSkip('erl') },
  () => {
    const kek = randomBytes(32).toString('base64');
    const dataDir = mkdtempSync(join(tmpdir(), 'mqttca-rabbit-'));
    let db: Db;
    let svc: Service;
    let server: Server | undefined;
    let publicUrl: string;
    let servicePort: number;
    const nodes = {} as Record<Mode, RabbitNode>;
    const setupDirs = {} as Record<Mode, string>;
    const devices = new Map<string, DeviceCredentials>();
    const clients: MqttClient[] = [];
    let crlSync: ChildProcess | undefined;
    // Partitioned CRLs: each device certificate names its shard's CRL, the hashed directory holds one file per shard.
    const cliEnv = () => ({
      DATABASE_URL: databaseUrlOf(db),
      MQTT_CA_KEK: kek,
      DATA_DIR: dataDir,
      PUBLIC_URL: publicUrl,
      CRL_SHARDS: String(SHARDS),
    });
    let crlFetches = 0;

    const startCrlSync = () => {
      const dir = setupDirs['hash-dir'];
      crlSync = spawn(
        process.execPath,
        [
          ...['--import', TSX, CLI, 'crl-sync', '--url', `${publicUrl}/pki/crl/bundle.pem`],
          ...['--hash-dir', join(dir, 'crls'), '--cafile', join(dir, 'ca.pem'), '--interval', '1'],
        ],
        { stdio: 'ignore' },
      );
    };
    const stopCrlSync = () => {
      crlSync?.kill();
      crlSync = undefined;
    };

    before(async () => {
      db = await postgresTarget.create();
      servicePort = await freePort();
      publicUrl = `http://127.0.0.1:${servicePort}`;
      const init = await cli(['init'], cliEnv());
      assert.equal(init.status, 0, init.out);
      // What an operator runs: one directory per node, each with its CRL mode and ports.
      for (const mode of MODES) {
        const dir = join(dataDir, `rabbitmq-${mode}`);
        setupDirs[mode] = dir;
        const r = await cli(
          [
            ...['broker-setup', '--broker', 'rabbitmq', '--dir', dir, '--dns', 'localhost', '--ip', '127.0.0.1'],
            ...['--port', String(await freePort()), '--management-port', String(await freePort()), '--crl-mode', mode],
          ],
          cliEnv(),
        );
        assert.equal(r.status, 0, r.out);
      }
      const started = await Promise.all(MODES.map((m) => startRabbitFromSetup(setupDirs[m])));
      MODES.forEach((m, i) => (nodes[m] = started[i]!));

      // The service, its connector on the hash-dir node as docs/brokers/rabbitmq.md sets it.
      const config = loadConfig({
        MQTT_CA_KEK: kek,
        DATA_DIR: dataDir,
        PUBLIC_URL: publicUrl,
        PORT: String(servicePort),
        CRL_SHARDS: String(SHARDS),
        LOG_LEVEL: 'silent',
        BROKER_RABBITMQ_URL: nodes['hash-dir'].managementUrl,
        BROKER_RABBITMQ_PASSWORD_FILE: join(setupDirs['hash-dir'], 'rabbitmq-connector.password'),
      });
      svc = await buildService(config, { db, logger: pino({ level: 'silent' }) });
      server = await listen(svc);
      server.on('request', (req: { url?: string }) => {
        if (req.url?.startsWith('/pki/crl/') && req.url.endsWith('.crl')) crlFetches++; // not crl-sync's bundle.pem
      });
      for (const id of ['meter-1', 'meter-2', 'meter-3', 'sub-1']) {
        devices.set(id, await enrollDevice(svc, id));
        for (const m of MODES) await nodes[m].addDevice(id);
      }
      startCrlSync();
      // As an operator runs it: crl-sync keeping the directory before devices come (its own copy of the bundle shows its first sync).
      await until(
        'crl-sync --hash-dir has synced once',
        async () => existsSync(join(setupDirs['hash-dir'], 'crls', '.mqtt-ca-bundle.pem')),
        60_000,
      );
    });

    after(async () => {
      stopCrlSync();
      for (const c of clients) c.end(true);
      await Promise.all(MODES.map((m) => nodes[m]?.stop()));
      server?.close();
      server?.closeAllConnections();
      await svc?.stop();
      if (db) await disposeDb(db);
    });

    it('broker-setup wrote the node’s whole configuration: rabbitmq.conf, advanced.config per mode, plugins, the hashed CRLs', () => {
      for (const m of MODES) {
        const adv = readFileSync(join(setupDirs[m], 'advanced.config'), 'utf8');
        assert.match(adv, /\{crl_check, true\}/);
        assert.match(
          adv,
          m === 'http' ? /ssl_crl_cache, \{internal, \[\{http, \d+\}\]\}/ : /ssl_crl_hash_dir, \{internal, \[\{dir, ".*\/crls"\}\]\}/,
        );
        const conf = readFileSync(join(setupDirs[m], 'rabbitmq.conf'), 'utf8');
        assert.match(conf, /^mqtt\.ssl_cert_login = true$/m);
        assert.match(conf, /^ssl_cert_login_from = common_name$/m);
        assert.match(readFileSync(join(setupDirs[m], 'README.txt'), 'utf8'), new RegExp(`CRL mode: ${m}`));
      }
      const crls = readdirSync(join(setupDirs['hash-dir'], 'crls')).filter((f) => /^[0-9a-f]{8}\.r\d+$/.test(f));
      assert.equal(crls.length, 2 + SHARDS, "the root's CRL and the issuing CA's one CRL");
    });

    for (const mode of MODES)
      it(`${mode}: a valid device publishes and a subscriber receives`, async () => {
        const node = nodes[mode];
        const sub = await connectRabbitDevice(node, devices.get('sub-1')!);
        clients.push(sub);
        await new Promise<void>((resolve, reject) => sub.subscribe('meters/#', { qos: 1 }, (e) => (e ? reject(e) : resolve())));
        const got = new Promise<{ topic: string; payload: string }>((resolve) =>
          sub.once('message', (topic, payload) => resolve({ topic, payload: payload.toString() })),
        );
        const fetchesBefore = crlFetches;
        const pub = await connectRabbitDevice(node, devices.get('meter-1')!);
        console.log(`${mode}: CRL fetches from the service for one device handshake: ${crlFetches - fetchesBefore}`);
        await pub.publishAsync('meters/1', `hello over ${mode}`, { qos: 1 });
        pub.end(true);
        assert.deepEqual(await got, { topic: 'meters/1', payload: `hello over ${mode}` });
        sub.end(true);
        // A certificate from another CA is refused at the handshake.
        const own = tempDir();
        const made = run('openssl', [
          ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=meter-1'],
          ...['-keyout', join(own, 'k.pem'), '-out', join(own, 'c.pem')],
        ]);
        assert.equal(made.status, 0, made.stderr);
        const stranger = {
          ...devices.get('meter-1')!,
          key: readFileSync(join(own, 'k.pem'), 'utf8'),
          cert: readFileSync(join(own, 'c.pem'), 'utf8'),
        };
        assert.ok(await refused(node, stranger), 'a certificate of another CA got in');
      });

    it('after a revocation the device is refused on its next connection, in both modes (time to refusal printed)', async () => {
      const d = devices.get('meter-1')!;
      for (const m of MODES) assert.equal(await refused(nodes[m], d), false, `${m}: meter-1 refused before its revocation`);
      const t0 = Date.now();
      await svc.revocations.revoke(d.serial as never, { reason: 'keyCompromise' }, { actor: 'test' });
      const took: Partial<Record<Mode, number>> = {};
      await until(
        'meter-1 refused by both nodes',
        async () => {
          for (const m of MODES) if (took[m] === undefined && (await refused(nodes[m], d))) took[m] = Date.now() - t0;
          return took.http !== undefined && took['hash-dir'] !== undefined;
        },
        120_000,
      );
      console.log(
        `revocation to refusal: http mode ${took.http} ms (per-handshake fetch), hash-dir mode ${took['hash-dir']} ms (crl-sync --interval 1)`,
      );
      // Its neighbours are not affected.
      for (const m of MODES) assert.equal(await refused(nodes[m], devices.get('meter-2')!), false);
    });

    it('the incident block ends a live session through the RabbitMQ connector and keeps the device out; unblock lets it back', async () => {
      const node = nodes['hash-dir'];
      const live = await connectRabbitDevice(node, devices.get('meter-2')!);
      clients.push(live);
      const closed = new Promise<void>((resolve) => live.once('close', () => resolve()));
      // The management plugin lists a connection once it collected its statistics.
      await until(
        'meter-2 listed by the management API',
        async () => ((await node.api<{ user: string }[]>('GET', '/api/connections')).body ?? []).some((c) => c.user === 'meter-2'),
        20_000,
      );
      const before = (await node.api<unknown[]>('GET', '/api/users/meter-2/permissions')).body;
      const inc = await svc.incidents.open(
        { kind: 'device-compromise', title: 'meter-2 tampered', targets: { devices: ['meter-2'] } },
        ADMIN,
      );
      const step = await svc.incidents.act(inc.id, 'block', {}, false, ADMIN);
      assert.equal(step.status, 'succeeded', JSON.stringify(step));
      const effects = JSON.stringify(step.result);
      assert.match(effects, /"connector":"rabbitmq"/);
      assert.match(effects, /"confirmed":true/);
      assert.doesNotMatch(effects, /"confirmed":false/);
      await closed;
      assert.ok(await refused(node, devices.get('meter-2')!), 'the blocked device reconnected');
      assert.deepEqual((await node.api<unknown[]>('GET', '/api/users/meter-2/permissions')).body, []);

      const un = await svc.incidents.act(inc.id, 'unblock', {}, false, ADMIN);
      assert.equal(un.status, 'succeeded', JSON.stringify(un));
      assert.deepEqual((await node.api<unknown[]>('GET', '/api/users/meter-2/permissions')).body, before);
      const back = await connectRabbitDevice(node, devices.get('meter-2')!);
      back.end(true);
    });

    it('the connector: disconnect ends a session (its client id reported), a second block keeps the first saved permissions, notify reaches a subscriber; errors are Unavailable without the password', async () => {
      const node = nodes['hash-dir'];
      const connector = new RabbitMqConnector({
        url: node.managementUrl,
        username: node.username,
        password: node.password,
        vhost: '/',
        notifyTopic: 'mqtt-ca/events',
      });
      const listed = (user: string) =>
        until(
          `${user} listed by the management API`,
          async () => ((await node.api<{ user: string }[]>('GET', '/api/connections')).body ?? []).some((c) => c.user === user),
          20_000,
        );
      const live = await connectRabbitDevice(node, devices.get('meter-3')!);
      clients.push(live);
      const closed = new Promise<void>((resolve) => live.once('close', () => resolve()));
      await listed('meter-3');
      const d = await connector.disconnect(['meter-3'], 'test');
      assert.deepEqual(
        d.effects.map((e) => [e.clientId, e.applied, e.confirmed, e.sessionsEnded]),
        [['meter-3', true, true, ['meter-3']]],
      );
      await closed;
      // disconnect has no lasting effect.
      (await connectRabbitDevice(node, devices.get('meter-3')!)).end(true);

      const first = await connector.block(['meter-3'], 'one');
      const second = await connector.block(['meter-3'], 'two');
      assert.deepEqual(
        [first, second].map((r) => r.effects[0]!.confirmed),
        [true, true],
      );
      const saved = (
        await node.api<{ value: { reason: string; permissions: unknown[] } }>('GET', '/api/global-parameters/mqtt-ca-blocked.meter-3')
      ).body!;
      assert.equal(saved.value.reason, 'one');
      assert.equal(saved.value.permissions.length, 1);
      assert.ok(await refused(node, devices.get('meter-3')!));
      const un = await connector.unblock(['meter-3'], 'done');
      assert.equal(un.effects[0]!.confirmed, true);
      assert.equal((await node.api('GET', '/api/global-parameters/mqtt-ca-blocked.meter-3')).status, 404);
      assert.equal((await connector.unblock(['meter-3'], 'again')).effects[0]!.detail, 'not blocked: no saved permissions for this user');
      (await connectRabbitDevice(node, devices.get('meter-3')!)).end(true);

      const sub = await connectRabbitDevice(node, devices.get('sub-1')!);
      clients.push(sub);
      await new Promise<void>((resolve, reject) => sub.subscribe('mqtt-ca/events/#', { qos: 1 }, (e) => (e ? reject(e) : resolve())));
      const got = new Promise<{ topic: string; payload: string }>((resolve) =>
        sub.once('message', (topic, payload) => resolve({ topic, payload: payload.toString() })),
      );
      const n = await connector.notify({ kind: 'broker-quarantined', subject: 'broker-7' });
      assert.equal(n.effects[0]!.confirmed, true);
      const m = await got;
      assert.equal(m.topic, 'mqtt-ca/events/broker-quarantined');
      assert.equal((JSON.parse(m.payload) as { subject: string }).subject, 'broker-7');
      sub.end(true);

      const wrong = new RabbitMqConnector({
        url: node.managementUrl,
        username: node.username,
        password: 'not-the-password-xyz',
        vhost: '/',
        notifyTopic: 'x',
      });
      const away = new RabbitMqConnector({
        url: `http://127.0.0.1:${await freePort()}`,
        username: 'u',
        password: 'secret-xyz',
        vhost: '/',
        notifyTopic: 'x',
      });
      for (const [c, secret] of [
        [wrong, 'not-the-password-xyz'],
        [away, 'secret-xyz'],
      ] as const) {
        const e = await c.block(['meter-3'], 'x').then(
          () => undefined,
          (err: unknown) => err,
        );
        assert.ok(e instanceof DomainError && e.kind === 'Unavailable', String(e));
        assert.ok(!e.message.includes(secret), e.message);
      }
    });

    it('with the CA away, the hash-dir node keeps letting valid devices in and revoked ones out; the HTTP node refuses everyone', async () => {
      stopCrlSync();
      await new Promise<void>((resolve) => {
        server!.close(() => resolve());
        server!.closeAllConnections();
      });
      server = undefined;
      const down = await fetch(`${publicUrl}/pki/crl/bundle.pem`).then(
        () => 'up',
        () => 'down',
      );
      assert.equal(down, 'down');
      const hash = nodes['hash-dir'];
      assert.equal(await refused(hash, devices.get('meter-3')!), false, 'a valid device was refused while the CA is away');
      assert.ok(await refused(hash, devices.get('meter-1')!), 'the revoked device got in while the CA is away');
      // What HTTP mode costs: no CRL, no handshake (Erlang: bad_crls, no_relevant_crls).
      assert.ok(await refused(nodes.http, devices.get('meter-3')!), 'the HTTP-mode node let a device in without its CRLs');
    });
  },
);
