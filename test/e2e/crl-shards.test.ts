// Partitioned CRLs (#29 item 3): with CRL_SHARDS a certificate's CRL distribution point names its
// shard, each shard is a CRL of its own (Issuing Distribution Point, number sequence, deltas), and
// the bundle carries them all. Judged by openssl verify, `mqtt-ca crl-sync` and a real Mosquitto.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { p256Csr } from '../helpers/csr.js';
import { run, tempDir, writeTemp } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { freePort, runAsync, waitForPort } from '../helpers/processes.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { summarizeCrlBundle } from '../../src/ca/x509/inspect.js';
import { writeCrlHashDir } from '../../src/revoke/crl-sync.js';
import { bootstrap } from '../../src/bootstrap.js';
import { listen, type Service } from '../../src/main.js';

const CLI = join(import.meta.dirname, '../../src/cli.ts');
const SHARDS = 4;

const crlText = (dir: string, pem: string) => {
  const r = run('openssl', ['crl', '-in', writeTemp(dir, 'text.pem', pem), '-noout', '-text']);
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
};
const crlNumberOf = (text: string) => BigInt(/X509v3 CRL Number:\s*\n\s*(\d+)/.exec(text)![1]!);
/** openssl prints a serial as upper-case hex without separators in a CRL's text. */
const listed = (text: string, serialHex: string) => new RegExp(`Serial Number: 0*${serialHex.replace(/^0+/, '')}\\b`, 'i').test(text);

