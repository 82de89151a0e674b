import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exitCodeForStatus, EXIT } from '../../src/cli/exit-codes.js';
import { safe, table } from '../../src/cli/table.js';
import { isApiInvocation } from '../../src/cli/entry.js';
import { resolveConnection, UsageError } from '../../src/cli/api-client.js';
import { problemText } from '../../src/cli/run.js';

describe('daily-work CLI: exit codes', () => {
  it('maps every status a route answers to the documented code', () => {
    const expected: [number, number][] = [
      [200, EXIT.ok],
      [201, EXIT.ok],
      [202, EXIT.needsApproval],
      [400, EXIT.usage],
      [401, EXIT.forbidden],
      [403, EXIT.forbidden],
      [404, EXIT.notFound],
      [409, EXIT.usage],
      [413, EXIT.usage],
      [415, EXIT.usage],
      [422, EXIT.usage],
      [429, EXIT.failure],
      [500, EXIT.failure],
      [503, EXIT.failure],
    ];
    for (const [status, code] of expected) assert.equal(exitCodeForStatus(status), code, `HTTP ${status}`);
    assert.deepEqual(EXIT, { ok: 0, failure: 1, usage: 2, notFound: 3, forbidden: 4, needsApproval: 5 });
  });
});

describe('daily-work CLI: output', () => {
  it('escapes C0, DEL, C1, ESC and bidi overrides; keeps other text', () => {
    assert.equal(safe('a\u001b[31mb\u0007'), 'a\\x1b[31mb\\x07');
    assert.equal(safe('x\u009b1m\u007f'), 'x\\x9b1m\\x7f');
    assert.equal(safe('abc\u202edcba\u2066'), 'abc\\u202edcba\\u2066');
    assert.equal(safe('line\nbreak\ttab\r'), 'line\\x0abreak\\x09tab\\x0d');
    assert.equal(safe('Zähler Ω 電表'), 'Zähler Ω 電表');
    assert.equal(safe(null), '-');
    assert.equal(safe({ a: '\u001b' }), '{"a":"\\u001b"}'); // JSON escapes it already
  });
  it('aligns columns and escapes every cell', () => {
    const out = table(
      [
        { id: 'a', v: 'x\u001b' },
        { id: 'long-id', v: null },
      ],
      [
        { header: 'ID', value: (r) => r.id },
        { header: 'VALUE', value: (r) => r.v },
      ],
    );
    assert.equal(out, 'ID       VALUE\na        x\\x1b\nlong-id  -');
  });
  it('prints a problem with its row errors, escaped', () => {
    const text = problemText(400, {
      title: 'Bad request',
      detail: 'manifest has 1 bad row',
      errors: [{ row: 2, id: 'bad\u001bid', field: 'id', message: 'id must match' }],
    });
    assert.equal(text, 'mqtt-ca: 400 Bad request: manifest has 1 bad row\n  row 2 (id bad\\x1bid) id: id must match');
  });
});

describe('daily-work CLI: routing and the key', () => {
  it('knows a daily-work invocation past the program options', () => {
    assert.equal(isApiInvocation(['devices', 'list']), true);
    assert.equal(isApiInvocation(['--url', 'http://x', '--key-file', 'f', '--json', 'certs', 'show', 'ab']), true);
    assert.equal(isApiInvocation(['--url=http://x', 'posture']), true);
    assert.equal(isApiInvocation(['serve']), false);
    assert.equal(isApiInvocation(['broker-setup', '--key-file', 'devices']), false);
    assert.equal(isApiInvocation(['--help']), false);
    assert.equal(isApiInvocation([]), false);
  });
  it('takes the key from a file or the environment, never requires argv, and names the file, not the key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqttca-key-'));
    try {
      const file = join(dir, 'key');
      writeFileSync(file, 'mqca_secret\n', { mode: 0o600 });
      const warnings: string[] = [];
      const c = resolveConnection({ keyFile: file }, {}, (m) => warnings.push(m));
      assert.deepEqual(c, { url: 'http://127.0.0.1:8080', key: 'mqca_secret', keySource: file });
      assert.deepEqual(warnings, []);
      assert.equal(resolveConnection({}, { MQTT_CA_KEY_FILE: file, MQTT_CA_URL: 'https://ca.example/' }).url, 'https://ca.example');
      assert.equal(resolveConnection({}, { MQTT_CA_API_KEY: 'mqca_env' }).keySource, 'MQTT_CA_API_KEY');
      assert.throws(() => resolveConnection({}, {}), UsageError);
      assert.throws(() => resolveConnection({ keyFile: join(dir, 'none') }, {}), /cannot read the API key file .*ENOENT/);
      assert.throws(() => resolveConnection({ url: 'http://u:p@h', keyFile: file }, {}), /no user or password/);
      writeFileSync(file, 'two words\n');
      assert.throws(
        () => resolveConnection({ keyFile: file }, {}, () => {}),
        (e: Error) => !e.message.includes('two words'),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
