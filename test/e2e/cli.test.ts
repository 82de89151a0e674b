import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDb, pgliteDirUnder } from '../../src/store/db.js';

const CLI = join(import.meta.dirname, '../../src/cli.ts');

/** The CLI as a user runs it, on embedded PGlite under its own DATA_DIR. */
function cli(args: string[], env: Record<string, string>) {
  const base = { ...process.env };
  delete base.DATABASE_URL; // embedded store
  delete base.REDIS_URL; // in-process jobs, as on a fresh machine
  delete base.MQTT_CA_KEK;
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    env: { ...base, LOG_LEVEL: 'warn', ...env },
    encoding: 'utf8',
    timeout: 120_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('mqtt-ca CLI on the embedded store', () => {
  let dataDir: string;
  let env: Record<string, string>;
  before(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'mqttca-cli-'));
    env = { DATA_DIR: dataDir };
  });
  after(() => rmSync(dataDir, { recursive: true, force: true }));

  it('init makes a CA and an admin key on first run, keeps the KEK and key files private, and is idempotent', () => {
    const r = cli(['init'], env);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Initialised a new CA: root ca_[0-9a-f]+, issuing CA ca_[0-9a-f]+/);
    // The generated admin key goes only to its 0600 file; the console says where, never the key.
    assert.ok(r.stdout.includes(`it is in ${join(dataDir, 'admin-api-key')} (mode 0600`), r.stdout);
    const key = readFileSync(join(dataDir, 'admin-api-key'), 'utf8').trim();
    assert.match(key, /^mqca_/);
    assert.ok(!(r.stdout + r.stderr).includes(key), 'the admin key is not printed');
    assert.equal(statSync(join(dataDir, 'admin-api-key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dataDir, 'kek')).mode & 0o777, 0o600);
    assert.match(r.stdout + r.stderr, /created a new key-encryption key/);
    const again = cli(['init'], env);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /already initialised/);
    assert.doesNotMatch(again.stdout, /mqca_/);
  });

  it('migrate reports the state of the schema', () => {
    const r = cli(['migrate'], env);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /already up to date/);
  });

  it('apikey create, list and revoke; a bad role is refused', () => {
    const created = cli(['apikey', 'create', '--name', 'line 3 provisioning', '--role', 'provisioner'], env);
    assert.equal(created.status, 0, created.stderr);
    const id = /^id:\s+(\S+)$/m.exec(created.stdout)?.[1];
    assert.match(created.stdout, /^key:\s+mqca_/m);
    const list = cli(['apikey', 'list'], env);
    assert.match(list.stdout, new RegExp(`${id}\\tprovisioner\\tline 3 provisioning\\tactive`));
    assert.equal(cli(['apikey', 'revoke', id!], env).status, 0);
    assert.match(cli(['apikey', 'list'], env).stdout, new RegExp(`${id}\\tprovisioner\\tline 3 provisioning\\trevoked`));
    const bad = cli(['apikey', 'create', '--name', 'x', '--role', 'root'], env);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /admin, operator, provisioner, auditor/);
    const unknown = cli(['apikey', 'revoke', 'ak_nope'], env);
    assert.notEqual(unknown.status, 0);
  });

  it('audit verify passes on an intact log and names the first altered entry after tampering', async () => {
    const ok = cli(['audit', 'verify'], env);
    assert.equal(ok.status, 0, ok.stderr);
    const n = Number(/intact: (\d+) entries/.exec(ok.stdout)?.[1]);
    assert.ok(n >= 5);
    // An attacker with database access edits entry 3 (the trigger has to be switched off to do it).
    const db = createDb({ pgliteDir: pgliteDirUnder(dataDir) });
    await db.raw('alter table audit_log disable trigger audit_log_no_update');
    await db.raw(`update audit_log set actor = 'someone-else' where seq = 3`);
    await db.destroy();
    const bad = cli(['audit', 'verify'], env);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /BROKEN at seq 3: altered/);
  });

  it('audit verify reports entries deleted from the end of the log, which the chain alone cannot show', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqttca-cli-tail-'));
    try {
      const e = { DATA_DIR: dir };
      assert.equal(cli(['init'], e).status, 0);
      const ok = cli(['audit', 'verify'], e);
      assert.equal(ok.status, 0, ok.stderr);
      const n = Number(/intact: (\d+) entries/.exec(ok.stdout)?.[1]);
      assert.ok(n >= 5, ok.stdout);
      // A checkpoint brought from the log stream is checked too: one not signed with this KEK is refused.
      const anchor = JSON.parse(readFileSync(join(dir, 'audit-anchor'), 'utf8')) as Record<string, unknown>;
      const forged = cli(['audit', 'verify', '--checkpoint', JSON.stringify({ ...anchor, seq: Number(anchor.seq) + 5 })], e);
      assert.equal(forged.status, 1, forged.stdout);
      assert.match(forged.stderr, /anchor FORGED: the checkpoint in --checkpoint #1 is malformed or not signed with this KEK/);
      // An attacker with database access deletes the two newest entries (the trigger has to be switched off to do it).
      const db = createDb({ pgliteDir: pgliteDirUnder(dir) });
      await db.raw('alter table audit_log disable trigger audit_log_no_update');
      await db.raw('delete from audit_log where seq > ?', [n - 2]);
      await db.destroy();
      const cut = cli(['audit', 'verify'], e);
      assert.equal(cut.status, 1, cut.stdout);
      assert.match(cut.stderr, new RegExp(`TAIL MISSING: seq ${n - 1}\\.\\.${n} are missing from the end of the chain`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start with a wrong KEK, or none, naming what to set', () => {
    const wrong = cli(['init'], { ...env, MQTT_CA_KEK: randomBytes(32).toString('base64') });
    assert.equal(wrong.status, 1);
    assert.match(wrong.stderr, /key-encryption key from MQTT_CA_KEK .* is not the one this store's keys are wrapped with/);
    const short = cli(['init'], { ...env, MQTT_CA_KEK: 'abcd' });
    assert.equal(short.status, 1);
    assert.match(short.stderr, /MQTT_CA_KEK: the key-encryption key must be 32 bytes/);
    const missingFile = cli(['init'], { ...env, MQTT_CA_KEK_FILE: join(dataDir, 'no-such-file') });
    assert.match(missingFile.stderr, /MQTT_CA_KEK_FILE: .* does not exist/);
    // The right KEK, given explicitly from the file, works.
    const right = cli(['apikey', 'list'], { ...env, MQTT_CA_KEK_FILE: join(dataDir, 'kek') });
    assert.equal(right.status, 0, right.stderr);
    // Losing the KEK file does not silently make a new one for a store that has keys.
    const moved = join(dataDir, 'kek.bak');
    spawnSync('mv', [join(dataDir, 'kek'), moved]);
    const lost = cli(['init'], env);
    assert.equal(lost.status, 1);
    assert.match(lost.stderr, /no key-encryption key: set MQTT_CA_KEK or MQTT_CA_KEK_FILE/);
    assert.ok(!existsSync(join(dataDir, 'kek')));
    spawnSync('mv', [moved, join(dataDir, 'kek')]);
  });

  it('stops on bad configuration with a message that names the variable', () => {
    for (const [name, value] of [['PORT', 'eighty'], ['DATABASE_URL', 'mysql://x'], ['PUBLIC_URL', 'not a url'], ['REDIS_URL', 'http://x'], ['ADMIN_API_KEY', 'short'], ['LOG_LEVEL', 'loud']] as const) {
      const r = cli(['init'], { ...env, [name]: value });
      assert.equal(r.status, 1, `${name}=${value}`);
      assert.match(r.stderr, new RegExp(`${name}:`), r.stderr);
    }
  });

  it('serve starts on the embedded store, answers, keeps secrets out of its logs, and stops cleanly on SIGTERM', async () => {
    const adminKey = readFileSync(join(dataDir, 'admin-api-key'), 'utf8').trim();
    const base = { ...process.env };
    delete base.DATABASE_URL;
    delete base.REDIS_URL;
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'serve'], { env: { ...base, ...env, PORT: '0', LOG_LEVEL: 'info' } });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    for (let i = 0; i < 600 && !/listening on http:\/\/[\d.]+:\d+/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
    const url = /listening on (http:\/\/[\d.]+:\d+)/.exec(out)?.[1];
    assert.ok(url, `server did not start: ${out}`);
    assert.equal((await fetch(`${url}/healthz`)).status, 200);
    const cas = await (await fetch(`${url}/v1/cas`, { headers: { Authorization: `Bearer ${adminKey}` } })).json() as { items: { id: string; isDefaultIssuer: boolean }[] };
    const issuing = cas.items.find((c) => c.isDefaultIssuer)!;
    const pem = await fetch(`${url}/pki/ca/${issuing.id}.pem`);
    assert.equal(pem.status, 200);
    assert.equal((await fetch(`${url}/v1/cas`, { headers: { Authorization: 'Bearer wrong-key-value-1234' } })).status, 401);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.ok(!out.includes(adminKey), 'the admin key never appears in the logs');
    assert.ok(!out.includes('wrong-key-value-1234'), 'presented credentials are not logged');
    const kek = readFileSync(join(dataDir, 'kek'), 'utf8').trim();
    assert.ok(!out.includes(kek), 'the KEK is not logged');
    assert.match(out, /"msg":"request"/);
  });
});
