// The daily-work commands (`mqtt-ca devices|tokens|certs|incidents|approvals|posture`) as a user
// runs them: `node bin/mqtt-ca.js ...` child processes against a real service on PostgreSQL,
// listening on a free port. Outputs, JSON shapes, exit codes, escaping and where the key goes.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHttpHandler } from '../../src/main.js';
import { postgresTarget } from '../helpers/db.js';
import { listenOnLoopback } from '../helpers/http.js';
import { makeApiService } from '../helpers/service.js';
import { p256Csr } from '../helpers/csr.js';
import type { Role } from '../../src/access/api-keys.js';

const BIN = join(import.meta.dirname, '../../bin/mqtt-ca.js');

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** The CLI as a child process, with a clean environment (no MQTT_CA_* from the test's own). */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MQTT_CA_')));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

interface CliService {
  /** http://127.0.0.1:<port> */
  url: string;
  /** A temporary directory of the test's own, holding the key files. */
  dir: string;
  keys: Record<Role, string>;
  /** Each role's key in a file of mode 0600, as --key-file takes it. */
  keyFile: Record<Role, string>;
  api: Awaited<ReturnType<typeof makeApiService>>['api'];
  close(): Promise<void>;
}

/** A service on PostgreSQL (responses checked against openapi.yaml) listening on a free port, for the CLI to talk to. */
async function serveForCli(env: Record<string, string>, dirPrefix: string): Promise<CliService> {
  const made = await makeApiService(postgresTarget, { env });
  const server = await listenOnLoopback(createHttpHandler(made.svc, { validateResponses: true }));
  const dir = mkdtempSync(join(tmpdir(), dirPrefix));
  const keyFile = {} as Record<Role, string>;
  for (const role of ['admin', 'operator', 'provisioner', 'auditor'] as const) {
    keyFile[role] = join(dir, `${role}.key`);
    writeFileSync(keyFile[role], `${made.keys[role]}\n`, { mode: 0o600 });
  }
  return {
    url: server.url,
    dir,
    keys: made.keys,
    keyFile,
    api: made.api,
    async close() {
      await server.close();
      await made.svc.dispose();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A terminal would act on these: C0 controls other than newline, DEL, C1 controls, bidi overrides. */
// eslint-disable-next-line no-control-regex
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/u;

describe('mqtt-ca daily-work commands against a running service', { skip: postgresTarget.skip }, () => {
  let url: string;
  let dir: string;
  let keys: Record<Role, string>;
  let keyFile: Record<Role, string>;
  let api: CliService['api'];
  let close: CliService['close'] | undefined;
  /** The CLI with a role's key file and the URL given as options. */
  const as = (role: Role, args: string[], env: Record<string, string> = {}) =>
    cli(['--url', url, '--key-file', keyFile[role], ...args], env);
  const enroll = async (deviceId: string) => {
    const tok = (
      await api
        .post('/v1/enrollment-tokens')
        .set({ Authorization: `Bearer ${keys.admin}` })
        .send({ deviceId })
        .expect(201)
    ).body as {
      token: string;
    };
    return (
      await api
        .post('/v1/enroll')
        .set({ Authorization: `Bearer ${tok.token}` })
        .send({ csr: p256Csr(deviceId).pem })
        .expect(201)
    ).body as { serial: string };
  };
  const everyOutput: string[] = [];
  const run = async (p: Promise<Run>) => {
    const r = await p;
    everyOutput.push(r.stdout, r.stderr);
    return r;
  };

  before(async () => {
    ({ url, dir, keys, keyFile, api, close } = await serveForCli({ BULK_REVOKE_APPROVAL_THRESHOLD: '1' }, 'mqttca-cli-api-'));
  });
  after(async () => close?.());

  it('refuses to run without a key (2) or with a key on the command line, and a wrong key is 4 with the key unprinted', async () => {
    const [none, argvKey, wrong] = await Promise.all([
      run(cli(['--url', url, 'devices', 'list'])),
      run(cli(['--url', url, 'devices', 'list', '--key', keys.admin])),
      run(cli(['devices', 'list'], { MQTT_CA_URL: url, MQTT_CA_API_KEY: 'mqca_wrongwrongwrongwrong' })),
    ]);
    assert.equal(none.status, 2, none.stderr);
    assert.match(none.stderr, /no API key: give --key-file/);
    assert.equal(argvKey.status, 2, argvKey.stderr);
    assert.match(argvKey.stderr, /unknown option '--key'/);
    assert.equal(wrong.status, 4, wrong.stderr);
    assert.match(wrong.stderr, /^mqtt-ca: 401 /);
    assert.ok(!wrong.stderr.includes('mqca_wrongwrong'), 'the key is not printed');
  });

  it('imports a lot: a bad row is listed by row and nothing is imported (2); the fixed file imports (0)', async () => {
    const bad = join(dir, 'lot.csv');
    writeFileSync(bad, 'id,model,site\nmeter-1,th-20,plant-a\nbad id!,th-20,plant-a\nmeter-3,th-20,plant-a\n');
    const r = await run(as('provisioner', ['devices', 'import', bad, '--lot', 'LOT-1']));
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^mqtt-ca: 400 /);
    assert.match(r.stderr, /row 2 .*id/);
    assert.doesNotMatch(r.stderr, /row [13]\b/);
    // A dry run lists the same rows, and so fails the same way.
    const dryBad = await run(as('provisioner', ['devices', 'import', bad, '--lot', 'LOT-1', '--dry-run']));
    assert.equal(dryBad.status, 2, dryBad.stderr);
    const noRequestId = (t: string) => t.replace(/\(request [^)]*\)/, '');
    assert.equal(noRequestId(dryBad.stderr), noRequestId(r.stderr));
    const listed = await run(as('auditor', ['devices', 'list', '--json']));
    assert.equal((JSON.parse(listed.stdout) as { items: unknown[] }).items.length, 0, 'nothing imported');

    writeFileSync(bad, 'id,model,site\nmeter-1,th-20,plant-a\nmeter-2,th-20,plant-a\nmeter-3,th-20,plant-a\n');
    const [dry, dryJson] = await Promise.all([
      run(as('provisioner', ['devices', 'import', bad, '--lot', 'LOT-1', '--dry-run'])),
      run(as('provisioner', ['devices', 'import', bad, '--lot', 'LOT-1', '--dry-run', '--json'])),
    ]);
    assert.equal(dry.status, 0, dry.stderr);
    assert.match(dry.stdout, /^would import 3 devices \(lot LOT-1\); nothing was imported$/m);
    assert.match(dry.stdout, /^ROW\s+ID\s+KIND\s+LOT\s+MODEL\s+FIRMWARE\s+SITE$/m);
    assert.match(dry.stdout, /^2\s+meter-2\s+client\s+LOT-1\s+th-20\s+-\s+plant-a$/m);
    assert.equal(dryJson.status, 0, dryJson.stderr);
    assert.equal((JSON.parse(dryJson.stdout) as { wouldImport: number }).wouldImport, 3);
    const stillNone = await run(as('auditor', ['devices', 'list', '--json']));
    assert.equal((JSON.parse(stillNone.stdout) as { items: unknown[] }).items.length, 0, 'a dry run imports nothing');
    const ok = await run(as('provisioner', ['devices', 'import', bad, '--lot', 'LOT-1']));
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /imported 3 devices \(lot LOT-1\)/);
    // JSON manifests too, with the hostile fields the next test prints.
    const json = join(dir, 'lot.json');
    writeFileSync(
      json,
      JSON.stringify({
        lot: 'LOT-2',
        devices: [{ id: 'evil-1', model: 'x\u009b31mRED\u009b0m', site: 'abc\u202edcba', labels: { a: 'b' } }],
      }),
    );
    const imported = await run(as('admin', ['devices', 'import', json, '--json']));
    assert.equal(imported.status, 0, imported.stderr);
    assert.deepEqual(JSON.parse(imported.stdout), { imported: 1, lot: 'LOT-2' });
  });

  it('lists devices as a table or the API JSON, with filters and paging by cursor', async () => {
    const [table, page, all, lot, unknownStatus] = await Promise.all([
      run(as('auditor', ['devices', 'list'])),
      run(as('auditor', ['devices', 'list', '--limit', '2', '--json'])),
      run(cli(['devices', 'list', '--all', '--limit', '1', '--json'], { MQTT_CA_URL: url, MQTT_CA_KEY_FILE: keyFile.auditor })),
      run(as('auditor', ['devices', 'list', '--lot', 'LOT-1'])),
      run(as('auditor', ['devices', 'list', '--status', 'sideways'])),
    ]);
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout.split('\n')[0]!, /^ID\s+KIND\s+STATUS\s+LOT\s+MODEL\s+FIRMWARE\s+SITE\s+CERT EXPIRES$/);
    assert.match(table.stdout, /^meter-2\s+client\s+registered\s+LOT-1\s+th-20\s+-\s+plant-a\s+-$/m);
    const p = JSON.parse(page.stdout) as { items: { id: string }[]; nextCursor: string | null };
    assert.deepEqual(Object.keys(p).sort(), ['items', 'nextCursor']);
    assert.equal(p.items.length, 2);
    assert.ok(p.nextCursor);
    const a = JSON.parse(all.stdout) as { items: { id: string }[]; nextCursor: null };
    assert.equal(a.items.length, 4, 'followed the cursor one device at a time');
    assert.equal(a.nextCursor, null);
    assert.deepEqual(new Set(a.items.map((d) => d.id)), new Set(['meter-1', 'meter-2', 'meter-3', 'evil-1']));
    assert.equal(lot.stdout.trim().split('\n').length, 4, lot.stdout);
    assert.doesNotMatch(lot.stdout, /evil-1/);
    assert.equal(unknownStatus.status, 2);
    assert.match(unknownStatus.stderr, /^mqtt-ca: 400 /);
  });

  it('never prints a terminal control character from the database raw', async () => {
    const inc = await run(
      as('operator', [
        'incidents',
        'open',
        '--kind',
        'lost-device',
        '--title',
        'lost \u001b]0;pwned\u0007 \u001b[2J meter',
        '--device',
        'evil-1',
        '--json',
      ]),
    );
    assert.equal(inc.status, 0, inc.stderr);
    const [list, show, incidents] = await Promise.all([
      run(as('auditor', ['devices', 'list', '--lot', 'LOT-2'])),
      run(as('auditor', ['devices', 'show', 'evil-1'])),
      run(as('auditor', ['incidents', 'list'])),
    ]);
    for (const r of [list, show, incidents]) {
      assert.equal(r.status, 0, r.stderr);
      assert.doesNotMatch(r.stdout + r.stderr, RAW_CONTROL);
    }
    assert.match(list.stdout, /x\\x9b31mRED\\x9b0m/);
    assert.match(show.stdout, /site:\s+abc\\u202edcba/);
    assert.match(incidents.stdout, /lost \\x1b\]0;pwned\\x07 \\x1b\[2J meter/);
    // --json is the API's JSON: JSON escapes the controls itself.
    assert.doesNotMatch(inc.stdout, RAW_CONTROL);
    assert.equal((JSON.parse(inc.stdout) as { title: string }).title, 'lost \u001b]0;pwned\u0007 \u001b[2J meter');
  });

  it('shows a device (3 when unknown), makes a token shown once, and revokes only when confirmed', async () => {
    const cert = await enroll('meter-1');
    const [missing, show, tok, noTarget] = await Promise.all([
      run(as('auditor', ['devices', 'show', 'no-such-meter'])),
      run(as('auditor', ['devices', 'show', 'meter-1'])),
      run(as('provisioner', ['tokens', 'create', '--device', 'meter-2', '--json'])),
      run(as('provisioner', ['tokens', 'create'])),
    ]);
    assert.equal(missing.status, 3, missing.stderr);
    assert.match(missing.stderr, /^mqtt-ca: 404 /);
    assert.equal(show.status, 0, show.stderr);
    assert.match(show.stdout, /^status:\s+active$/m);
    assert.match(show.stdout, new RegExp(`^${cert.serial}\\s+issued\\s+device`, 'm'));
    assert.equal(tok.status, 0, tok.stderr);
    const t = JSON.parse(tok.stdout) as { token: string; deviceId: string };
    assert.equal(t.deviceId, 'meter-2');
    assert.match(t.token, /\S{20,}/);
    assert.equal(noTarget.status, 2);

    // No terminal and no --yes: refused before anything is sent.
    const unconfirmed = await run(as('operator', ['certs', 'revoke', cert.serial, '--reason', 'keyCompromise']));
    assert.equal(unconfirmed.status, 2, unconfirmed.stderr);
    assert.match(unconfirmed.stderr, /not confirmed: no terminal .*--yes/);
    const badReason = await run(as('operator', ['certs', 'revoke', cert.serial, '--reason', 'bored', '--yes']));
    assert.equal(badReason.status, 2);
    const auditor = await run(as('auditor', ['certs', 'hold', cert.serial, '--yes']));
    assert.equal(auditor.status, 4, auditor.stderr);
    assert.match(auditor.stderr, /^mqtt-ca: 403 /);
    assert.equal((await run(as('auditor', ['certs', 'show', cert.serial, '--json']))).stdout.includes('"status": "issued"'), true);

    const held = await run(as('operator', ['certs', 'hold', cert.serial, '--yes']));
    assert.equal(held.status, 0, held.stderr);
    assert.match(held.stdout, /^revocation:\s+certificateHold/m);
    assert.match((await run(as('auditor', ['devices', 'show', 'meter-1']))).stdout, /^status:\s+suspended$/m);
    const released = await run(as('operator', ['certs', 'release', cert.serial]));
    assert.equal(released.status, 0, released.stderr);
    assert.match(released.stdout, /^status:\s+issued$/m);

    const revoked = await run(as('operator', ['certs', 'revoke', cert.serial, '--reason', 'keyCompromise', '--yes', '--json']));
    assert.equal(revoked.status, 0, revoked.stderr);
    assert.equal((JSON.parse(revoked.stdout) as { revocation: { reason: string } }).revocation.reason, 'keyCompromise');
    const [again, release, unknown] = await Promise.all([
      run(as('operator', ['certs', 'revoke', cert.serial, '--reason', 'keyCompromise', '--yes'])),
      run(as('operator', ['certs', 'release', cert.serial])),
      run(as('operator', ['certs', 'show', 'abcdef0123'])),
    ]);
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, /revoked already: nothing changed/);
    assert.equal(release.status, 2, 'a revoked certificate cannot be released: 409');
    assert.match(release.stderr, /^mqtt-ca: 409 /);
    assert.equal(unknown.status, 3);
  });

  it('on a terminal, asks to type the serial or the device id: a wrong answer changes nothing (2), the device id goes ahead', async () => {
    await api
      .post('/v1/devices')
      .set({ Authorization: `Bearer ${keys.admin}` })
      .send({ id: 'meter-4x' })
      .expect(201);
    const cert = await enroll('meter-4x');
    // script(1) gives the CLI a terminal; what is piped in is typed at the prompt.
    const typed = (answer: string) =>
      run(
        new Promise<Run>((resolve, reject) => {
          const command = [process.execPath, BIN, '--url', url, '--key-file', keyFile.operator, 'certs', 'hold', cert.serial].join(' ');
          const child = spawn('script', ['-qec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
          let stdout = '';
          child.stdout.on('data', (c: Buffer) => {
            stdout += c.toString();
            if (/to confirm: /.test(stdout) && !child.stdin.writableEnded) child.stdin.end(`${answer}\n`);
          });
          child.on('error', reject);
          child.on('close', (status) => resolve({ status, stdout, stderr: '' }));
        }),
      );
    const wrong = await typed('meter-4');
    assert.equal(wrong.status, 2, wrong.stdout);
    assert.match(
      wrong.stdout,
      new RegExp(`Put on hold certificate ${cert.serial} of device meter-4x[\\s\\S]*Type "${cert.serial}" or "meter-4x" to confirm`),
    );
    assert.match(wrong.stdout, /not confirmed: nothing was done/);
    assert.match((await run(as('auditor', ['certs', 'show', cert.serial]))).stdout, /^status:\s+issued$/m);
    const right = await typed('meter-4x');
    assert.equal(right.status, 0, right.stdout);
    assert.match(right.stdout, /revocation:\s+certificateHold/);
  });

  it('an incident: dry run, a bulk revocation that waits for a second person (5), approval, close', async () => {
    const serials = [(await enroll('meter-2')).serial, (await enroll('meter-3')).serial];
    const opened = await run(
      as('admin', ['incidents', 'open', '--kind', 'device-compromise', '--title', 'lot 1 tampered', '--lot', 'LOT-1', '--json']),
    );
    assert.equal(opened.status, 0, opened.stderr);
    const id = (JSON.parse(opened.stdout) as { id: string }).id;

    const dry = await run(as('admin', ['incidents', 'act', id, 'revoke-certificates', '--dry-run']));
    assert.equal(dry.status, 0, dry.stderr);
    assert.match(dry.stdout, /^would touch:\s+2$/m);
    for (const s of serials) assert.match(dry.stdout, new RegExp(`certificate ${s}`));
    // For real without --yes and no terminal: the dry run is shown, then refused.
    const unconfirmed = await run(as('admin', ['incidents', 'act', id, 'revoke-certificates']));
    assert.equal(unconfirmed.status, 2);
    assert.match(unconfirmed.stderr, /would touch:\s+2[\s\S]*not confirmed/);

    const proposed = await run(as('admin', ['incidents', 'act', id, 'revoke-certificates', '--yes', '--json']));
    assert.equal(proposed.status, 5, proposed.stderr);
    const step = JSON.parse(proposed.stdout) as { status: string; approvalId: string };
    assert.equal(step.status, 'proposed');

    const [pending, own, badClose] = await Promise.all([
      run(as('auditor', ['approvals', 'list'])),
      run(as('admin', ['approvals', 'approve', step.approvalId])),
      run(as('operator', ['incidents', 'close', id, '--summary', 'done'])),
    ]);
    assert.match(pending.stdout, new RegExp(`^${step.approvalId}\\s+incident.action\\s+pending\\s+.*\\(admin\\)`, 'm'));
    assert.equal(own.status, 4, 'never one’s own proposal (403)');
    assert.equal(badClose.status, 2, 'not while a step awaits approval (409)');

    const approved = await run(as('operator', ['approvals', 'approve', step.approvalId]));
    assert.equal(approved.status, 0, approved.stderr);
    assert.match(approved.stdout, /^status:\s+executed$/m);
    for (const s of serials) assert.match((await run(as('auditor', ['certs', 'show', s]))).stdout, /^status:\s+revoked$/m);

    const [closed, timeline, posture, postureJson] = await Promise.all([
      run(as('operator', ['incidents', 'close', id, '--summary', 'lot 1 revoked'])),
      run(as('auditor', ['incidents', 'show', id])),
      run(as('auditor', ['posture'])),
      run(as('auditor', ['--json', 'posture'])),
    ]);
    assert.equal(closed.status, 0, closed.stderr);
    assert.match(closed.stdout, /^status:\s+closed$/m);
    assert.match(timeline.stdout, /revoke-certificates \(dry run\)\s+succeeded\s+2/);
    assert.equal(posture.status, 0, posture.stderr);
    assert.match(posture.stdout, /^FUNCTION\s+CURRENT\s+TARGET/m);
    assert.match(posture.stdout, /^respond\s+\d/m);
    const report = JSON.parse(postureJson.stdout) as { gaps: unknown[]; current: Record<string, unknown> };
    assert.ok(Array.isArray(report.gaps));
    assert.ok(report.current.identify);
    const closedAgain = await run(as('operator', ['incidents', 'close', id, '--summary', 'again']));
    assert.equal(closedAgain.status, 2);
    assert.match(closedAgain.stderr, /^mqtt-ca: 409 /);
  });

  it('re-admits a revoked device, decommissions one only once its id is typed or --yes is given; refusals have their codes', async () => {
    await api
      .post('/v1/devices')
      .set({ Authorization: `Bearer ${keys.admin}` })
      .send({ id: 'meter-ra' })
      .expect(201);
    const cert = await enroll('meter-ra');
    const [notRevoked, byAuditor, byProvisioner, unknown] = await Promise.all([
      run(as('operator', ['devices', 'readmit', 'meter-ra'])),
      run(as('auditor', ['devices', 'readmit', 'meter-ra'])),
      run(as('provisioner', ['devices', 'readmit', 'meter-ra'])),
      run(as('operator', ['devices', 'readmit', 'no-such-meter'])),
    ]);
    assert.equal(notRevoked.status, 2, 'only a revoked device is re-admitted (409)');
    assert.match(notRevoked.stderr, /^mqtt-ca: 409 .*only a revoked device can be re-admitted/);
    assert.equal(byAuditor.status, 4, byAuditor.stderr);
    assert.match(byAuditor.stderr, /^mqtt-ca: 403 /);
    assert.equal(byProvisioner.status, 4, byProvisioner.stderr);
    assert.equal(unknown.status, 3, unknown.stderr);

    const revoked = await run(as('operator', ['certs', 'revoke', cert.serial, '--reason', 'keyCompromise', '--yes']));
    assert.equal(revoked.status, 0, revoked.stderr);
    assert.match((await run(as('auditor', ['devices', 'show', 'meter-ra']))).stdout, /^status:\s+revoked$/m);
    const readmitted = await run(as('operator', ['devices', 'readmit', 'meter-ra']));
    assert.equal(readmitted.status, 0, readmitted.stderr);
    assert.match(readmitted.stdout, /^id:\s+meter-ra$/m);
    assert.match(readmitted.stdout, /^status:\s+registered$/m);
    assert.match(readmitted.stderr, /re-admitted: it may be given a new enrollment token/);
    const again = await run(as('admin', ['devices', 'readmit', 'meter-ra', '--json']));
    assert.equal(again.status, 0, 'one already registered is returned as it is');
    assert.equal((JSON.parse(again.stdout) as { status: string }).status, 'registered');
    assert.match(
      (await run(as('auditor', ['certs', 'show', cert.serial]))).stdout,
      /^status:\s+revoked$/m,
      'its certificate stays revoked',
    );

    // No terminal and no --yes: named, refused, nothing sent.
    const unconfirmed = await run(as('operator', ['devices', 'decommission', 'meter-ra']));
    assert.equal(unconfirmed.status, 2, unconfirmed.stderr);
    assert.match(
      unconfirmed.stderr,
      new RegExp(
        `Decommission device meter-ra \\(registered, current certificate ${cert.serial}\\); its certificates are revoked \\(cessationOfOperation\\); this cannot be undone\\.\\nnot confirmed: no terminal .*--yes`,
      ),
    );
    const [auditorYes, unknownYes] = await Promise.all([
      run(as('auditor', ['devices', 'decommission', 'meter-ra', '--yes'])),
      run(as('operator', ['devices', 'decommission', 'no-such-meter', '--yes'])),
    ]);
    assert.equal(auditorYes.status, 4, auditorYes.stderr);
    assert.match(auditorYes.stderr, /^mqtt-ca: 403 /);
    assert.equal(unknownYes.status, 3, unknownYes.stderr);
    assert.match((await run(as('auditor', ['devices', 'show', 'meter-ra']))).stdout, /^status:\s+registered$/m, 'nothing changed');

    // On a terminal (script(1)): a wrong id changes nothing (2), the device's id goes ahead.
    const typed = (answer: string) =>
      run(
        new Promise<Run>((resolve, reject) => {
          const command = [process.execPath, BIN, '--url', url, '--key-file', keyFile.operator, 'devices', 'decommission', 'meter-ra'].join(
            ' ',
          );
          const child = spawn('script', ['-qec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
          let stdout = '';
          child.stdout.on('data', (c: Buffer) => {
            stdout += c.toString();
            if (/to confirm: /.test(stdout) && !child.stdin.writableEnded) child.stdin.end(`${answer}\n`);
          });
          child.on('error', reject);
          child.on('close', (status) => resolve({ status, stdout, stderr: '' }));
        }),
      );
    const wrong = await typed('meter-r');
    assert.equal(wrong.status, 2, wrong.stdout);
    assert.match(
      wrong.stdout,
      /Decommission device meter-ra \(registered, current certificate [0-9a-f]+\)[\s\S]*Type "meter-ra" to confirm/,
    );
    assert.match(wrong.stdout, /not confirmed: nothing was done/);
    const right = await typed('meter-ra');
    assert.equal(right.status, 0, right.stdout);
    assert.match(right.stdout, /status:\s+decommissioned/);

    // Decommissioned: shown as it is without asking; it is final.
    const [done, readmitDone] = await Promise.all([
      run(as('operator', ['devices', 'decommission', 'meter-ra'])),
      run(as('operator', ['devices', 'readmit', 'meter-ra'])),
    ]);
    assert.equal(done.status, 0, done.stderr);
    assert.match(done.stdout, /^status:\s+decommissioned$/m);
    assert.match(done.stderr, /decommissioned already: nothing changed/);
    assert.equal(readmitDone.status, 2, readmitDone.stderr);
    assert.match(readmitDone.stderr, /^mqtt-ca: 409 /);
  });

  it('keeps the key off the command line (ps) and out of every output', async () => {
    // A service that never answers holds the CLI open while its command line is read.
    const sockets: Socket[] = [];
    const hang = createTcpServer((s) => sockets.push(s));
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    const port = (hang.address() as { port: number }).port;
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MQTT_CA_')));
    for (const how of ['option', 'env'] as const) {
      const args = how === 'option' ? ['--key-file', keyFile.admin, 'devices', 'list'] : ['devices', 'list'];
      const env = how === 'env' ? { MQTT_CA_KEY_FILE: keyFile.admin } : {};
      const child = spawn(process.execPath, [BIN, '--url', `http://127.0.0.1:${port}`, ...args], {
        env: { ...base, ...env },
        stdio: 'ignore',
      });
      try {
        for (let i = 0; i < 200 && sockets.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
        const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8');
        assert.match(cmdline, /devices/);
        assert.ok(!cmdline.includes(keys.admin), `${how}: the key is not in the process's command line`);
      } finally {
        child.kill();
        for (const s of sockets.splice(0)) s.destroy();
      }
    }
    await new Promise((r) => hang.close(r));
    for (const role of ['admin', 'operator', 'provisioner', 'auditor'] as const)
      assert.ok(!everyOutput.some((o) => o.includes(keys[role])), `the ${role} key was never printed`);
    // A key file others may read still works, with a warning.
    chmodSync(keyFile.auditor, 0o644);
    const loose = await run(as('auditor', ['devices', 'list', '--limit', '1']));
    assert.equal(loose.status, 0, loose.stderr);
    assert.match(loose.stderr, /readable by others/);
  });
});

describe('mqtt-ca incidents retry against a running service', { skip: postgresTarget.skip }, () => {
  let hook: Server;
  let url: string;
  let api: CliService['api'];
  let keys: Record<Role, string>;
  let keyFile: Record<Role, string>;
  let close: CliService['close'] | undefined;
  /** The broker webhook receiver: down (503) or up (every effect applied and confirmed). */
  const broker = { up: false };
  const as = (role: Role, args: string[]) => cli(['--url', url, '--key-file', keyFile[role], ...args]);
  const timeline = async (id: string) =>
    (
      (
        await api
          .get(`/v1/incidents/${id}`)
          .set({ Authorization: `Bearer ${keys.auditor}` })
          .expect(200)
      ).body as { timeline: { id: string; status: string; retryOf: string | null }[] }
    ).timeline;

  before(async () => {
    hook = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        if (!broker.up) return void res.writeHead(503).end();
        const { clientIds } = JSON.parse(body) as { clientIds: string[] };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ effects: clientIds.map((clientId) => ({ clientId, applied: true, confirmed: true })) }));
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    const hookUrl = `http://127.0.0.1:${(hook.address() as { port: number }).port}/broker`;
    ({ url, api, keys, keyFile, close } = await serveForCli(
      { BROKER_WEBHOOK_URL: hookUrl, BROKER_WEBHOOK_SECRET: 'w'.repeat(40) },
      'mqttca-cli-retry-',
    ));
  });
  after(async () => {
    await close?.();
    await new Promise((r) => hook?.close(r));
  });

  it('retries a failed step as a new step: asks first, 1 while it fails again, 0 once it succeeds; refusals have their codes', async () => {
    const op = { Authorization: `Bearer ${keys.operator}` };
    await api
      .post('/v1/devices')
      .set({ Authorization: `Bearer ${keys.provisioner}` })
      .send({ id: 'meter-k' })
      .expect(201);
    const id = (
      (
        await api
          .post('/v1/incidents')
          .set(op)
          .send({ kind: 'device-compromise', title: 'kick meter-k', targets: { devices: ['meter-k'] } })
          .expect(201)
      ).body as { id: string }
    ).id;
    const failed = (await api.post(`/v1/incidents/${id}/actions`).set(op).send({ action: 'disconnect' }).expect(201)).body as {
      id: string;
      status: string;
    };
    assert.equal(failed.status, 'failed');

    const [unconfirmed, auditor, unknown, malformed] = await Promise.all([
      as('operator', ['incidents', 'retry', id, failed.id]),
      as('auditor', ['incidents', 'retry', id, failed.id, '--yes']),
      as('operator', ['incidents', 'retry', id, 'step_00000000000000000000', '--yes']),
      as('operator', ['incidents', 'retry', id, 'step-nope', '--yes']),
    ]);
    assert.equal(unconfirmed.status, 2, unconfirmed.stderr);
    assert.match(unconfirmed.stderr, /Retry step #1 of incident inc_\S+: disconnect failed \(.*503.*\), touched 1[\s\S]*not confirmed/);
    assert.equal(auditor.status, 4, auditor.stderr);
    assert.equal(unknown.status, 3, unknown.stderr);
    assert.equal(malformed.status, 2, malformed.stderr);
    assert.equal((await timeline(id)).length, 1, 'nothing was retried');

    const again = await as('operator', ['incidents', 'retry', id, failed.id, '--yes']);
    assert.equal(again.status, 1, again.stderr);
    assert.match(again.stdout, /^status:\s+failed$/m);
    assert.match(again.stdout, new RegExp(`^retry of:\\s+${failed.id}$`, 'm'));
    const second = (await timeline(id))[1]!;

    broker.up = true;
    const ok = await as('operator', ['--json', 'incidents', 'retry', id, second.id, '--yes']);
    assert.equal(ok.status, 0, ok.stderr);
    const step = JSON.parse(ok.stdout) as { status: string; retryOf: string; touched: { type: string; id: string }[] };
    assert.equal(step.status, 'succeeded');
    assert.equal(step.retryOf, second.id);
    assert.deepEqual(step.touched, [{ type: 'broker-client', id: 'meter-k' }]);
    const third = (await timeline(id))[2]!;
    const done = await as('operator', ['incidents', 'retry', id, third.id, '--yes']);
    assert.equal(done.status, 2, 'a succeeded step is not retried (409)');
    assert.match(done.stderr, /^mqtt-ca: 409 /);
  });
});
