import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { availableParallelism, tmpdir } from 'node:os';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, ConfigError } from '../../src/config/config.js';
import { parseKek, deriveKey, KekError } from '../../src/ca/kek.js';
import { seal, unseal, UnsealError } from '../../src/ca/envelope.js';

describe('configuration', () => {
  it('has embedded defaults and derives PUBLIC_URL from HOST and PORT', () => {
    const c = loadConfig({});
    assert.equal(c.port, 8080);
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.publicUrl, 'http://127.0.0.1:8080');
    assert.equal(c.databaseUrl, undefined);
    assert.match(c.dataDir, /\/data$/);
    assert.equal(loadConfig({ PUBLIC_URL: 'https://ca.grid.example/' }).publicUrl, 'https://ca.grid.example');
    assert.equal(loadConfig({ DATABASE_URL: '' }).databaseUrl, undefined);
  });

  it('names the variable that is wrong', () => {
    const bad: Record<string, string>[] = [
      { PORT: '70000' },
      { PORT: 'http' },
      { PUBLIC_URL: 'ftp://x' },
      { DATABASE_URL: 'sqlite://x' },
      { REDIS_URL: 'localhost:6379' },
      { ADMIN_API_KEY: 'too-short' },
      { BODY_LIMIT: 'lots' },
    ];
    for (const env of bad) {
      const name = Object.keys(env)[0]!;
      assert.throws(
        () => loadConfig(env),
        (e: unknown) => e instanceof ConfigError && e.message.includes(`${name}:`),
        name,
      );
    }
    assert.throws(() => loadConfig({ MQTT_CA_KEK: 'a', MQTT_CA_KEK_FILE: '/x' }), /MQTT_CA_KEK and MQTT_CA_KEK_FILE/);
    // The NATS connector: its users file, one way to reload, the monitor to confirm on.
    const nats = { BROKER_NATS_USERS_FILE: '/etc/nats/nats-users.conf', BROKER_NATS_MONITOR_URL: 'http://127.0.0.1:8222' };
    assert.deepEqual(loadConfig({ ...nats, BROKER_NATS_PID_FILE: '/run/nats.pid' }).brokers.nats, {
      usersFile: '/etc/nats/nats-users.conf',
      blockFile: undefined,
      reload: { pidFile: '/run/nats.pid' },
      monitorUrl: 'http://127.0.0.1:8222',
      syncMs: 60_000,
    });
    assert.deepEqual(loadConfig({ ...nats, BROKER_NATS_RELOAD_COMMAND: 'systemctl reload nats' }).brokers.nats?.reload, {
      command: 'systemctl reload nats',
    });
    assert.equal(loadConfig({}).brokers.nats, undefined);
    assert.throws(() => loadConfig(nats), /exactly one, with BROKER_NATS_USERS_FILE/);
    assert.throws(() => loadConfig({ ...nats, BROKER_NATS_PID_FILE: '/a', BROKER_NATS_RELOAD_COMMAND: 'b' }), /exactly one/);
    assert.throws(() => loadConfig({ BROKER_NATS_USERS_FILE: '/x', BROKER_NATS_PID_FILE: '/a' }), /BROKER_NATS_MONITOR_URL: required/);
    assert.throws(() => loadConfig({ BROKER_NATS_PID_FILE: '/a' }), /BROKER_NATS_USERS_FILE: required/);
    assert.throws(() => loadConfig({ ...nats, BROKER_NATS_PID_FILE: '/a', BROKER_NATS_MONITOR_URL: 'ftp://x' }), /BROKER_NATS_MONITOR_URL/);
  });

  it('BUS_EVENT_SECRETS (or _FILE): broker id -> secret of >= 32 characters, optionally what it reports; never echoes a secret', () => {
    assert.deepEqual(loadConfig({}).busEventBrokers, []);
    const secrets = { 'emqx-1': 's'.repeat(32), 'hive.mq:2': { secret: 't'.repeat(40), reports: 'generic' } };
    const expected = [
      { id: 'emqx-1', secret: 's'.repeat(32), reports: 'emqx' },
      { id: 'hive.mq:2', secret: 't'.repeat(40), reports: 'generic' },
    ];
    assert.deepEqual(loadConfig({ BUS_EVENT_SECRETS: JSON.stringify(secrets) }).busEventBrokers, expected);
    const file = join(mkdtempSync(join(tmpdir(), 'mqttca-cfg-')), 'bus-secrets.json');
    writeFileSync(file, JSON.stringify(secrets), { mode: 0o600 });
    assert.deepEqual(loadConfig({ BUS_EVENT_SECRETS_FILE: file }).busEventBrokers, expected);
    const refused: [Record<string, string>, RegExp][] = [
      [{ BUS_EVENT_SECRETS: 'not json' }, /BUS_EVENT_SECRETS: not JSON/],
      [{ BUS_EVENT_SECRETS: '{}' }, /BUS_EVENT_SECRETS: name at least one broker/],
      [{ BUS_EVENT_SECRETS: '["x"]' }, /BUS_EVENT_SECRETS/],
      [{ BUS_EVENT_SECRETS: JSON.stringify({ 'emqx-1': 'short-secret' }) }, /BUS_EVENT_SECRETS\.emqx-1: must be at least 32 characters/],
      [{ BUS_EVENT_SECRETS: JSON.stringify({ 'bad id!': 'x'.repeat(32) }) }, /BUS_EVENT_SECRETS: "bad id!" is not a broker id/],
      [
        { BUS_EVENT_SECRETS: JSON.stringify({ e: { secret: 'x'.repeat(32), reports: 'mosquitto' } }) },
        /BUS_EVENT_SECRETS\.e: a secret .* "reports": "emqx" \| "generic"/,
      ],
      [{ BUS_EVENT_SECRETS: '{}', BUS_EVENT_SECRETS_FILE: file }, /set one, not both/],
      [{ BUS_EVENT_SECRETS_FILE: `${file}.missing` }, /BUS_EVENT_SECRETS_FILE: cannot read .* \(ENOENT\)/],
    ];
    for (const [env, message] of refused)
      assert.throws(
        () => loadConfig(env),
        (e: unknown) => e instanceof ConfigError && message.test(e.message) && !e.message.includes('short-secret'),
        JSON.stringify(env),
      );
  });
});

