// `mqtt-ca serve` with BUS_WATCH_LOG_FILE: it listens without waiting for the watch (the log file is
// missing at first: a failed start, retried), follows the file once it appears, and a restart of
// the service closes the gap its stop left open.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/openssl.js';
import { startServe, until, type Served } from '../helpers/processes.js';

interface Source {
  kind: string;
  up: boolean;
  why?: string;
  events: Record<string, number>;
  gaps: { why: string; from: string; to: string | null; source: string }[];
}

describe('serve with the bus watch on a Mosquitto log file', () => {
  const dir = tempDir();
  const logFile = join(dir, 'mosquitto.log');
  const env = { MQTT_CA_KEK: randomBytes(32).toString('base64'), DATA_DIR: join(dir, 'data'), BUS_WATCH_LOG_FILE: logFile };
  let served: Served | undefined;
  after(async () => {
    await served?.stop();
  });
  const fileSource = async (s: Served): Promise<Source> => {
    const res = await fetch(`${s.url}/v1/bus/watch`, { headers: { Authorization: `Bearer ${s.adminKey}` } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { running: boolean; sources: Source[] };
    assert.equal(body.running, true);
    return body.sources.find((x) => x.kind === 'mosquitto-log-file')!;
  };

  it('listens with the file missing (start-failed, retried), then follows it; a restart closes the gap of the stop', async () => {
    served = await startServe(env);
    const first = await until(
      'the watch tried',
      async () => (await fileSource(served!)).why === 'start-failed' && fileSource(served!),
      10_000,
    );
    assert.equal(first.up, false);
    writeFileSync(logFile, '');
    await until('the file source up', async () => (await fileSource(served!)).up, 15_000);
    appendFileSync(
      logFile,
      `${Math.floor(Date.now() / 1000)}: New client connected from 127.0.0.1:40000 as dev-1 (p2, c1, k60, u'dev-1').\n`,
    );
    await until('the connect counted', async () => (await fileSource(served!)).events.connect === 1, 10_000);
    await served.stop();
    served = undefined;

    served = await startServe(env);
    const again = await until(
      'the file source up after the restart',
      async () => (await fileSource(served!)).up && fileSource(served!),
      15_000,
    );
    const stopped = again.gaps.find((g) => g.why === 'watch-stopped');
    assert.ok(stopped, JSON.stringify(again.gaps));
    assert.equal(stopped.source, 'watch');
    assert.ok(stopped.to && stopped.to >= stopped.from, 'closed at the next start');
    assert.ok(again.gaps.some((g) => g.why === 'start-failed' && g.to));
  });
});
