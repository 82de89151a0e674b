// The broker connectors for real: a private Mosquitto 2.0 with mutual TLS and the dynamic-security
// plugin (seeded by broker-setup), devices on mqtt.js with certificates enrolled from mqtt-ca, the
// connector logging in with the service's own client certificate; mosquitto_ctrl as the outside
// check of the dynsec state. Then the signed-webhook connector against a local receiver.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { MqttClient } from 'mqtt';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { run, tempDir, writeTemp } from '../helpers/openssl.js';
import { freePort, until } from '../helpers/processes.js';
import { toolSkip } from '../helpers/tools.js';
import {
  connectDevice,
  dynsecCtrl as ctrl,
  startConnectorBroker,
  startMosquittoTls,
  type ConnectorBroker,
  type MosquittoTls,
} from '../helpers/mosquitto-tls.js';
import { bootstrap } from '../../src/bootstrap.js';
import { BrokerConnectors, type BrokerConnector, type BrokerResult } from '../../src/broker/connector.js';
import { MosquittoDynsecConnector } from '../../src/broker/mosquitto-dynsec.js';
import { WebhookBrokerConnector } from '../../src/broker/webhook-connector.js';
import { SignedWebhook, webhookSignature } from '../../src/broker/webhook.js';
import { DomainError } from '../../src/shared/errors.js';
import type { Clock } from '../../src/shared/clock.js';

const pglite = dbTargets.find((t) => t.name === 'pglite')!;
const CLI = join(import.meta.dirname, '../../src/cli.ts');

const closed = (c: MqttClient) => new Promise<void>((resolve) => (c.connected ? c.once('close', () => resolve()) : resolve()));
const only = (r: BrokerResult) => {
  assert.equal(r.effects.length, 1, JSON.stringify(r));
  return r.effects[0]!;
};

