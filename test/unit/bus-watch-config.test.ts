// BUS_WATCH settings: on by default with a broker or a log file, off without; refused when on with nothing to watch.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { ConfigError, loadConfig } from '../../src/config/config.js';

const base = { MQTT_CA_KEK: Buffer.alloc(32, 1).toString('base64') };
const broker = { BROKER_MQTT_URL: 'mqtts://broker.example:8883' };

describe('bus watch settings', () => {
  it('off without a broker or a log file; on by default with either', () => {
    assert.deepEqual(loadConfig(base).busWatch, { enabled: false });
    assert.deepEqual(loadConfig({ ...base, ...broker }).busWatch, { enabled: true });
    assert.deepEqual(loadConfig({ ...base, BUS_WATCH_LOG_FILE: 'log/mosquitto.log' }).busWatch, {
      enabled: true,
      logFile: { path: resolve('log/mosquitto.log'), broker: 'mosquitto' },
    });
  });

  it('BUS_WATCH=off turns it off; the file broker id is checked', () => {
    assert.equal(loadConfig({ ...base, ...broker, BUS_WATCH: 'off' }).busWatch.enabled, false);
    assert.equal(loadConfig({ ...base, BUS_WATCH_LOG_FILE: '/l', BUS_WATCH_LOG_FILE_BROKER: 'edge-2' }).busWatch.logFile?.broker, 'edge-2');
    for (const [env, message] of [
      [{ BUS_WATCH: 'on' }, /BUS_WATCH: on needs something to watch/],
      [{ ...broker, BUS_WATCH: 'yes' }, /BUS_WATCH/],
      [{ BUS_WATCH_LOG_FILE: '/l', BUS_WATCH_LOG_FILE_BROKER: 'a b' }, /BUS_WATCH_LOG_FILE_BROKER/],
    ] as const)
      assert.throws(
        () => loadConfig({ ...base, ...env }),
        (e: unknown) => e instanceof ConfigError && message.test(e.message),
      );
  });
});
