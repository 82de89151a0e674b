import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDb, migrateLatest, pgliteDirUnder } from '../../src/store/db.js';
import { databaseUrlOf, disposeDb, postgresTarget } from '../helpers/db.js';
import { envSkip } from '../helpers/tools.js';

const ROOT = join(import.meta.dirname, '../..');
/** tsx by path: the CLI also runs from directories outside the repository. */
const TSX = import.meta.resolve('tsx');
const CLI = join(ROOT, 'src/cli.ts');
/** The installed command (package.json "bin"), as `npx mqtt-ca` runs it. */
const BIN = join(ROOT, 'bin/mqtt-ca.js');

/** The CLI as a user runs it, on embedded PGlite under its own DATA_DIR (or in `cwd` with the default ./data). */
function cli(args: string[], env: Record<string, string>, opts: { cwd?: string; bin?: boolean } = {}) {
  const base = { ...process.env };
  delete base.DATABASE_URL; // embedded store
  delete base.REDIS_URL; // in-process jobs, as on a fresh machine
  delete base.MQTT_CA_KEK;
  delete base.DATA_DIR;
  const r = spawnSync(process.execPath, opts.bin ? [BIN, ...args] : ['--import', TSX, CLI, ...args], {
    env: { ...base, LOG_LEVEL: 'warn', ...env },
    encoding: 'utf8',
    timeout: 120_000,
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `mqtt-ca serve` on the embedded store in DATA_DIR, once it listens. */
async function serve(
  env: Record<string, string>,
): Promise<{ child: ChildProcess; url: string; output: () => string; exited: Promise<number | null> }> {
  const base = { ...process.env };
  delete base.DATABASE_URL;
  delete base.REDIS_URL;
  const child = spawn(process.execPath, ['--import', TSX, CLI, 'serve'], { env: { ...base, ...env, PORT: '0', LOG_LEVEL: 'info' } });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  for (let i = 0; i < 1200 && !/listening on http:\/\/[\d.]+:\d+/.test(out) && child.exitCode === null; i++)
    await new Promise((r) => setTimeout(r, 50));
  const url = /listening on (http:\/\/[\d.]+:\d+)/.exec(out)?.[1];
  assert.ok(url, `server did not start: ${out}`);
  return { child, url, output: () => out, exited };
}

/** Every file and directory under `dir` (symbolic links left out) with its permission bits. */
function modesUnder(dir: string): { path: string; dir: boolean; mode: number }[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (st.isSymbolicLink()) return [];
    const here = { path, dir: st.isDirectory(), mode: st.mode & 0o777 };
    return st.isDirectory() ? [here, ...modesUnder(path)] : [here];
  });
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
    for (const [name, value] of [
      ['PORT', 'eighty'],
      ['DATABASE_URL', 'mysql://x'],
      ['PUBLIC_URL', 'not a url'],
      ['REDIS_URL', 'http://x'],
      ['ADMIN_API_KEY', 'short'],
      ['LOG_LEVEL', 'loud'],
    ] as const) {
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
    const cas = (await (await fetch(`${url}/v1/cas`, { headers: { Authorization: `Bearer ${adminKey}` } })).json()) as {
      items: { id: string; isDefaultIssuer: boolean }[];
    };
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

  it('keeps every file init and serve made to the service user: directories 0700, files 0600', () => {
    const entries = [{ path: dataDir, dir: true, mode: statSync(dataDir).mode & 0o777 }, ...modesUnder(dataDir)];
    assert.ok(entries.filter((e) => e.path.includes('/pglite/')).length > 900, 'the PGlite files are there');
    const loose = entries.filter((e) => e.mode !== (e.dir ? 0o700 : 0o600));
    assert.deepEqual(
      loose.map((e) => `${e.path} ${e.mode.toString(8)}`),
      [],
    );
    assert.ok(!existsSync(join(dataDir, 'pglite.pid')), 'the store lock went with the process');
  });

  it('refuses apikey create (and the other commands) while serve holds the embedded store, naming its pid, and loses nothing', async () => {
    const adminKey = readFileSync(join(dataDir, 'admin-api-key'), 'utf8').trim();
    const auth = { headers: { Authorization: `Bearer ${adminKey}` } };
    const keysOf = async (url: string) =>
      (
        (await (await fetch(`${url}/v1/api-keys`, auth)).json()) as { items: { id: string; name: string; revokedAt: string | null }[] }
      ).items.map((k) => `${k.id} ${k.name} ${k.revokedAt}`);
    const s = await serve(env);
    try {
      const before = await keysOf(s.url);
      const created = cli(['apikey', 'create', '--name', 'made while serving', '--role', 'auditor'], env);
      assert.equal(created.status, 2, created.stdout + created.stderr);
      assert.doesNotMatch(created.stdout, /mqca_/, 'no key is printed that the service would never know');
      assert.match(created.stderr, new RegExp(`in use by pid ${s.child.pid} \\(mqtt-ca serve`));
      assert.match(created.stderr, /through the running service's API .*\/v1\/api-keys.* or stop that process/);
      for (const args of [
        ['apikey', 'list'],
        ['audit', 'verify'],
        ['backup'],
        ['broker-setup', '--dir', join(dataDir, 'broker'), '--dns', 'broker.example'],
      ]) {
        const r = cli(args, env);
        assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
        assert.match(r.stderr, new RegExp(`in use by pid ${s.child.pid}`), args.join(' '));
      }
      assert.deepEqual(await keysOf(s.url), before, 'the refused commands changed nothing');
    } finally {
      s.child.kill('SIGTERM');
    }
    assert.equal(await s.exited, 0);

    // Once serve has stopped, the same command works, and its key is one the service knows.
    const after = cli(['apikey', 'create', '--name', 'made while stopped', '--role', 'auditor'], env);
    assert.equal(after.status, 0, after.stderr);
    const key = /^key:\s+(mqca_\S+)$/m.exec(after.stdout)?.[1];
    const again = await serve(env);
    try {
      assert.equal((await fetch(`${again.url}/v1/cas`, { headers: { Authorization: `Bearer ${key}` } })).status, 200);
      assert.ok((await keysOf(again.url)).some((k) => k.includes(' made while stopped ')));
    } finally {
      // A holder killed outright leaves a stale lock: its pid is gone, so the next command takes it over.
      again.child.kill('SIGKILL');
    }
    await again.exited;
    assert.ok(existsSync(join(dataDir, 'pglite.pid')), 'SIGKILL left the lock file behind');
    const list = cli(['apikey', 'list'], env);
    assert.equal(list.status, 0, list.stderr);
    assert.match(list.stdout, /made while stopped/);
  });

  it('refuses a DATA_DIR others can write to or another user owns, saying how to fix it, and tightens what older versions left looser', () => {
    const refused = (what: string) => {
      const r = cli(['apikey', 'list'], env);
      assert.equal(r.status, 2, `${what}: ${r.stdout}${r.stderr}`);
      return r.stderr;
    };
    chmodSync(dataDir, 0o777);
    assert.match(
      refused('DATA_DIR 0777'),
      new RegExp(`${dataDir} can be written by users other than its owner \\(mode 777\\).*chmod -R go-rwx ${dataDir}`),
    );
    assert.equal(cli(['serve'], { ...env, PORT: '0' }).status, 2, 'serve does not start on it either');
    chmodSync(dataDir, 0o770);
    refused('DATA_DIR 0770');
    chmodSync(dataDir, 0o700);
    chmodSync(pgliteDirUnder(dataDir), 0o757);
    assert.match(refused('the store 0757'), new RegExp(`${pgliteDirUnder(dataDir)} can be written by users other than its owner`));
    chmodSync(pgliteDirUnder(dataDir), 0o700);
    if (process.getuid!() === 0) {
      // Only root can hand the directory to another user.
      chownSync(dataDir, 65534, 65534);
      assert.match(refused('owned by nobody'), /is owned by uid 65534, not by the user running mqtt-ca \(uid 0\)/);
      chownSync(dataDir, 0, 0);
    }
    // What an older version left (a 0755 store, 0644 and 0666 files) is made private at the next start.
    chmodSync(join(dataDir, 'admin-api-key'), 0o644);
    chmodSync(join(dataDir, 'pglite', 'PG_VERSION'), 0o666);
    chmodSync(join(dataDir, 'pglite', 'base'), 0o755);
    const ok = cli(['apikey', 'list'], env);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(statSync(join(dataDir, 'admin-api-key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dataDir, 'pglite', 'PG_VERSION')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dataDir, 'pglite', 'base')).mode & 0o777, 0o700);
  });
});

describe('mqtt-ca run outside the repository, where there is no store', () => {
  let cwd: string;
  before(() => {
    cwd = realpathSync(mkdtempSync(join(tmpdir(), 'mqttca-cwd-')));
  });
  after(() => rmSync(cwd, { recursive: true, force: true }));

  it('every command but init and serve exits 2 naming the DATA_DIR it looked at, and creates nothing (no ./data, no KEK)', () => {
    const commands = [
      ['apikey', 'list'],
      ['apikey', 'create', '--name', 'x', '--role', 'admin'],
      ['apikey', 'revoke', 'ak_x'],
      ['audit', 'verify'],
      ['backup'],
      ['broker-setup', '--dir', 'broker', '--dns', 'broker.example'],
      ['migrate'],
      ['worker'],
    ];
    for (const args of commands) {
      const r = cli(args, { REDIS_URL: 'redis://127.0.0.1:6379' }, { cwd, bin: true });
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, new RegExp(`no store at DATA_DIR=${join(cwd, 'data')} .*mqtt-ca init`), args.join(' '));
      assert.deepEqual(readdirSync(cwd), [], `${args.join(' ')} created nothing`);
    }
  });

  it('a store with a schema but no CA is refused too, and gets no KEK', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqttca-empty-'));
    try {
      const db = createDb({ pgliteDir: pgliteDirUnder(dir) });
      await migrateLatest(db);
      await db.destroy();
      const r = cli(['apikey', 'list'], { DATA_DIR: dir }, { cwd });
      assert.equal(r.status, 2, r.stdout + r.stderr);
      assert.match(r.stderr, new RegExp(`the store at DATA_DIR=${dir} holds no CA`));
      assert.ok(!existsSync(join(dir, 'kek')), 'no KEK was made');
      assert.deepEqual(readdirSync(cwd), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it(
    'on PostgreSQL, a database without a CA is refused naming DATABASE_URL (without its password), and nothing is created',
    { skip: envSkip('DATABASE_URL', 'this PostgreSQL-only test is') },
    async () => {
      const db = await postgresTarget.create();
      try {
        const url = databaseUrlOf(db);
        const r = cli(['apikey', 'create', '--name', 'x', '--role', 'admin'], { DATABASE_URL: url }, { cwd, bin: true });
        assert.equal(r.status, 2, r.stdout + r.stderr);
        const shown = new URL(url);
        if (shown.password) shown.password = '***';
        assert.ok(r.stderr.includes(`the store at DATABASE_URL=${shown.toString()} holds no CA`), r.stderr);
        assert.deepEqual(readdirSync(cwd), [], 'no ./data, no KEK');
        const [keys] = await db('api_keys').count({ n: '*' });
        assert.equal(Number(keys!.n), 0);
      } finally {
        await disposeDb(db);
      }
    },
  );

  it('works as a command with no build step: --version, and --help lists every setting docs/configuration.md documents', () => {
    const version = cli(['--version'], {}, { cwd, bin: true });
    assert.equal(version.status, 0, version.stderr);
    assert.equal(version.stdout.trim(), (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
    const help = cli(['--help'], {}, { cwd, bin: true });
    assert.equal(help.status, 0, help.stderr);
    const listed = [...help.stdout.split('Settings it reads from the environment')[1]!.matchAll(/^ {2}([A-Z][A-Z0-9_]+)\b/gm)].map(
      (m) => m[1]!,
    );
    const table = readFileSync(join(ROOT, 'docs', 'configuration.md'), 'utf8');
    const documented = [...table.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \|/gm)].map((m) => m[1]!);
    assert.ok(listed.includes('DATA_DIR') && listed.includes('DATABASE_URL') && listed.includes('MQTT_CA_KEK_FILE'), help.stdout);
    assert.ok(documented.length > 40);
    assert.deepEqual(
      documented.filter((name) => !listed.includes(name)),
      [],
      'every setting of the docs/configuration.md table is in --help',
    );
    assert.equal(new Set(listed).size, listed.length);
    assert.match(help.stdout, /DATA_DIR\s+\(default \.\/data\)/);
    assert.deepEqual(readdirSync(cwd), []);
  });
});