describe('serve processes', () => {
  const pg = 'postgres://postgres@127.0.0.1:5432/x';
  it('uses every core with PostgreSQL and one process on the embedded store, which one process opens', () => {
    assert.equal(loadConfig({}).serveProcesses, 1);
    assert.equal(loadConfig({ DATABASE_URL: pg }).serveProcesses, availableParallelism());
    assert.equal(loadConfig({ DATABASE_URL: pg, SERVE_PROCESSES: '3' }).serveProcesses, 3);
    assert.equal(loadConfig({ SERVE_PROCESSES: '1' }).serveProcesses, 1);
    assert.throws(
      () => loadConfig({ SERVE_PROCESSES: '2' }),
      (e: unknown) => e instanceof ConfigError && /SERVE_PROCESSES: the embedded store/.test(e.message),
    );
    assert.throws(() => loadConfig({ DATABASE_URL: pg, SERVE_PROCESSES: '0' }), /SERVE_PROCESSES/);
    assert.throws(() => loadConfig({ DATABASE_URL: pg, SERVE_PROCESSES: 'all' }), /SERVE_PROCESSES/);
  });
});

describe('key custody', () => {
  const kek = parseKek(randomBytes(32).toString('base64'), 'test');

  it('reads a KEK as hex or base64, and refuses anything but 32 bytes', () => {
    const raw = randomBytes(32);
    assert.equal(parseKek(raw.toString('hex'), 'x').id, parseKek(raw.toString('base64'), 'x').id);
    assert.throws(
      () => parseKek(randomBytes(16).toString('base64'), 'MQTT_CA_KEK'),
      (e: unknown) => e instanceof KekError && /MQTT_CA_KEK: .*32 bytes/.test(e.message),
    );
  });

  it('seals with a fresh data key each time, opens with the right KEK only, and detects tampering and swapping', () => {
    const secret = randomBytes(121);
    const a = seal(kek, secret, 'key_1');
    const b = seal(kek, secret, 'key_1');
    assert.ok(!a.ciphertext.equals(b.ciphertext) && !a.wrappedDek.equals(b.wrappedDek));
    assert.ok(!a.ciphertext.includes(secret.subarray(0, 16)), 'the ciphertext does not contain the plaintext');
    assert.deepEqual(unseal(kek, a, 'key_1'), secret);
    const other = parseKek(randomBytes(32).toString('base64'), 'other');
    assert.throws(() => unseal(other, a, 'key_1'), UnsealError);
    assert.throws(() => unseal(other, { ...a, kekId: other.id }, 'key_1'), /wrong KEK or altered/);
    assert.throws(() => unseal(kek, a, 'key_2'), /wrong KEK or altered/); // bound to its row
    const flipped = Buffer.from(a.ciphertext);
    flipped[flipped.length - 1] = flipped[flipped.length - 1]! ^ 1;
    assert.throws(() => unseal(kek, { ...a, ciphertext: flipped }, 'key_1'), /altered/);
  });

  it('derives independent purpose keys from the KEK', () => {
    assert.notDeepEqual(deriveKey(kek, 'audit chain'), deriveKey(kek, 'something else'));
    assert.equal(deriveKey(kek, 'audit chain').length, 32);
    assert.ok(!deriveKey(kek, 'audit chain').equals(kek.key));
  });
});
