// A real Mosquitto broker (TLS, require_certificate, crlfile kept by `mqtt-ca crl-sync`): a device
// connects, is revoked, and is refused on its next connection. mosquitto_pub is the client.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { p256Csr } from '../helpers/csr.js';
import { tempDir, writeTemp } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { freePort, runAsync, waitForPort } from '../helpers/processes.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { bootstrap } from '../../src/bootstrap.js';
import { listen, type Service } from '../../src/main.js';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const target = dbTargets.find((t) => t.name === 'pglite')!;

/** The CLI in a child process, asynchronously: the service it polls runs in this process. */
const crlSync = (args: string[]) => runAsync(process.execPath, ['--import', 'tsx', CLI, 'crl-sync', ...args]);

/** mosquitto_pub, asynchronously for the same reason. */
const pub = (args: string[]) => runAsync('mosquitto_pub', args, 20_000);

describe('Mosquitto with a crlfile kept by crl-sync', { skip: toolSkip('mosquitto') ?? toolSkip('mosquitto_pub') }, () => {
  let svc: Service & { dispose(): Promise<void> };
  let server: Server;
  let broker: ChildProcess;
  let brokerPort: number;
  let bundleUrl: string;
  let deviceSerial: string;
  const dir = tempDir();
  const crlFile = join(dir, 'crl.pem');
  const files = {} as Record<'chain' | 'deviceCert' | 'deviceKey', string>;

  const publish = () =>
    pub([
      '-h',
      '127.0.0.1',
      '-p',
      String(brokerPort),
      '--cafile',
      files.chain,
      '--cert',
      files.deviceCert,
      '--key',
      files.deviceKey,
      '-i',
      'meter-1',
      '-t',
      'meters/1',
      '-m',
      'hello',
      '-q',
      '1',
    ]);

  before(async () => {
    svc = await makeService(target, { env: { PORT: '0' } });
    const boot = await bootstrap(svc);
    server = await listen(svc);
    bundleUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/pki/crl/bundle.pem`;
    const ctx = { actor: 'test' };
    const chain = (await svc.hierarchy.chain(boot.issuingId!)).map((d) => toPem(d));
    files.chain = writeTemp(dir, 'chain.pem', chain.join(''));

    // The broker's certificate from its own CA, for localhost.
    const brokerKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const brokerCert = await svc.issuance.issue(
      {
        profile: 'broker',
        dnsNames: ['localhost'],
        ipAddresses: ['127.0.0.1'],
        subjectPublicKeyInfo: brokerKey.publicKey.export({ format: 'der', type: 'spki' }),
      },
      ctx,
    );
    const brokerCertFile = writeTemp(dir, 'broker.pem', toPem(brokerCert.der) + chain[0]);
    const brokerKeyFile = writeTemp(dir, 'broker.key', brokerKey.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);

    // A device enrolled with a token, as on the factory line.
    await svc.devices.register({ id: 'meter-1', kind: 'client' }, ctx);
    const token = await svc.tokens.create({ deviceId: 'meter-1' }, ctx);
    const csr = p256Csr('meter-1');
    const enrolled = await svc.enrollment.enroll({
      credential: { kind: 'bearer', value: token.token },
      csr: csr.pem,
      ctx: { source: '127.0.0.1', requestId: 't' },
    });
    deviceSerial = enrolled.result.serial;
    files.deviceCert = writeTemp(dir, 'device.pem', enrolled.result.certificate);
    files.deviceKey = writeTemp(dir, 'device.key', csr.keyPem);

    const first = await crlSync(['--url', bundleUrl, '--out', crlFile, '--cafile', files.chain]);
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stdout, /updated/);

    brokerPort = await freePort();
    const conf = writeTemp(
      dir,
      'mosquitto.conf',
      [
        'per_listener_settings false',
        'user root', // the test's files are private to the user running it
        'persistence false',
        'log_dest stderr',
        `listener ${brokerPort} 127.0.0.1`,
        `cafile ${files.chain}`,
        `certfile ${brokerCertFile}`,
        `keyfile ${brokerKeyFile}`,
        'require_certificate true',
        'use_identity_as_username true',
        `crlfile ${crlFile}`,
        'allow_anonymous true',
        '',
      ].join('\n'),
    );
    broker = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    broker.stderr!.resume();
    await waitForPort(brokerPort);
  });

  after(async () => {
    broker?.kill();
    server?.close();
    server?.closeAllConnections();
    await svc?.dispose();
  });

  it('lets the device in, and refuses it once it is revoked and crl-sync has reloaded the broker', async () => {
    const ok = await publish();
    assert.equal(ok.status, 0, ok.stderr);

    // Unchanged: a conditional GET, the file left alone.
    const mtime = statSync(crlFile).mtimeMs;
    const same = await crlSync(['--url', bundleUrl, '--out', crlFile, '--reload', 'false']);
    assert.equal(same.status, 0, same.stderr);
    assert.equal(statSync(crlFile).mtimeMs, mtime);

    await svc.revocations.revoke(deviceSerial as never, { reason: 'keyCompromise' }, { actor: 'test' });
    // Brokers load the full CRL, which follows the revocation in the background.
    await svc.crls.settled();
    const sync = await crlSync(['--url', bundleUrl, '--out', crlFile, '--cafile', files.chain, '--reload', `kill -HUP ${broker.pid}`]);
    assert.equal(sync.status, 0, sync.stderr);
    assert.match(sync.stdout, /updated/);
    assert.match(readFileSync(crlFile, 'utf8'), /BEGIN X509 CRL/);
    // The broker rereads crlfile on SIGHUP; give it a moment.
    let refused = false;
    for (let i = 0; i < 20 && !refused; i++) {
      await new Promise((r) => setTimeout(r, 250));
      refused = (await publish()).status !== 0;
    }
    assert.ok(refused, 'the revoked device still gets in');
  });

  it('fails loudly when it cannot keep the file fresh', async () => {
    const port = await freePort();
    const none = await crlSync(['--url', `http://127.0.0.1:${port}/pki/crl/bundle.pem`, '--out', join(dir, 'absent.pem')]);
    assert.equal(none.status, 2);
    assert.match(none.stderr, /cannot reach .* no CRL file/);
    // Unreachable server, but a fresh file on disk: kept, with a warning, exit 0.
    const kept = await crlSync(['--url', `http://127.0.0.1:${port}/pki/crl/bundle.pem`, '--out', crlFile]);
    assert.equal(kept.status, 0, kept.stderr);
    assert.match(kept.stderr, /kept/);
    // A margin longer than the CRLs' validity: the file is stale, and it says so.
    const stale = await crlSync([
      '--url',
      `http://127.0.0.1:${port}/pki/crl/bundle.pem`,
      '--out',
      crlFile,
      '--min-remaining',
      String(60 * 24 * 30),
    ]);
    assert.equal(stale.status, 2);
    assert.match(stale.stderr, /stale/);
    // CRLs not signed by the CA it trusts (a look-alike CA, same names, another key) are never written.
    const rogueDir = tempDir();
    const rogue = spawnSync('sh', [
      '-c',
      `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ${rogueDir}/k.pem -out ${rogueDir}/ca.pem -days 2 -subj "/O=mqtt-ca/CN=mqtt-ca Issuing CA 1" 2>&1 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ${rogueDir}/k2.pem -out ${rogueDir}/root.pem -days 2 -subj "/O=mqtt-ca/CN=mqtt-ca Root CA" 2>&1 && cat ${rogueDir}/root.pem >> ${rogueDir}/ca.pem`,
    ]);
    assert.equal(rogue.status, 0, String(rogue.stdout));
    const untrusted = await crlSync(['--url', bundleUrl, '--out', join(dir, 'never.pem'), '--cafile', join(rogueDir, 'ca.pem')]);
    assert.equal(untrusted.status, 2);
    assert.match(untrusted.stderr, /not signed by a trusted CA/);
    assert.throws(() => statSync(join(dir, 'never.pem')));
    const garbage = writeTemp(dir, 'garbage.pem', 'not a crl');
    const bad = await crlSync(['--url', `http://127.0.0.1:${port}/x`, '--out', garbage]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /cannot be read as CRLs/);
  });
});