describe(
  'Mosquitto dynamic-security connector (real broker, mutual TLS)',
  { skip: toolSkip('mosquitto') ?? toolSkip('mosquitto_ctrl') },
  () => {
    let rig: ConnectorBroker;
    let svc: ConnectorBroker['svc'];
    let broker: MosquittoTls;
    let devices: ConnectorBroker['devices'];
    let adminFiles: ConnectorBroker['adminFiles'];
    let mosquitto: BrokerConnector;
    let observer: MqttClient;
    const received: string[] = [];
    const device = (id: string) => rig.device(id);
    /** Publishes a marker from a device that is not blocked and waits until the observer has it: everything before it has arrived too. */
    const drain = async (marker: string) => {
      const m = await device('meter-9');
      await m.publishAsync('fleet/meter-9', marker, { qos: 1 });
      await until(`the observer to get ${marker}`, async () => received.includes(`fleet/meter-9 ${marker}`), 10_000);
      await m.endAsync();
    };

    before(async () => {
      rig = await startConnectorBroker(pglite, {
        devices: ['meter-1', 'meter-2', 'meter-3', 'meter-9', 'observer', 'stranger-1'],
        fleet: ['meter-1', 'meter-2', 'meter-3', 'meter-9', 'observer'],
        acls: [{ acltype: 'subscribePattern', topic: 'mqtt-ca/events/#', allow: true }],
      });
      ({ svc, broker, devices, adminFiles } = rig);
      mosquitto = svc.brokers.get('mosquitto')!;
      assert.ok(mosquitto, 'BROKER_MQTT_URL configures the mosquitto connector');
      observer = await device('observer');
      observer.on('message', (t, p) => received.push(`${t} ${p.toString()}`));
      await observer.subscribeAsync('fleet/#', { qos: 1 });
    });

    after(async () => {
      await rig?.stop();
    });

    it('block ends the session; the device gets back in (certificate logins are not stopped) but may neither publish nor subscribe; unblock restores it', async () => {
      const m1 = await device('meter-1');
      await m1.subscribeAsync('fleet/#', { qos: 1 });
      await m1.publishAsync('fleet/meter-1', 'before', { qos: 1 });
      await until('the observer to get "before"', async () => received.includes('fleet/meter-1 before'), 10_000);

      const gone = closed(m1);
      const e = only(await mosquitto.block(['meter-1'], 'incident 1'));
      assert.equal(e.clientId, 'meter-1');
      assert.equal(e.action, 'block');
      assert.ok(e.applied && e.confirmed, e.detail);
      assert.deepEqual(e.sessionsEnded, ['meter-1']);
      await gone; // the broker really closed it

      // Mosquitto 2.0.11: the certificate login works again at once (disableClient/enableClient or not)...
      const again = await device('meter-1');
      // ...but its subscribe is refused (SUBACK 0x87) and its publish too (PUBACK 0x87).
      await assert.rejects(again.subscribeAsync('fleet/#', { qos: 1 }), (err: any) => err.packet?.granted?.[0] === 0x87);
      await assert.rejects(again.publishAsync('fleet/meter-1', 'while-blocked', { qos: 1 }), /Not authorized/);
      await drain('after-block');
      assert.ok(!received.includes('fleet/meter-1 while-blocked'), 'a blocked publish reached a subscriber');

      // The broker's own view: the deny role on top, the client's own role kept.
      const view = await ctrl(broker, adminFiles, ['getClient', 'meter-1']);
      assert.equal(view.status, 0, view.out);
      assert.match(view.out, /mqtt-ca-blocked \(priority: 1000000\)/);
      assert.match(view.out, /fleet/);

      // Idempotent: again, confirmed, the role once (the reconnected session ended again).
      const twice = only(await mosquitto.block(['meter-1'], 'incident 1, retried'));
      assert.ok(twice.applied && twice.confirmed, twice.detail);
      assert.deepEqual(twice.sessionsEnded, ['meter-1']);
      assert.equal((await ctrl(broker, adminFiles, ['getClient', 'meter-1'])).out.match(/mqtt-ca-blocked/g)?.length, 1);

      const u = only(await mosquitto.unblock(['meter-1'], 'incident 1 closed'));
      assert.ok(u.applied && u.confirmed, u.detail);
      const after = await ctrl(broker, adminFiles, ['getClient', 'meter-1']);
      assert.doesNotMatch(after.out, /mqtt-ca-blocked/);
      assert.match(after.out, /fleet/);
      const back = await device('meter-1');
      await back.subscribeAsync('fleet/#', { qos: 1 });
      await back.publishAsync('fleet/meter-1', 'after-unblock', { qos: 1 });
      await until('the observer to get "after-unblock"', async () => received.includes('fleet/meter-1 after-unblock'), 10_000);

      const unblockAgain = only(await mosquitto.unblock(['meter-1'], 'again'));
      assert.ok(unblockAgain.confirmed);
      assert.match(unblockAgain.detail!, /not blocked/);
    });

    it('a client the broker has no entry for gets one with the deny role, and unblock deletes it again', async () => {
      assert.match((await ctrl(broker, adminFiles, ['getClient', 'stranger-1'])).out, /not found/i);
      const e = only(await mosquitto.block(['stranger-1'], 'unknown device'));
      assert.ok(e.applied && e.confirmed, e.detail);
      assert.deepEqual(e.sessionsEnded, []);
      assert.match(e.detail!, /no session was connected/);
      assert.match((await ctrl(broker, adminFiles, ['getClient', 'stranger-1'])).out, /mqtt-ca-blocked/);
      const u = only(await mosquitto.unblock(['stranger-1'], 'done'));
      assert.ok(u.confirmed, u.detail);
      assert.match((await ctrl(broker, adminFiles, ['getClient', 'stranger-1'])).out, /not found/i);
    });

    it('disconnect ends the sessions and nothing else', async () => {
      const m2 = await device('meter-2');
      const gone = closed(m2);
      const r = await mosquitto.disconnect(['meter-2', 'nobody-here'], 'key rotation');
      assert.equal(r.connector, 'mosquitto');
      const [a, b] = r.effects;
      assert.ok(a!.applied && a!.confirmed, a!.detail);
      assert.deepEqual(a!.sessionsEnded, ['meter-2']);
      assert.ok(b!.confirmed);
      assert.deepEqual(b!.sessionsEnded, []);
      await gone;
      const back = await device('meter-2');
      await back.subscribeAsync('fleet/#', { qos: 1 });
      await back.publishAsync('fleet/meter-2', 'after-disconnect', { qos: 1 });
      await until('the observer to get "after-disconnect"', async () => received.includes('fleet/meter-2 after-disconnect'), 10_000);
      assert.match((await ctrl(broker, adminFiles, ['getClient', 'nobody-here'])).out, /not found/i);
    });

    it('a new CRL does not drop a connected session; revocation + CRL reload + the kick lock the device out', async () => {
      const m3 = await device('meter-3');
      await svc.revocations.revoke(devices['meter-3']!.serial as never, { reason: 'keyCompromise' }, { actor: 'test' });
      await broker.reloadCrl();
      // Still connected after the reload: it can publish.
      await m3.publishAsync('fleet/meter-3', 'still-here', { qos: 1 });
      await until('the observer to get "still-here"', async () => received.includes('fleet/meter-3 still-here'), 10_000);
      const gone = closed(m3);
      const e = only(await mosquitto.disconnect(['meter-3'], 'revoked'));
      assert.deepEqual(e.sessionsEnded, ['meter-3']);
      await gone;
      await assert.rejects(connectDevice(broker, devices['meter-3']!));
    });

    it('notify publishes the event on the notify topic', async () => {
      await observer.subscribeAsync('mqtt-ca/events/#', { qos: 1 });
      const e = only(await mosquitto.notify({ kind: 'broker-quarantined', subject: 'broker-7', details: { incident: 'i-1' } }));
      assert.ok(e.applied && e.confirmed, e.detail);
      assert.equal(e.clientId, 'broker-7');
      const msg = await until(
        'the observer to get the event',
        async () => received.find((m) => m.startsWith('mqtt-ca/events/broker-quarantined ')),
        10_000,
      );
      const body = JSON.parse(msg.slice(msg.indexOf(' ') + 1));
      assert.equal(body.kind, 'broker-quarantined');
      assert.equal(body.subject, 'broker-7');
      assert.deepEqual(body.details, { incident: 'i-1' });
    });

    it('an unreachable broker is Unavailable, nothing claimed; the retry works once it is back', async () => {
      await broker.stop();
      try {
        // Seen in CI: a connection opened just before the stop may not have seen its end yet, and
        // then the plugin's answer is what fails to come. Either way: Unavailable, naming the broker.
        const down =
          /cannot connect to the broker at mqtts:\/\/localhost|no answer from the dynamic-security plugin of mqtts:\/\/localhost/;
        await assert.rejects(
          mosquitto.block(['meter-2'], 'while down'),
          (e: unknown) => e instanceof DomainError && e.kind === 'Unavailable' && down.test(e.message),
        );
        // The fan-out reports it as a failure of that connector.
        const fan = await svc.brokers.disconnect(['meter-2'], 'while down');
        assert.deepEqual(fan.results, []);
        assert.equal(fan.failures[0]?.connector, 'mosquitto');
        assert.equal(fan.failures[0]?.error.kind, 'Unavailable');
      } finally {
        await broker.start(); // the tests after this one need it, whatever happened here
      }
      const e = only(await mosquitto.block(['meter-2'], 'retried'));
      assert.ok(e.applied && e.confirmed, e.detail);
      assert.ok(only(await mosquitto.unblock(['meter-2'], 'retried')).confirmed);
    });

    it('a connector certificate the broker does not trust, or one without the admin role, or a broker it does not trust: a clear Unavailable', async () => {
      const dir = tempDir();
      const rogue = run('sh', [
        '-c',
        `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ${dir}/k.pem -out ${dir}/c.pem -days 2 -subj "/CN=mqtt-ca-connector" 2>&1`,
      ]);
      assert.equal(rogue.status, 0, rogue.stdout);
      const key = readFileSync(join(dir, 'k.pem'), 'utf8');
      const cert = readFileSync(join(dir, 'c.pem'), 'utf8');
      const untrusted = new MosquittoDynsecConnector({
        url: broker.url,
        tls: async () => ({ key, cert, ca: broker.caPem }),
        notifyTopic: 'mqtt-ca/events',
        timeoutMs: 5000,
      });
      await assert.rejects(
        untrusted.block(['meter-1'], 'x'),
        (e: unknown) => e instanceof DomainError && e.kind === 'Unavailable' && /cannot connect to the broker/.test(e.message),
      );
      await untrusted.close();

      // A device's certificate: trusted, but its CN holds no admin role.
      const d = devices['meter-9']!;
      const noRole = new MosquittoDynsecConnector({
        url: broker.url,
        tls: async () => ({ key: d.key, cert: d.cert, ca: d.ca }),
        notifyTopic: 'mqtt-ca/events',
        timeoutMs: 5000,
      });
      await assert.rejects(
        noRole.block(['meter-1'], 'x'),
        (e: unknown) => e instanceof DomainError && e.kind === 'Unavailable' && /refused the connector .*dynsec admin role/.test(e.message),
      );
      await noRole.close();

      // The right certificate, but a broker whose server certificate it cannot verify.
      const id = await svc.identities.ensure('broker-connector');
      const wrongCa = new MosquittoDynsecConnector({
        url: broker.url,
        tls: async () => ({ key: id.key, cert: id.cert, ca: cert }),
        notifyTopic: 'mqtt-ca/events',
        timeoutMs: 5000,
      });
      await assert.rejects(
        wrongCa.disconnect(['meter-1'], 'x'),
        (e: unknown) => e instanceof DomainError && e.kind === 'Unavailable' && /certificate/i.test(e.message),
      );
      await wrongCa.close();
    });

    it('without log_dest topic the kick is applied but reported unconfirmed, never confirmed by guess', async () => {
      const quiet = await startMosquittoTls(svc, {
        logToTopic: false,
        seed: {
          roles: [{ rolename: 'fleet', acls: [{ acltype: 'subscribePattern', topic: 'fleet/#', allow: true }] }],
          clients: [{ username: 'meter-1', roles: [{ rolename: 'fleet' }] }],
        },
      });
      const c = new MosquittoDynsecConnector({
        url: quiet.url,
        tls: async () => svc.identities.ensure('broker-connector'),
        notifyTopic: 'mqtt-ca/events',
        timeoutMs: 5000,
        confirmMs: 1500,
      });
      try {
        const m1 = await connectDevice(quiet, devices['meter-1']!);
        const gone = closed(m1);
        const e = only(await c.block(['meter-1'], 'quiet broker'));
        assert.equal(e.applied, true);
        assert.equal(e.confirmed, false);
        assert.match(e.detail!, /not confirmed.*log_dest topic/);
        await gone;
        // The role part is still read back: a device reconnecting is refused its subscribe.
        const again = await connectDevice(quiet, devices['meter-1']!);
        await assert.rejects(again.subscribeAsync('fleet/#'), (err: any) => err.packet?.granted?.[0] === 0x87);
        again.end(true);
      } finally {
        await c.close();
        await quiet.stop();
      }
    });
  },
);

