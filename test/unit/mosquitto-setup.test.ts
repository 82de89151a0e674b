// What `mqtt-ca broker-setup` writes for Mosquitto, against what the connector and the bus watch
// ask of the broker: the connector role may read every log topic they subscribe to, and
// mosquitto.conf logs what the $SYS source parses (docs/bus-watch.md, "Point the watch at Mosquitto").
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { CONNECTOR_ROLE, MOSQUITTO_LOG_TYPES, dynsecSeed, mosquittoConf } from '../../src/broker/mosquitto-setup.js';
import { BROKER_LOG_TOPIC, DYNSEC_TOPIC } from '../../src/broker/mosquitto-dynsec.js';
import { BUS_LOG_TOPICS } from '../../src/broker/mosquitto-log-source.js';
import { writeBrokerSetup } from '../../src/broker-identity.js';
import { tempDir } from '../helpers/openssl.js';

/** MQTT topic matching: does the ACL pattern cover this (literal) subscription? */
function covers(pattern: string, topic: string): boolean {
  const p = pattern.split('/');
  const t = topic.split('/');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '#') return true;
    if (i >= t.length) return false;
    if (p[i] !== '+' && p[i] !== t[i]) return false;
  }
  return p.length === t.length;
}

const brokers = { clientCn: 'mqtt-ca-connector', denyRole: 'mqtt-ca-blocked', notifyTopic: 'mqtt-ca/events' };

describe('broker-setup for Mosquitto and the bus watch', () => {
  it('the topic matcher of this test', () => {
    assert.ok(covers('$SYS/broker/log/#', '$SYS/broker/log/M/subscribe'));
    assert.ok(covers('$SYS/broker/log/#', '$SYS/broker/log/#'));
    assert.ok(!covers('$SYS/broker/log/#', '$SYS/broker/uptime'));
    assert.ok(!covers('$SYS/broker/log/N', '$SYS/broker/log/E'));
  });

  it("the connector role may subscribe to and receive every log topic the watch's $SYS source and the connector read", () => {
    const seed = dynsecSeed({ connectorCn: brokers.clientCn, notifyTopic: brokers.notifyTopic }) as {
      clients: { username: string; roles: { rolename: string }[] }[];
      roles: { rolename: string; acls: { acltype: string; topic: string; allow: boolean }[] }[];
    };
    assert.deepEqual(seed.clients.find((c) => c.username === brokers.clientCn)?.roles, [{ rolename: CONNECTOR_ROLE }]);
    const acls = seed.roles.find((r) => r.rolename === CONNECTOR_ROLE)!.acls;
    const granted = (acltype: string, topic: string) => acls.some((a) => a.acltype === acltype && a.allow && covers(a.topic, topic));
    for (const topic of [...BUS_LOG_TOPICS, BROKER_LOG_TOPIC]) {
      assert.ok(granted('subscribePattern', topic), `subscribe ${topic}`);
      assert.ok(granted('publishClientReceive', topic), `receive ${topic}`);
    }
    assert.ok(granted('publishClientSend', DYNSEC_TOPIC) && granted('subscribePattern', `${DYNSEC_TOPIC}/response`));
    assert.ok(granted('publishClientSend', `${brokers.notifyTopic}/device-revoked`));
  });

  it('mosquitto.conf logs to $SYS what the watch parses; the debug log file is there, commented out, for the operator to turn on', () => {
    const conf = mosquittoConf({ port: 8883, caFile: 'ca', certFile: 'c', keyFile: 'k', crlFile: 'crl', dynsecFile: 'd' }).split('\n');
    assert.ok(conf.includes('log_dest topic'));
    for (const t of ['error', 'warning', 'notice', 'information', 'subscribe', 'unsubscribe']) assert.ok(conf.includes(`log_type ${t}`), t);
    assert.deepEqual([...MOSQUITTO_LOG_TYPES].sort(), ['error', 'information', 'notice', 'subscribe', 'unsubscribe', 'warning']);
    assert.ok(conf.includes('connection_messages true'));
    // Debug lines go to every destination but $SYS, one or more per message: never on unless asked for.
    assert.ok(!conf.some((l) => /^\s*log_type\s+(debug|all)\b/.test(l)));
    assert.ok(!conf.some((l) => /^\s*log_dest\s+file\b/.test(l)));
    assert.ok(conf.includes('#log_dest file /var/log/mosquitto/mosquitto.log'));
    assert.ok(conf.includes('#log_type debug'));
    assert.ok(conf.some((l) => l.includes('BUS_WATCH_LOG_FILE')));
  });

  it('the files it writes: the conf, the seed with the connector role, and a README naming what the watch reads', async () => {
    const dir = tempDir();
    const files = await writeBrokerSetup(
      {
        config: { brokers, publicUrl: 'https://ca.example' },
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
      },
      { dir, certFile: '/etc/mosquitto/certs/server.pem', keyFile: '/etc/mosquitto/certs/server.key' },
    );
    const conf = readFileSync(files.paths['mosquitto.conf']!, 'utf8');
    assert.match(conf, /^log_dest topic$/m);
    assert.match(conf, /^#log_type debug$/m);
    const seed = JSON.parse(readFileSync(files.paths['dynamic-security.json']!, 'utf8')) as {
      roles: { rolename: string; acls: { topic: string }[] }[];
    };
    assert.ok(seed.roles.find((r) => r.rolename === CONNECTOR_ROLE)!.acls.some((a) => a.topic === '$SYS/broker/log/#'));
    const readme = readFileSync(files.readmeFile, 'utf8');
    assert.match(readme, /bus watch reads the broker log on \$SYS\/broker\/log\/#/);
    assert.match(readme, /BUS_WATCH_LOG_FILE/);
  });
});