for (const target of dbTargets) {
  describe(`sharded CRLs on ${target.name}`, { skip: target.skip ?? toolSkip('openssl') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let server: Server;
    let base: string;
    let issuingId: string;
    let rootPem: string;
    let issuingPem: string;
    const dir = tempDir();
    /** Devices by shard: the first two shards that got any, two devices in the first. */
    const devices: { id: string; serial: string; certPem: string; keyPem: string; shard: number }[] = [];

    const get = async (path: string) => {
      const res = await fetch(`${base}${path}`);
      return { status: res.status, type: res.headers.get('content-type'), body: Buffer.from(await res.arrayBuffer()) };
    };
    const pemOf = async (path: string) => {
      const r = await get(path);
      assert.equal(r.status, 200, `${path}: ${r.body.toString()}`);
      return toPem(r.body, 'X509 CRL');
    };
    const verify = (certPem: string, crlPems: string[], extra: string[] = []) =>
      run('openssl', [
        'verify',
        '-crl_check',
        ...extra,
        '-CAfile',
        writeTemp(dir, 'root.pem', rootPem),
        '-untrusted',
        writeTemp(dir, 'issuing.pem', issuingPem),
        ...crlPems.flatMap((p, i) => ['-CRLfile', writeTemp(dir, `crl-${i}.pem`, p)]),
        writeTemp(dir, 'leaf.pem', certPem),
      ]);

    before(async () => {
      svc = await makeService(target, { env: { PORT: '0', CRL_SHARDS: String(SHARDS) } });
      const boot = await bootstrap(svc);
      issuingId = boot.issuingId!;
      server = await listen(svc);
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const cas = await svc.hierarchy.list();
      rootPem = cas.find((c) => c.kind === 'root')!.certificate!;
      issuingPem = cas.find((c) => c.id === issuingId)!.certificate!;
      const ctx = { actor: 'test' };
      // Enroll until two shards have devices and the first has two (serials are random: a few suffice).
      const byShard = new Map<number, number>();
      for (let i = 0; i < 60; i++) {
        const id = `shard-meter-${i}`;
        await svc.devices.register({ id, kind: 'client' }, ctx);
        const token = await svc.tokens.create({ deviceId: id }, ctx);
        const csr = p256Csr(id);
        const r = (
          await svc.enrollment.enroll({
            credential: { kind: 'bearer', value: token.token },
            csr: csr.pem,
            ctx: { source: '127.0.0.1', requestId: id },
          })
        ).result;
        const text = run('openssl', ['x509', '-in', writeTemp(dir, 'cert.pem', r.certificate), '-noout', '-text']).stdout;
        const dp = /X509v3 CRL Distribution Points:[\s\S]*?URI:(\S+)/.exec(text)![1]!;
        const m = new RegExp(`/pki/crl/${issuingId}/(\\d+)\\.crl$`).exec(dp);
        assert.ok(m, `the distribution point ${dp} names no shard`);
        const shard = Number(m[1]);
        assert.ok(shard >= 1 && shard <= SHARDS, `shard ${shard}`);
        devices.push({ id, serial: r.serial, certPem: r.certificate, keyPem: csr.keyPem, shard });
        byShard.set(shard, (byShard.get(shard) ?? 0) + 1);
        if (byShard.size >= 2 && [...byShard.values()].some((n) => n >= 2)) break;
      }
      assert.ok(byShard.size >= 2, 'every device landed in one shard');
      // The first device's shard is the one with two.
      const two = [...byShard].find(([, n]) => n >= 2)![0];
      devices.sort((a, b) => Number(b.shard === two) - Number(a.shard === two));
    });
    after(async () => {
      server?.close();
      server?.closeAllConnections();
      await svc?.dispose();
    });

    it('publishes one CRL per shard, each naming its own distribution point, and the CA’s one CRL beside them', async () => {
      for (let shard = 1; shard <= SHARDS; shard++) {
        const text = crlText(dir, await pemOf(`/pki/crl/${issuingId}/${shard}.crl`));
        assert.match(
          text,
          new RegExp(`Issuing Distribution Point: critical[\\s\\S]*URI:http://ca\\.test:8080/pki/crl/${issuingId}/${shard}\\.crl`),
        );
        assert.match(text, /Only User Certificates/);
        assert.match(text, new RegExp(`Freshest CRL:[\\s\\S]*URI:http://ca\\.test:8080/pki/crl/${issuingId}/${shard}-delta\\.crl`));
        const delta = crlText(dir, await pemOf(`/pki/crl/${issuingId}/${shard}-delta.crl`));
        assert.match(delta, /Delta CRL Indicator: critical/);
        assert.match(delta, new RegExp(`URI:http://ca\\.test:8080/pki/crl/${issuingId}/${shard}\\.crl`));
      }
      const whole = crlText(dir, await pemOf(`/pki/crl/${issuingId}.crl`));
      assert.match(whole, new RegExp(`URI:http://ca\\.test:8080/pki/crl/${issuingId}\\.crl`));
      // No shard 0 path, no shard past the CA's, no shards of a root.
      const root = (await svc.hierarchy.list()).find((c) => c.kind === 'root')!.id;
      for (const path of [`/pki/crl/${issuingId}/0.crl`, `/pki/crl/${issuingId}/${SHARDS + 1}.crl`, `/pki/crl/${root}/1.crl`]) {
        const r = await get(path);
        assert.equal(r.status, 404, path);
        assert.match(String(r.type), /problem\+json/);
      }
      // Every certificate verifies against its own shard's CRL, and only against it (a CRL of another scope is no CRL for it).
      const [a, , other] = [devices[0]!, devices[1]!, devices.find((d) => d.shard !== devices[0]!.shard)!];
      const own = await pemOf(`/pki/crl/${issuingId}/${a.shard}.crl`);
      const foreign = await pemOf(`/pki/crl/${issuingId}/${other.shard}.crl`);
      const ok = verify(a.certPem, [own]);
      assert.equal(ok.status, 0, ok.stdout + ok.stderr);
      const wrong = verify(a.certPem, [foreign]);
      assert.notEqual(wrong.status, 0);
      assert.match(wrong.stdout + wrong.stderr, /different CRL scope/);
    });

    it('lists a revocation in its shard only: its delta before the call returns, its full CRL after; openssl refuses it with the shard and with the bundle', async () => {
      const [a, b] = devices;
      const other = devices.find((d) => d.shard !== a!.shard)!;
      const shardPath = `/pki/crl/${issuingId}/${a!.shard}`;
      const numbersBefore = new Map<number, bigint>();
      for (let shard = 0; shard <= SHARDS; shard++)
        numbersBefore.set(
          shard,
          crlNumberOf(crlText(dir, await pemOf(shard ? `/pki/crl/${issuingId}/${shard}.crl` : `/pki/crl/${issuingId}.crl`))),
        );

      await svc.revocations.revoke(a!.serial as never, { reason: 'keyCompromise' }, { actor: 'test' });
      // Before any background rebuild: the shard's base and delta, which openssl combines.
      const baseNow = await pemOf(`${shardPath}.crl`);
      const deltaNow = await pemOf(`${shardPath}-delta.crl`);
      const combined = verify(a!.certPem, [baseNow, deltaNow], ['-use_deltas', '-extended_crl']);
      assert.notEqual(combined.status, 0);
      assert.match(combined.stdout + combined.stderr, /certificate revoked/);

      await svc.crls.settled();
      const full = await pemOf(`${shardPath}.crl`);
      const fullText = crlText(dir, full);
      assert.ok(listed(fullText, a!.serial), fullText);
      assert.ok(!listed(fullText, b!.serial), 'a device of the same shard that was not revoked is listed');
      const refused = verify(a!.certPem, [full]);
      assert.notEqual(refused.status, 0);
      assert.match(refused.stdout + refused.stderr, /certificate revoked/);
      const sibling = verify(b!.certPem, [full]);
      assert.equal(sibling.status, 0, sibling.stdout + sibling.stderr);
      // Nowhere else: the other shards and the CA's one CRL keep their numbers and list nothing.
      for (let shard = 0; shard <= SHARDS; shard++) {
        if (shard === a!.shard) continue;
        const text = crlText(dir, await pemOf(shard ? `/pki/crl/${issuingId}/${shard}.crl` : `/pki/crl/${issuingId}.crl`));
        assert.ok(!listed(text, a!.serial), `shard ${shard} lists the revocation`);
        assert.equal(crlNumberOf(text), numbersBefore.get(shard), `shard ${shard} was republished`);
      }
      assert.ok(crlNumberOf(fullText) > numbersBefore.get(a!.shard)!);

      // The bundle: the root's CRL, the issuing CA's one CRL and every shard.
      const bundle = (await get('/pki/crl/bundle.pem')).body.toString();
      assert.equal(bundle.match(/BEGIN X509 CRL/g)?.length, 2 + SHARDS);
      const all = bundle.match(/-----BEGIN X509 CRL-----[\s\S]+?-----END X509 CRL-----\n/g)!;
      const viaBundle = verify(a!.certPem, all, ['-crl_check_all']);
      assert.notEqual(viaBundle.status, 0);
      assert.match(viaBundle.stdout + viaBundle.stderr, /certificate revoked/);
      const otherOk = verify(other.certPem, all, ['-crl_check_all']);
      assert.equal(otherOk.status, 0, otherOk.stdout + otherOk.stderr);
    });

    // Once, on PGlite: the hashed directory is the store's business no more than the crlfile is.
    if (target.name === 'pglite')
      it('crl-sync --hash-dir names every CRL as openssl rehash does (a shard per .rN); openssl verify -CApath refuses the revoked device and lets its neighbours in', async () => {
        const [a, b] = devices;
        const other = devices.find((d) => d.shard !== a!.shard)!;
        const chain = writeTemp(dir, 'chain.pem', issuingPem + rootPem);
        const hashDir = join(tempDir(), 'crls');
        const sync = await runAsync(process.execPath, [
          ...['--import', 'tsx', CLI, 'crl-sync'],
          ...['--url', `${base}/pki/crl/bundle.pem`, '--hash-dir', hashDir, '--cafile', chain],
        ]);
        assert.equal(sync.status, 0, sync.stderr);
        assert.match(sync.stdout, /updated/);
        const written = readdirSync(hashDir)
          .filter((f) => !f.startsWith('.'))
          .sort();
        // The names openssl itself gives the same CRLs: each under another name in a directory of its own, then `openssl rehash`.
        const plain = tempDir();
        for (const f of written) copyFileSync(join(hashDir, f), join(plain, `crl-${f}.pem`));
        const rehash = run('openssl', ['rehash', plain]);
        assert.equal(rehash.status, 0, rehash.stderr);
        const theirs = readdirSync(plain)
          .filter((f) => /^[0-9a-f]{8}\.r\d+$/.test(f))
          .sort();
        assert.deepEqual(written, theirs);
        const hashOf = (pem: string) => run('openssl', ['x509', '-noout', '-hash', '-in', writeTemp(dir, 'h.pem', pem)]).stdout.trim();
        assert.deepEqual(
          written.map((f) => f.replace(/\.r\d+$/, '')),
          [hashOf(rootPem), ...Array<string>(1 + SHARDS).fill(hashOf(issuingPem))].sort(),
          "the root's CRL, the issuing CA's one CRL and a file per shard",
        );
        for (const f of written) {
          const h = run('openssl', ['crl', '-noout', '-hash', '-in', join(hashDir, f)]);
          assert.equal(h.stdout.trim(), f.slice(0, 8), f);
        }

        // OpenSSL's CApath: the CA certificates as <hash>.0 beside the CRLs.
        writeTemp(hashDir, `${hashOf(rootPem)}.0`, rootPem);
        writeTemp(hashDir, `${hashOf(issuingPem)}.0`, issuingPem);
        const verifyDir = (certPem: string) =>
          run('openssl', ['verify', '-crl_check_all', '-CApath', hashDir, writeTemp(dir, 'leaf.pem', certPem)]);
        const refused = verifyDir(a!.certPem);
        assert.notEqual(refused.status, 0);
        assert.match(refused.stdout + refused.stderr, /certificate revoked/);
        for (const d of [b!, other]) {
          const ok = verifyDir(d.certPem);
          assert.equal(ok.status, 0, `${d.id}: ${ok.stdout}${ok.stderr}`);
        }

        // Fewer CRLs next time (a shard retired): its files go, the CA certificates (not crl-sync's) stay.
        const crls = await summarizeCrlBundle(readFileSync(join(hashDir, '.mqtt-ca-bundle.pem'), 'utf8'));
        const kept = await writeCrlHashDir(hashDir, crls.slice(0, 3));
        assert.equal(kept.length, 3);
        assert.deepEqual(
          readdirSync(hashDir)
            .filter((f) => /\.r\d+$/.test(f))
            .sort(),
          [...kept].sort(),
        );
        assert.ok(readdirSync(hashDir).includes(`${hashOf(rootPem)}.0`));
      });

    // Once, on PostgreSQL: the store makes no difference to the broker.
    if (target.name === 'postgres')
      it(
        'crl-sync writes every shard into the crlfile, and Mosquitto refuses the revoked device and lets its neighbours in',
        { skip: toolSkip('mosquitto') ?? toolSkip('mosquitto_pub') },
        async () => {
          const [a, b] = devices;
          const other = devices.find((d) => d.shard !== a!.shard)!;
          const chain = writeTemp(dir, 'chain.pem', issuingPem + rootPem);
          const crlFile = join(dir, 'crl.pem');
          const sync = await runAsync(process.execPath, [
            '--import',
            'tsx',
            CLI,
            'crl-sync',
            '--url',
            `${base}/pki/crl/bundle.pem`,
            '--out',
            crlFile,
            '--cafile',
            chain,
          ]);
          assert.equal(sync.status, 0, sync.stderr);
          assert.match(sync.stdout, /updated/);
          assert.equal(readFileSync(crlFile, 'utf8').match(/BEGIN X509 CRL/g)?.length, 2 + SHARDS);

          const brokerKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
          const brokerCert = await svc.issuance.issue(
            {
              profile: 'broker',
              dnsNames: ['localhost'],
              ipAddresses: ['127.0.0.1'],
              subjectPublicKeyInfo: brokerKey.publicKey.export({ format: 'der', type: 'spki' }),
            },
            { actor: 'test' },
          );
          const port = await freePort();
          const conf = writeTemp(
            dir,
            'mosquitto.conf',
            [
              'per_listener_settings false',
              'user root', // the test's files are private to the user running it
              'persistence false',
              'log_dest stderr',
              `listener ${port} 127.0.0.1`,
              `cafile ${chain}`,
              `certfile ${writeTemp(dir, 'broker.pem', toPem(brokerCert.der) + issuingPem)}`,
              `keyfile ${writeTemp(dir, 'broker.key', brokerKey.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string)}`,
              'require_certificate true',
              'use_identity_as_username true',
              `crlfile ${crlFile}`,
              'allow_anonymous true',
              '',
            ].join('\n'),
          );
          const broker: ChildProcess = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
          broker.stderr!.resume();
          try {
            await waitForPort(port);
            const publish = (d: (typeof devices)[number]) =>
              runAsync('mosquitto_pub', [
                ...['-h', '127.0.0.1', '-p', String(port), '--cafile', chain],
                ...['--cert', writeTemp(dir, `${d.id}.pem`, d.certPem), '--key', writeTemp(dir, `${d.id}.key`, d.keyPem)],
                ...['-i', d.id, '-t', `meters/${d.id}`, '-m', 'hello', '-q', '1'],
              ]);
            const refused = await publish(a!);
            assert.notEqual(refused.status, 0, 'the revoked device got in');
            for (const d of [b!, other]) {
              const ok = await publish(d);
              assert.equal(ok.status, 0, `${d.id} (shard ${d.shard}) was refused: ${ok.stderr}`);
            }
          } finally {
            broker.kill();
          }
        },
      );
  });
}