describe("the connector identity (the service's own client certificate)", () => {
  for (const target of dbTargets) {
    it(`is issued once, kept, and reissued when a third of its life is left (${target.name})`, { skip: target.skip }, async () => {
      let now = new Date();
      const clock: Clock = { now: () => now } as Clock;
      const svc = await makeService(target, { clock, env: { BROKER_CLIENT_CN: 'ops-connector' } });
      try {
        await bootstrap(svc);
        const a = await svc.identities.ensure('broker-connector');
        const x = new X509Certificate(a.cert);
        assert.equal(a.commonName, 'ops-connector');
        assert.match(x.subject, /CN=ops-connector/);
        assert.ok(x.checkPrivateKey(createPrivateKey(a.key)));
        // openssl: a TLS client certificate that chains to the service's CAs.
        const dir = tempDir();
        const v = run('openssl', [
          'verify',
          '-purpose',
          'sslclient',
          '-CAfile',
          writeTemp(dir, 'ca.pem', a.ca.join('')),
          writeTemp(dir, 'c.pem', a.cert),
        ]);
        assert.equal(v.status, 0, v.stdout + v.stderr);
        const b = await svc.identities.ensure('broker-connector');
        assert.equal(new X509Certificate(b.cert).serialNumber, x.serialNumber);
        now = new Date(Date.parse(x.validTo) - 29 * 86_400_000); // 90 days, under 30 left
        const c = await svc.identities.ensure('broker-connector');
        assert.notEqual(new X509Certificate(c.cert).serialNumber, x.serialNumber);
        const audit = await svc
          .db('audit_log')
          .select('action', 'target_id')
          .where({ action: 'broker-connector.identity-issued' })
          .orderBy('seq');
        assert.equal(audit.length, 2);
      } finally {
        await svc.dispose();
      }
    });
  }
});

