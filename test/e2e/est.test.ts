import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:https';
import request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { toolSkip } from '../helpers/tools.js';
import { KEY_ARGS, opensslVerify, run, runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { createHttpHandler, listenTls, type Service } from '../../src/main.js';
import { assertProblem } from '../helpers/http.js';
import { readFileSync } from 'node:fs';
import { bootstrap } from '../../src/bootstrap.js';

/** An EST client as a device runs one: curl for HTTP, openssl for the PKCS#7 and key files. */
for (const target of dbTargets) {
  describe(`EST (RFC 7030) over TLS on ${target.name}`, { skip: target.skip ?? toolSkip('curl') ?? toolSkip('openssl') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let tls: Server;
    let base: string;
    let dir: string;
    let rootPem: string;
    let issuerPem: string;
    let admin: Record<string, string>;
    let api: ReturnType<typeof request>;

    before(async () => {
      svc = await makeService(target);
      const boot = await bootstrap(svc);
      admin = { Authorization: `Bearer ${boot.adminKey}` };
      api = request(createHttpHandler(svc));
      tls = await listenTls(svc, 0);
      base = `https://localhost:${(tls.address() as { port: number }).port}/.well-known/est`;
      dir = tempDir();
      const chain = await svc.hierarchy.chain(boot.issuingId!);
      const pem = (d: Buffer) =>
        `-----BEGIN CERTIFICATE-----\n${d
          .toString('base64')
          .match(/.{1,64}/g)!
          .join('\n')}\n-----END CERTIFICATE-----\n`;
      issuerPem = pem(chain[0]!);
      rootPem = pem(chain[1]!);
      writeTemp(dir, 'root.pem', rootPem);
      for (const id of ['est-dev-1', 'est-dev-2', 'est-dev-3', 'est-dev-4'])
        await api.post('/v1/devices').set(admin).send({ id, kind: 'client' }).expect(201);
    });
    after(async () => {
      tls?.close();
      tls?.closeAllConnections();
      await svc?.dispose();
    });

    const curl = (args: string[], input?: string | Buffer) =>
      runAsync('curl', ['-sS', '--cacert', `${dir}/root.pem`, '-w', '\n%{http_code}', ...args], input);
    const split = async (p: Promise<{ stdout: string }>) => {
      const r = await p;
      const i = r.stdout.lastIndexOf('\n');
      return { body: r.stdout.slice(0, i), status: Number(r.stdout.slice(i + 1)) };
    };
    const pkcs7Certs = (base64: string) =>
      run('sh', ['-c', 'openssl base64 -d | openssl pkcs7 -inform DER -print_certs'], base64.replace(/\r/g, ''));
    const newKeyAndCsr = (name: string, cn: string) => {
      const key = writeTemp(dir, `${name}.key`, run('openssl', ['genpkey', ...KEY_ARGS.p256]).stdout);
      const der = run('sh', ['-c', `openssl req -new -key ${key} -subj /CN=${cn} -outform DER | openssl base64`]).stdout;
      return { key, csrB64: writeTemp(dir, `${name}.b64`, der) };
    };
    const token = async (deviceId: string) =>
      (await api.post('/v1/enrollment-tokens').set(admin).send({ deviceId, maxUses: 3 }).expect(201)).body.token as string;

    it('/cacerts returns the chain as base64 certs-only PKCS#7 that openssl pkcs7 prints', async () => {
      const r = await split(curl([`${base}/cacerts`]));
      assert.equal(r.status, 200);
      const printed = pkcs7Certs(r.body);
      assert.equal(printed.status, 0, printed.stderr);
      assert.match(printed.stdout, /subject=O = mqtt-ca, CN = mqtt-ca Issuing CA 1/);
      assert.match(printed.stdout, /subject=O = mqtt-ca, CN = mqtt-ca Root CA/);
      const headers = (await runAsync('curl', ['-sS', '-o', '/dev/null', '-D', '-', '--cacert', `${dir}/root.pem`, `${base}/cacerts`]))
        .stdout;
      assert.match(headers, /content-type: application\/pkcs7-mime; smime-type=certs-only/i);
      assert.match(headers, /content-transfer-encoding: base64/i);
    });

    it('/simpleenroll with HTTP Basic (the token as password) issues a certificate that verifies; /simplereenroll with its TLS client certificate renews it', async () => {
      const tok = await token('est-dev-1');
      const { key, csrB64 } = newKeyAndCsr('d1', 'est-dev-1');
      const r = await split(
        curl(['-u', `est-dev-1:${tok}`, '-H', 'Content-Type: application/pkcs10', '--data-binary', `@${csrB64}`, `${base}/simpleenroll`]),
      );
      assert.equal(r.status, 200, r.body);
      const certs = pkcs7Certs(r.body);
      assert.equal(certs.status, 0, certs.stderr);
      const certPem = certs.stdout.slice(certs.stdout.indexOf('-----BEGIN CERTIFICATE-----'));
      writeTemp(dir, 'd1.pem', certPem);
      assert.equal(opensslVerify(rootPem, [issuerPem], certPem, ['-purpose', 'sslclient']).status, 0);

      // Re-enroll: a new key, authenticated by the current certificate in the TLS handshake.
      const next = newKeyAndCsr('d1b', 'est-dev-1');
      const re = await split(
        curl([
          '--cert',
          `${dir}/d1.pem`,
          '--key',
          key,
          '-H',
          'Content-Type: application/pkcs10',
          '--data-binary',
          `@${next.csrB64}`,
          `${base}/simplereenroll`,
        ]),
      );
      assert.equal(re.status, 200, re.body);
      const renewedPem = pkcs7Certs(re.body).stdout;
      const serial = run('openssl', ['x509', '-noout', '-serial'], renewedPem.slice(renewedPem.indexOf('-----BEGIN')))
        .stdout.trim()
        .split('=')[1]!
        .toLowerCase();
      const oldSerial = run('openssl', ['x509', '-noout', '-serial'], certPem).stdout.trim().split('=')[1]!.toLowerCase();
      const got = (await api.get(`/v1/certificates/${serial}`).set(admin).expect(200)).body;
      assert.equal(got.renewedFrom, oldSerial);

      // The REST renewal takes the same TLS client certificate (here the renewed one).
      const renewedOnly = renewedPem.slice(renewedPem.indexOf('-----BEGIN'));
      writeTemp(dir, 'd1b.pem', renewedOnly);
      const third = newKeyAndCsr('d1c', 'est-dev-1');
      const csrPem = run('sh', ['-c', `openssl base64 -d -in ${third.csrB64} | openssl req -inform DER`]).stdout;
      const rest = await split(
        curl([
          '--cert',
          `${dir}/d1b.pem`,
          '--key',
          next.key,
          '-H',
          'Content-Type: application/json',
          '--data-binary',
          JSON.stringify({ csr: csrPem }),
          base.replace('/.well-known/est', '/v1/renew'),
        ]),
      );
      assert.equal(rest.status, 201, rest.body);
      assert.equal(
        (
          await api
            .get(`/v1/certificates/${JSON.parse(rest.body).serial}`)
            .set(admin)
            .expect(200)
        ).body.renewedFrom,
        serial,
      );

      // Without a client certificate, re-enroll is refused; with a stranger's certificate too.
      const none = await split(
        curl(['-H', 'Content-Type: application/pkcs10', '--data-binary', `@${next.csrB64}`, `${base}/simplereenroll`]),
      );
      assert.equal(none.status, 401);
      const strangerKey = writeTemp(dir, 's.key', run('openssl', ['genpkey', ...KEY_ARGS.p256]).stdout);
      const stranger = writeTemp(
        dir,
        's.pem',
        run('openssl', ['req', '-x509', '-new', '-key', strangerKey, '-subj', '/CN=est-dev-1', '-days', '2']).stdout,
      );
      const forged = await split(
        curl([
          '--cert',
          stranger,
          '--key',
          strangerKey,
          '-H',
          'Content-Type: application/pkcs10',
          '--data-binary',
          `@${next.csrB64}`,
          `${base}/simplereenroll`,
        ]),
      );
      assert.equal(forged.status, 401);
      // A wrong token password.
      const bad = await split(
        curl(['-u', 'est-dev-1:wrong', '-H', 'Content-Type: application/pkcs10', '--data-binary', `@${csrB64}`, `${base}/simpleenroll`]),
      );
      assert.equal(bad.status, 401);
    });

    it('HTTP Basic over plain HTTP is refused (RFC 7030 3.2.3): 403 problem+json saying TLS is required, the token left unspent for the TLS port', async () => {
      const tok = (await api.post('/v1/enrollment-tokens').set(admin).send({ deviceId: 'est-dev-4', maxUses: 1 }).expect(201)).body
        .token as string;
      const { csrB64 } = newKeyAndCsr('d4', 'est-dev-4');
      const basic = { Authorization: `Basic ${Buffer.from(`est-dev-4:${tok}`).toString('base64')}`, 'Content-Type': 'application/pkcs10' };
      // The token would cross the network in clear: the EST route and /v1/enroll (which takes every credential) refuse it.
      for (const path of ['/.well-known/est/simpleenroll', '/.well-known/est/device/simpleenroll', '/v1/enroll']) {
        assertProblem(await api.post(path).set(basic).send(readFileSync(csrB64, 'utf8')), 403, /requires TLS/);
      }
      // Over TLS the same one-use token still enrolls.
      const r = await split(
        curl(['-u', `est-dev-4:${tok}`, '-H', 'Content-Type: application/pkcs10', '--data-binary', `@${csrB64}`, `${base}/simpleenroll`]),
      );
      assert.equal(r.status, 200, r.body);
    });

    it('labels select a profile; an unknown label is 404', async () => {
      const tok = await token('est-dev-2');
      const { csrB64 } = newKeyAndCsr('d2', 'est-dev-2');
      assert.equal(
        (
          await split(
            curl([
              '-u',
              `est-dev-2:${tok}`,
              '-H',
              'Content-Type: application/pkcs10',
              '--data-binary',
              `@${csrB64}`,
              `${base}/broker/simpleenroll`,
            ]),
          )
        ).status,
        403,
      );
      assert.equal((await split(curl([`${base}/nonsense/cacerts`]))).status, 404);
      assert.equal(
        (
          await split(
            curl([
              '-u',
              `est-dev-2:${tok}`,
              '-H',
              'Content-Type: application/pkcs10',
              '--data-binary',
              `@${csrB64}`,
              `${base}/device/simpleenroll`,
            ]),
          )
        ).status,
        200,
      );
    });

    it('/serverkeygen returns the key and certificate as multipart over TLS only; /csrattrs lists what we accept', async () => {
      const tok = await token('est-dev-3');
      const { csrB64 } = newKeyAndCsr('d3', 'est-dev-3');
      const out = await runAsync('curl', [
        '-sS',
        '--cacert',
        `${dir}/root.pem`,
        '-D',
        `${dir}/h.txt`,
        '-u',
        `est-dev-3:${tok}`,
        '-H',
        'Content-Type: application/pkcs10',
        '--data-binary',
        `@${csrB64}`,
        `${base}/serverkeygen`,
      ]);
      const headers = run('cat', [`${dir}/h.txt`]).stdout;
      assert.match(headers, /^HTTP\/1\.1 200/);
      const boundary = /boundary=([^\s;]+)/.exec(headers)![1]!;
      const parts = out.stdout.split(`--${boundary}`).slice(1, -1);
      assert.equal(parts.length, 2);
      const [keyPart, certPart] = parts.map((p) => p.split('\r\n\r\n')[1]!.trim());
      assert.match(parts[0]!, /Content-Type: application\/pkcs8/);
      const keyPem = run('sh', ['-c', 'openssl base64 -d | openssl pkey -inform DER'], keyPart!.replace(/\r/g, '') + '\n');
      assert.equal(keyPem.status, 0, keyPem.stderr);
      const certPem = pkcs7Certs(certPart!).stdout;
      assert.match(certPem, /subject=CN = est-dev-3/);
      const keyPub = run('openssl', ['pkey', '-pubout'], keyPem.stdout).stdout;
      assert.equal(keyPub, run('openssl', ['x509', '-pubkey', '-noout'], certPem.slice(certPem.indexOf('-----BEGIN'))).stdout);
      // Over plain HTTP the key would travel in clear: refused.
      const plain = await api
        .post('/.well-known/est/serverkeygen')
        .set({ Authorization: `Basic ${Buffer.from(`est-dev-3:${tok}`).toString('base64')}`, 'Content-Type': 'application/pkcs10' })
        .send(run('cat', [csrB64]).stdout);
      assert.equal(plain.status, 403);

      const attrs = await split(curl([`${base}/csrattrs`]));
      assert.equal(attrs.status, 200);
      const parsed = run('sh', ['-c', 'openssl base64 -d | openssl asn1parse -inform DER'], attrs.body.replace(/\r/g, ''));
      assert.match(parsed.stdout, /ecdsa-with-SHA256/);
    });
  });
}
