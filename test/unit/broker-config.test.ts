// BROKER_* settings: defaults and cross-checks.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import { BrokerConnectors, type BrokerConnector } from '../../src/broker/connector.js';

const base = { MQTT_CA_KEK: Buffer.alloc(32, 1).toString('base64') };

describe('broker connector settings', () => {
  it('are off by default, with the documented defaults', () => {
    const c = loadConfig(base);
    assert.deepEqual(c.brokers, {
      clientCn: 'mqtt-ca-connector',
      denyRole: 'mqtt-ca-blocked',
      notifyTopic: 'mqtt-ca/events',
      timeoutMs: 10_000,
    });
  });

  it('take an mqtts:// broker with an optional CA file, and a webhook with its secret', () => {
    const c = loadConfig({
      ...base,
      BROKER_MQTT_URL: 'mqtts://broker.example:8883',
      BROKER_CA_FILE: '/etc/ca.pem',
      BROKER_WEBHOOK_URL: 'https://hooks.example/mqtt',
      BROKER_WEBHOOK_SECRET: 's'.repeat(32),
      BROKER_CLIENT_CN: 'ops.connector',
      BROKER_TIMEOUT_SECONDS: '3',
    });
    assert.deepEqual(c.brokers.mqtt, {
      url: 'mqtts://broker.example:8883',
      username: undefined,
      password: undefined,
      caFile: '/etc/ca.pem',
    });
    assert.deepEqual(c.brokers.webhook, { url: 'https://hooks.example/mqtt', secret: 's'.repeat(32) });
    assert.equal(c.brokers.clientCn, 'ops.connector');
    assert.equal(c.brokers.timeoutMs, 3000);
  });

  for (const [env, message] of [
    [{ BROKER_MQTT_URL: 'http://broker:1883' }, /BROKER_MQTT_URL/],
    [{ BROKER_MQTT_URL: 'mqtt://broker:1883' }, /plain mqtt:\/\/ broker needs BROKER_MQTT_USERNAME/],
    [{ BROKER_MQTT_URL: 'mqtts://broker:8883', BROKER_MQTT_USERNAME: 'u' }, /set both or neither/],
    [{ BROKER_CA_FILE: '/etc/ca.pem' }, /BROKER_MQTT_URL: required/],
    [{ BROKER_WEBHOOK_URL: 'https://hooks.example/' }, /BROKER_WEBHOOK_SECRET: required/],
    [{ BROKER_WEBHOOK_URL: 'https://hooks.example/', BROKER_WEBHOOK_SECRET: 'short' }, /at least 32/],
    [{ BROKER_CLIENT_CN: 'Not A Name' }, /BROKER_CLIENT_CN/],
    [{ BROKER_NOTIFY_TOPIC: 'events/#' }, /BROKER_NOTIFY_TOPIC/],
    [{ BROKER_NOTIFY_TOPIC: '$SYS/x' }, /BROKER_NOTIFY_TOPIC/],
    [{ BROKER_DENY_ROLE: 'a b' }, /BROKER_DENY_ROLE/],
  ] as const) {
    it(`refuse ${JSON.stringify(env)}`, () => {
      assert.throws(
        () => loadConfig({ ...base, ...env }),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
      );
    });
  }

  it('a plain mqtt:// test broker with username and password is accepted', () => {
    const c = loadConfig({ ...base, BROKER_MQTT_URL: 'mqtt://127.0.0.1:1883', BROKER_MQTT_USERNAME: 'admin', BROKER_MQTT_PASSWORD: 'pw' });
    assert.equal(c.brokers.mqtt?.username, 'admin');
  });

  it('two connectors of one name are refused', () => {
    const c = { name: 'x' } as BrokerConnector;
    assert.throws(() => new BrokerConnectors([c, c]), /two broker connectors are named x/);
    assert.deepEqual(
      new BrokerConnectors([c]).list().map((l) => l.name),
      ['x'],
    );
  });
});