describe('mqtt-ca broker-setup', { skip: toolSkip('mosquitto') }, () => {
  it('writes the CA bundle, CRLs, a dynsec seed granting the connector CN the admin role, and a mosquitto.conf snippet', async () => {
    const data = tempDir();
    const out = join(tempDir(), 'broker');
    const env = {
      ...process.env,
      DATA_DIR: data,
      MQTT_CA_KEK: Buffer.alloc(32, 7).toString('base64'),
      LOG_LEVEL: 'silent',
      DATABASE_URL: '',
      BROKER_CLIENT_CN: 'ops-connector',
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
    const r = await cli(['broker-setup', '--dir', out, '--port', '8884', '--dns', 'broker.example', '--ip', '127.0.0.1']);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /certificate CN ops-connector/);
    const seed = JSON.parse(readFileSync(join(out, 'dynamic-security.json'), 'utf8'));
    const client = seed.clients.find((c: any) => c.username === 'ops-connector');
    assert.ok(client && !client.password, 'the connector logs in by certificate only');
    const role = seed.roles.find((x: any) => x.rolename === client.roles[0].rolename);
    assert.ok(role.acls.some((a: any) => a.acltype === 'publishClientSend' && a.topic === '$CONTROL/dynamic-security/v1'));
    assert.ok(seed.roles.some((x: any) => x.rolename === 'mqtt-ca-blocked'));
    const conf = readFileSync(join(out, 'mosquitto.conf'), 'utf8');
    for (const line of [
      'listener 8884',
      'require_certificate true',
      'use_identity_as_username true',
      `cafile ${join(out, 'ca.pem')}`,
      `crlfile ${join(out, 'crl.pem')}`,
      'plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so',
      'log_dest topic',
      'log_type notice',
      'log_type error',
      'log_type information',
      'log_type subscribe',
      'log_type unsubscribe',
      'connection_messages true',
    ]) {
      assert.ok(conf.split('\n').includes(line), `${line} in\n${conf}`);
    }
    assert.match(readFileSync(join(out, 'ca.pem'), 'utf8'), /BEGIN CERTIFICATE/);
    assert.match(readFileSync(join(out, 'crl.pem'), 'utf8'), /BEGIN X509 CRL/);
    // The CRL file is what openssl reads as CRLs.
    assert.equal(run('openssl', ['crl', '-in', join(out, 'crl.pem'), '-noout']).status, 0);
    // The broker certificate it issued: verifies to the CA bundle (roots first), names the broker, holds the key beside it.
    assert.match(r.out, /issued the broker certificate [0-9a-f]+/);
    const verify = run('openssl', ['verify', '-CAfile', join(out, 'ca.pem'), join(out, 'broker.pem')]);
    assert.equal(verify.status, 0, verify.stderr);
    const text = run('openssl', ['x509', '-in', join(out, 'broker.pem'), '-noout', '-text']).stdout;
    assert.match(text, /DNS:broker\.example, IP Address:127\.0\.0\.1/);
    assert.match(text, /TLS Web Server Authentication/);
    const pub = (args: string[]) => run('openssl', args).stdout;
    assert.equal(
      pub(['pkey', '-in', join(out, 'broker.key'), '-pubout']),
      pub(['x509', '-in', join(out, 'broker.pem'), '-noout', '-pubkey']),
    );
    assert.equal(statSync(join(out, 'broker.key')).mode & 0o777, 0o600);
    const bundle = readFileSync(join(out, 'ca.pem'), 'utf8').match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)!;
    const subjects = bundle.map((pem) => run('openssl', ['x509', '-noout', '-subject', '-issuer'], pem).stdout);
    assert.equal(subjects.length, 2);
    assert.match(subjects[0]!, /subject=(.*)\nissuer=\1\n/, 'the root comes first');
    assert.match(readFileSync(join(out, 'README.txt'), 'utf8'), /broker\.pem/);

    // Neither names to issue for nor the broker's own files: a clear refusal, nothing issued.
    const refused = await cli(['broker-setup', '--dir', join(tempDir(), 'x')]);
    assert.equal(refused.status, 2);
    assert.match(refused.out, /--dns\/--ip to issue a broker certificate, or both --cert-file and --key-file/);
    // Every broker it knows: the configuration each reads, from the same store.
    const emqx = join(tempDir(), 'emqx');
    const e = await cli(['broker-setup', '--broker', 'emqx', '--dir', emqx, '--dns', 'emqx.example', '--must-staple']);
    assert.equal(e.status, 0, e.out);
    const emqxConf = readFileSync(join(emqx, 'emqx.conf'), 'utf8');
    for (const line of ['enable_crl_check = true', 'enable_ocsp_stapling = true', 'fail_if_no_peer_cert = true', 'verify = verify_peer'])
      assert.ok(emqxConf.includes(line), line);
    assert.equal(
      run('openssl', ['verify', '-CAfile', join(emqx, 'ocsp-issuer.pem'), '-partial_chain', join(emqx, 'broker.pem')]).status,
      0,
    );
    // EMQX staples: its certificate can demand it (RFC 7633); the first one, above, does not.
    assert.match(run('openssl', ['x509', '-in', join(emqx, 'broker.pem'), '-noout', '-text']).stdout, /TLS Feature:\s*\n\s*status_request/);
    assert.doesNotMatch(text, /TLS Feature/);
    const stapleWithout = await cli([
      'broker-setup',
      '--dir',
      join(tempDir(), 'y'),
      '--cert-file',
      'a.pem',
      '--key-file',
      'a.key',
      '--must-staple',
    ]);
    assert.equal(stapleWithout.status, 2);
    assert.equal((await cli(['broker-setup', '--broker', 'hivemq', '--dir', emqx, '--dns', 'x'])).status !== 0, true);
  });
});

