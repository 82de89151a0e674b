// What `broker-setup --broker rabbitmq` writes, read by Erlang itself (advanced.config and
// enabled_plugins are Erlang terms), and the BROKER_RABBITMQ_* settings.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rabbitmqSetup } from '../../src/broker/setup/rabbitmq.js';
import { writeBrokerSetup } from '../../src/broker-identity.js';
import { mqttTopicToRoutingKey } from '../../src/broker/rabbitmq-connector.js';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { run, tempDir } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';

const input = (crlMode: 'http' | 'hash-dir') => ({
  brokerDir: '/etc/rabbitmq/mqtt "ca"',
  port: 8883,
  caChain: [],
  files: { ca: '/etc/rabbitmq/mqtt "ca"/ca.pem', crl: '/x/crl.pem', cert: '/x/broker.pem', key: '/x/broker.key' },
  publicUrl: 'https://ca.example',
  cas: [],
  connector: { cn: 'mqtt-ca-connector', denyRole: 'mqtt-ca-blocked', notifyTopic: 'mqtt-ca/events' },
  rabbitmq: { crlMode },
});

/** The Erlang terms of a file, printed back by erl (file:consult), or its error. */
function consult(content: string): string {
  const f = join(tempDir(), 'terms.config');
  writeFileSync(f, content);
  const r = run('erl', ['-noshell', '-eval', `io:format("~p~n", [file:consult("${f}")]), halt().`]);
  return (r.stdout + r.stderr).replace(/\n\s*/g, '');
}

describe('broker-setup for RabbitMQ', () => {
  for (const mode of ['hash-dir', 'http'] as const)
    it(
      `${mode}: advanced.config and enabled_plugins are Erlang terms with crl_check and the mode's CRL source`,
      { skip: toolSkip('erl') },
      () => {
        const plan = rabbitmqSetup(input(mode));
        const file = (n: string) => plan.files.find((f) => f.name === n)!;
        const adv = consult(file('advanced.config').content);
        assert.match(adv, /^\{ok,/, adv);
        assert.match(adv, /\{crl_check,true\}/);
        assert.match(adv, /\{cacertfile,"\/etc\/rabbitmq\/mqtt \\"ca\\"\/ca.pem"\}/);
        if (mode === 'http') assert.match(adv, /\{crl_cache,\{ssl_crl_cache,\{internal,\[\{http,5000\}\]\}\}\}/);
        else assert.match(adv, /\{crl_cache,\{ssl_crl_hash_dir,\{internal,\[\{dir,"\/etc\/rabbitmq\/mqtt \\"ca\\"\/crls"\}\]\}\}\}/);
        assert.equal(plan.crlHashDir, mode === 'hash-dir' ? 'crls' : undefined);
        assert.match(consult(file('enabled_plugins').content), /\{ok,\[\[rabbitmq_mqtt,rabbitmq_management\]\]\}/);
        const conf = file('rabbitmq.conf');
        assert.equal(conf.mode, 0o600);
        const password = file('rabbitmq-connector.password').content.trim();
        assert.ok(password.length >= 32);
        assert.match(conf.content, new RegExp(`^default_pass = ${password}$`, 'm'));
        assert.match(conf.content, /^mqtt\.listeners\.ssl\.default = 8883$/m);
        assert.ok(!plan.readme.join('\n').includes(password), 'the README shows the password');
      },
    );

  it('maps MQTT topics to amq.topic routing keys as the MQTT plugin does', () => {
    assert.equal(mqttTopicToRoutingKey('mqtt-ca/events/broker.x'), 'mqtt-ca.events.broker/x');
  });
});

describe('BROKER_RABBITMQ_* settings', () => {
  const base = { MQTT_CA_KEK: Buffer.alloc(32, 1).toString('base64') };
  it('take the URL with a password or a password file (first line); the user defaults to BROKER_CLIENT_CN, the vhost to /', () => {
    const f = join(tempDir(), 'pw');
    writeFileSync(f, 'from-the-file\nignored\n');
    const c = loadConfig({ ...base, BROKER_RABBITMQ_URL: 'http://broker:15672', BROKER_RABBITMQ_PASSWORD_FILE: f });
    assert.deepEqual(c.brokers.rabbitmq, {
      url: 'http://broker:15672',
      username: 'mqtt-ca-connector',
      password: 'from-the-file',
      vhost: '/',
    });
    const d = loadConfig({
      ...base,
      BROKER_RABBITMQ_URL: 'https://broker:15671',
      BROKER_RABBITMQ_USERNAME: 'ops',
      BROKER_RABBITMQ_PASSWORD: 'inline',
      BROKER_RABBITMQ_VHOST: 'fleet',
    });
    assert.deepEqual(d.brokers.rabbitmq, { url: 'https://broker:15671', username: 'ops', password: 'inline', vhost: 'fleet' });
  });

  it('refuse a URL without a password, both password forms, a password without the URL, an unreadable file, a non-HTTP URL', () => {
    const bad: Record<string, string>[] = [
      { BROKER_RABBITMQ_URL: 'http://broker:15672' },
      { BROKER_RABBITMQ_URL: 'http://broker:15672', BROKER_RABBITMQ_PASSWORD: 'secret-one', BROKER_RABBITMQ_PASSWORD_FILE: '/x' },
      { BROKER_RABBITMQ_PASSWORD: 'secret-one' },
      { BROKER_RABBITMQ_URL: 'http://broker:15672', BROKER_RABBITMQ_PASSWORD_FILE: '/nonexistent/pw' },
      { BROKER_RABBITMQ_URL: 'amqp://broker', BROKER_RABBITMQ_PASSWORD: 'secret-one' },
    ];
    for (const env of bad) {
      assert.throws(
        () => loadConfig({ ...base, ...env }),
        (e: unknown) => e instanceof ConfigError && !e.message.includes('secret-one'),
        JSON.stringify(env),
      );
    }
  });

  it('refuses hash-dir mode with partitioned CRLs, where RabbitMQ missed revocations; http mode is written', async () => {
    const svc = (crlShards: number) => ({
      config: {
        publicUrl: 'https://ca.example',
        crlShards,
        brokers: { clientCn: 'mqtt-ca-connector', denyRole: 'mqtt-ca-blocked', notifyTopic: 'mqtt-ca/events' },
      },
      hierarchy: {
        list: async () =>
          [
            {
              id: 'ca1',
              name: 'issuing',
              kind: 'intermediate',
              certificate: '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n',
            },
          ] as never,
        chain: async () => [],
      },
      crls: { all: async () => [], der: async () => undefined } as never,
    });
    const own = { certFile: '/x/broker.pem', keyFile: '/x/broker.key' };
    await assert.rejects(
      writeBrokerSetup(svc(4), { broker: 'rabbitmq', dir: tempDir(), ...own }),
      /hash-dir CRL mode missed revocations with partitioned CRLs \(CRL_SHARDS > 0\): use --crl-mode http/,
    );
    const http = await writeBrokerSetup(svc(4), { broker: 'rabbitmq', dir: tempDir(), crlMode: 'http', ...own });
    assert.ok(http.paths['advanced.config']);
  });
});