describe('signed-webhook connector', () => {
  let server: Server;
  let url: string;
  const secret = 'w'.repeat(40);
  const got: { event: string; body: any }[] = [];
  let answer: (body: any) => { status: number; json?: unknown } = () => ({ status: 204 });

  const readBody = (req: IncomingMessage) =>
    new Promise<string>((r) => {
      let b = '';
      req.on('data', (c: Buffer) => (b += c));
      req.on('end', () => r(b));
    });

  before(async () => {
    server = createServer(async (req, res) => {
      const body = await readBody(req);
      const ts = String(req.headers['x-mqttca-timestamp']);
      if (
        req.headers['x-mqttca-signature'] !== `sha256=${webhookSignature(secret, ts, body)}` ||
        Math.abs(Date.now() / 1000 - Number(ts)) > 300
      ) {
        res.writeHead(401).end();
        return;
      }
      const parsed = JSON.parse(body);
      got.push({ event: String(req.headers['x-mqttca-event']), body: parsed });
      const a = answer(parsed);
      if (a.json) res.writeHead(a.status, { 'content-type': 'application/json' }).end(JSON.stringify(a.json));
      else res.writeHead(a.status).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  it('posts the documented body, signed; confirmations only where the receiver gives them', async () => {
    const hook = new WebhookBrokerConnector(new SignedWebhook({ url, secret, timeoutMs: 5000 }));
    answer = (b) => ({
      status: 200,
      json: { effects: [{ clientId: b.clientIds[0], confirmed: true, detail: 'kicked and banned on emqx-1' }] },
    });
    const r = await hook.block(['meter-1', 'meter-2'], 'incident 9');
    assert.equal(r.connector, 'webhook');
    assert.deepEqual(got.at(-1), {
      event: 'broker.block',
      body: { action: 'block', clientIds: ['meter-1', 'meter-2'], reason: 'incident 9' },
    });
    assert.deepEqual(r.effects[0], {
      clientId: 'meter-1',
      action: 'block',
      applied: true,
      confirmed: true,
      detail: 'kicked and banned on emqx-1',
    });
    assert.equal(r.effects[1]!.confirmed, false);
    assert.match(r.effects[1]!.detail!, /did not confirm/);

    answer = () => ({ status: 204 });
    const d = await hook.disconnect(['meter-3'], 'kick');
    assert.deepEqual(d.effects, [
      {
        clientId: 'meter-3',
        action: 'disconnect',
        applied: true,
        confirmed: false,
        detail: 'the receiver accepted the call (2xx) but did not confirm the effect',
      },
    ]);
    const n = await hook.notify({ kind: 'broker-quarantined', subject: 'broker-7', details: { incident: 'i-1' } });
    assert.equal(got.at(-1)!.body.event.subject, 'broker-7');
    assert.equal(got.at(-1)!.event, 'broker.notify');
    assert.equal(n.effects[0]!.action, 'notify');
    const u = await hook.unblock(['meter-1'], 'over');
    assert.equal(got.at(-1)!.body.action, 'unblock');
    assert.equal(u.effects[0]!.applied, true);
  });

  it('a refusal, a wrong secret or no receiver: Unavailable, nothing claimed', async () => {
    answer = () => ({ status: 503 });
    const hook = new WebhookBrokerConnector(new SignedWebhook({ url, secret, timeoutMs: 5000 }));
    await assert.rejects(
      hook.block(['meter-1'], 'x'),
      (e: unknown) => e instanceof DomainError && e.kind === 'Unavailable' && /503/.test(e.message),
    );
    const forged = new WebhookBrokerConnector(new SignedWebhook({ url, secret: 'x'.repeat(40), timeoutMs: 5000 }));
    await assert.rejects(forged.block(['meter-1'], 'x'), (e: unknown) => e instanceof DomainError && /401/.test(e.message));
    const port = await freePort();
    const gone = new WebhookBrokerConnector(new SignedWebhook({ url: `http://127.0.0.1:${port}/`, secret, timeoutMs: 5000 }));
    await assert.rejects(
      gone.disconnect(['meter-1'], 'x'),
      (e: unknown) => e instanceof DomainError && e.kind === 'Unavailable' && /ECONNREFUSED|fetch failed/.test(e.message),
    );
    // All connectors are called; one failing is reported and does not stop the others.
    answer = () => ({ status: 200, json: { effects: [{ clientId: 'meter-1', confirmed: true }] } });
    const fan = await new BrokerConnectors([
      gone,
      new WebhookBrokerConnector(new SignedWebhook({ url, secret, timeoutMs: 5000 }), { name: 'emqx' }),
    ]).block(['meter-1'], 'both');
    assert.deepEqual(
      fan.results.map((r) => [r.connector, r.effects[0]!.confirmed]),
      [['emqx', true]],
    );
    assert.equal(fan.failures[0]!.connector, 'webhook');
  });
});
