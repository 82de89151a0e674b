import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { dbTargets } from '../helpers/db.js';
import { makeApiService, makeService } from '../helpers/service.js';
import { runAsync, tempDir, writeTemp, type RunResult } from '../helpers/openssl.js';
import { envSkip, toolSkip } from '../helpers/tools.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { buildService, createHttpHandler, type Service } from '../../src/main.js';
import { bootstrap } from '../../src/bootstrap.js';
import { ManualClock } from '../../src/shared/clock.js';
import knexFactory from 'knex';
import type { Role } from '../../src/access/api-keys.js';

const MALFORMED = Buffer.from('30030a0101', 'hex');
const DAY = 86_400_000;

const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });

async function listenOn(svc: Service): Promise<{ server: Server; url: string }> {
  const server = createServer(createHttpHandler(svc));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}` };
}

const closeServer = (s: Server | undefined) => new Promise<void>((r) => (s ? s.close(() => r()) : r()));

/** The status line openssl prints for one certificate, and what follows it. */
function opensslStatus(r: RunResult, certFile: string): string {
  const out = r.stdout + r.stderr;
  const at = out.indexOf(`${certFile}: `);
  assert.ok(at >= 0, `no status for ${certFile} in:\n${out}`);
  return out.slice(at + certFile.length + 2).split(/\n(?=\S)/)[0]!;
}

for (const target of dbTargets) {
  describe(`OCSP responder on ${target.name}`, { skip: target.skip ?? toolSkip('openssl') ?? toolSkip('ocsptool') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let keys: Record<Role, string>;
    let issuingId: string;
    let server: Server;
    let url: string;
    const dir = tempDir();
    const files: Record<string, string> = {};
    const serials: Record<string, string> = {};

    const issue = async (name: string) => {
      const c = await svc.issuance.issue({ profile: 'device', deviceId: name, subjectPublicKeyInfo: p256() }, { actor: 'test' });
      files[name] = writeTemp(dir, `${name}.pem`, toPem(c.der));
      serials[name] = c.serial;
    };
    const ocsp = (args: string[]) =>
      runAsync('openssl', [
        'ocsp',
        '-issuer',
        files.issuing!,
        '-url',
        `${url}/pki/ocsp`,
        '-CAfile',
        files.root!,
        '-verify_other',
        files.issuing!,
        ...args,
      ]);
    const statusOf = async (name: string, extra: string[] = ['-no_nonce']) => {
      const r = await ocsp([...extra, '-cert', files[name]!]);
      assert.match(r.stderr + r.stdout, /Response verify OK/, r.stderr);
      return opensslStatus(r, files[name]!);
    };
    const post = (body: Uint8Array, headers: Record<string, string> = {}) =>
      fetch(`${url}/pki/ocsp`, { method: 'POST', body, headers: { 'Content-Type': 'application/ocsp-request', ...headers } });
    const api = (path: string, body: unknown) =>
      fetch(`${url}${path}`, {
        method: 'POST',
        body: JSON.stringify(body),
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${keys.operator}` },
      });
    /** A DER request made by openssl (no network). */
    const requestFor = async (name: string, extra: string[] = ['-no_nonce']) => {
      const out = join(dir, `${name}-${randomBytes(4).toString('hex')}.req`);
      const r = await runAsync('openssl', ['ocsp', '-issuer', files.issuing!, ...extra, '-cert', files[name]!, '-reqout', out]);
      assert.equal(r.status, 0, r.stderr);
      return readFileSync(out);
    };

    before(async () => {
      ({ svc, keys, issuingId } = await makeApiService(target));
      ({ server, url } = await listenOn(svc));
      const cas = await svc.hierarchy.list();
      files.root = writeTemp(dir, 'root.pem', cas.find((c) => c.kind === 'root')!.certificate!);
      files.issuing = writeTemp(dir, 'issuing.pem', cas.find((c) => c.id === issuingId)!.certificate!);
      for (const name of ['good', 'kc', 'hold', 'multi-1', 'multi-2', 'get', 'gnutls', 'lot-1', 'lot-2']) await issue(name);
    });
    after(async () => {
      await closeServer(server);
      await svc?.dispose();
    });

    it('answers good, signed by a delegated responder that openssl verifies: issued by the CA, OCSPSigning, ocsp-nocheck, recorded like any certificate', async () => {
      const r = await ocsp(['-no_nonce', '-resp_text', '-cert', files.good!]);
      const out = r.stdout + r.stderr;
      assert.match(out, /Response verify OK/);
      assert.match(opensslStatus(r, files.good!), /^good\n\tThis Update: .*\n\tNext Update: /);
      assert.match(out, /Responder Id: [0-9A-F]{40}/, 'the responder is named by key hash');
      assert.match(out, /Extended Key Usage: \n\s*OCSP Signing/);
      assert.match(out, /OCSP No Check/);
      assert.match(out, /Issuer: O=mqtt-ca, CN=mqtt-ca Issuing CA 1/);
      const responderSerial = /Certificate:\n\s+Data:\n\s+Version: 3 \(0x2\)\n\s+Serial Number:\n\s+([0-9a-f:]+)/
        .exec(out)![1]!
        .replace(/:/g, '');
      const row = await svc
        .db('certificates')
        .where({ serial: Buffer.from(responderSerial.padStart(2, '0'), 'hex') })
        .first();
      assert.equal(row?.profile, 'ocsp-responder');
      assert.equal(row?.status, 'issued');
      assert.equal((await svc.audit.list({ limit: 5, action: 'ocsp-responder.issued', targetId: responderSerial })).items.length, 1);
    });

    it('echoes the nonce and signs on the spot; SHA-256 CertIDs; several CertIDs in one request', async () => {
      const withNonce = await ocsp(['-cert', files.good!]);
      assert.match(withNonce.stderr, /Response verify OK/);
      assert.doesNotMatch(withNonce.stderr + withNonce.stdout, /WARNING: no nonce|nonce verify error/i);
      const sha256 = await ocsp(['-no_nonce', '-sha256', '-cert', files.good!, '-resp_text']);
      assert.match(sha256.stdout, /Hash Algorithm: sha256/);
      assert.match(opensslStatus(sha256, files.good!), /^good/);
      await api(`/v1/certificates/${serials['multi-2']}/revoke`, { reason: 'affiliationChanged' });
      const several = await ocsp([
        '-cert',
        files['multi-1']!,
        '-cert',
        files['multi-2']!,
        '-serial',
        `0x${randomBytes(16).toString('hex')}`,
        '-resp_text',
      ]);
      assert.match(several.stderr, /Response verify OK/);
      assert.match(opensslStatus(several, files['multi-1']!), /^good/);
      assert.match(opensslStatus(several, files['multi-2']!), /^revoked[\s\S]*Reason: affiliationChanged/);
      assert.match(several.stdout, /Cert Status: unknown/);
      assert.equal((several.stdout.match(/Certificate ID:/g) ?? []).length, 3);
      // Two nonce requests get two different signatures; two without a nonce get the same stored bytes.
      const a = Buffer.from(await (await post(await requestFor('good', []))).arrayBuffer());
      const b = Buffer.from(await (await post(await requestFor('good', []))).arrayBuffer());
      assert.notDeepEqual(a, b);
      const c = Buffer.from(await (await post(await requestFor('good'))).arrayBuffer());
      const d = Buffer.from(await (await post(await requestFor('good'))).arrayBuffer());
      assert.deepEqual(c, d);
    });

    it('says revoked, with time and reason, as soon as the revoke call returns; a hold is revoked (certificateHold) until released', async () => {
      assert.match(await statusOf('kc'), /^good/);
      const res = await api(`/v1/certificates/${serials.kc}/revoke`, { reason: 'keyCompromise' });
      assert.equal(res.status, 200);
      const revokedAt = ((await res.json()) as { revocation: { revokedAt: string } }).revocation.revokedAt;
      const status = await statusOf('kc');
      assert.match(status, /^revoked\n[\s\S]*Reason: keyCompromise\n\tRevocation Time: (.*)/);
      const shown = /Revocation Time: (.*)/.exec(status)![1]!;
      assert.equal(new Date(shown).getTime(), Math.floor(Date.parse(revokedAt) / 1000) * 1000);
      assert.match(await statusOf('kc', []), /^revoked/, 'the nonce path agrees');

      assert.match(await statusOf('hold'), /^good/);
      await api(`/v1/certificates/${serials.hold}/revoke`, { reason: 'certificateHold' });
      assert.match(await statusOf('hold'), /^revoked[\s\S]*Reason: certificateHold/);
      await api(`/v1/certificates/${serials.hold}/release`, {});
      assert.match(await statusOf('hold'), /^good/);
    });

    it('a bulk revocation is visible when it returns, for every certificate it touched', async () => {
      for (const name of ['lot-1', 'lot-2']) assert.match(await statusOf(name), /^good/);
      const res = await api('/v1/revocations', {
        selector: { serials: [serials['lot-1'], serials['lot-2']] },
        reason: 'cessationOfOperation',
      });
      assert.equal(res.status, 200);
      for (const name of ['lot-1', 'lot-2']) assert.match(await statusOf(name), /^revoked[\s\S]*Reason: cessationOfOperation/);
    });

    it('keyCompromise takes the device: its older certificates and its lineage are revoked with it (single, bulk by serial, incident action), OCSP and the CRL say so when the call returns', async () => {
      const issueAs = async (name: string, req: { deviceId?: string; renews?: string }) => {
        const c = await svc.issuance.issue(
          {
            profile: req.deviceId ? 'device' : 'broker',
            ...(req.deviceId ? { deviceId: req.deviceId } : { dnsNames: [`${name}.example`] }),
            ...(req.renews ? { renews: Buffer.from(serials[req.renews]!, 'hex') } : {}),
            subjectPublicKeyInfo: p256(),
          },
          { actor: 'test' },
        );
        files[name] = writeTemp(dir, `${name}.pem`, toPem(c.der));
        serials[name] = c.serial;
      };
      const crl = async () => {
        // The full CRL follows a revocation in the background (the call returns with a delta CRL).
        await svc.crls.settled();
        const text = await fetch(`${url}/pki/crl/${issuingId}.pem`).then((r) => r.text());
        const out = await runAsync('openssl', [
          'crl',
          '-noout',
          '-text',
          '-in',
          writeTemp(dir, `crl-${randomBytes(4).toString('hex')}.pem`, text),
        ]);
        assert.equal(out.status, 0, out.stderr);
        return out.stdout.toLowerCase().replace(/:/g, '');
      };
      const revokedForKeyCompromise = async (name: string) => {
        assert.match(await statusOf(name), /^revoked[\s\S]*Reason: keyCompromise/, `${name} is revoked by OCSP`);
        const entry = new RegExp(
          `serial number 0*${serials[name]!.replace(/^0+/, '')}\\n(?:(?!\\s+serial number)\\s+[^\\n]*\\n)*?\\s+key compromise\\n`,
        );
        assert.match(await crl(), entry, `${name} is on the CRL, for key compromise`);
      };

      // Single revocation of a device's newest certificate: the older one, still valid, goes too; another device's stays good.
      await issueAs('kcd-old', { deviceId: 'kcd' });
      await issueAs('kcd-new', { deviceId: 'kcd' });
      await issueAs('kcd-neighbour', { deviceId: 'kcd-2' });
      assert.match(await statusOf('kcd-old'), /^good/);
      const single = await api(`/v1/certificates/${serials['kcd-new']}/revoke`, { reason: 'keyCompromise' });
      assert.equal(single.status, 200, await single.text());
      await revokedForKeyCompromise('kcd-old');
      assert.equal(single.headers.get('also-revoked'), '1');
      assert.match(await statusOf('kcd-neighbour'), /^good/);

      // Without a device, the renewal lineage: the certificate it renewed goes, an unrelated one does not.
      await issueAs('kcl-1', {});
      await issueAs('kcl-2', { renews: 'kcl-1' });
      await issueAs('kcl-unrelated', {});
      assert.equal((await api(`/v1/certificates/${serials['kcl-2']}/revoke`, { reason: 'keyCompromise' })).status, 200);
      await revokedForKeyCompromise('kcl-1');
      assert.match(await statusOf('kcl-unrelated'), /^good/);

      // A bulk revocation by serial: the dry run counts the device's other certificate, and the revocation takes it.
      await issueAs('kcb-old', { deviceId: 'kcb' });
      await issueAs('kcb-new', { deviceId: 'kcb' });
      const dry = (await (
        await api('/v1/revocations', { selector: { serials: [serials['kcb-new']] }, reason: 'keyCompromise', dryRun: true })
      ).json()) as { revoked: number };
      assert.equal(dry.revoked, 2);
      const bulk = await api('/v1/revocations', { selector: { serials: [serials['kcb-new']] }, reason: 'keyCompromise' });
      assert.equal(((await bulk.json()) as { revoked: number }).revoked, 2);
      await revokedForKeyCompromise('kcb-old');

      // An incident's revoke-certificates on the device: every certificate of it.
      const registered = await fetch(`${url}/v1/devices`, {
        method: 'POST',
        body: JSON.stringify({ id: 'kci', kind: 'client' }),
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${keys.admin}` },
      });
      assert.equal(registered.status, 201, await registered.text());
      await issueAs('kci-old', { deviceId: 'kci' });
      await issueAs('kci-new', { deviceId: 'kci' });
      const incident = (await (
        await api('/v1/incidents', { kind: 'device-compromise', title: 'kci tampered', targets: { devices: ['kci'] } })
      ).json()) as { id: string };
      const action = await api(`/v1/incidents/${incident.id}/actions`, {
        action: 'revoke-certificates',
        params: { reason: 'keyCompromise' },
      });
      assert.equal(action.status, 201, await action.text());
      await revokedForKeyCompromise('kci-old');
    });

    it('unknown for a serial never issued; unauthorized for an issuer it does not serve', async () => {
      const unknown = await ocsp(['-no_nonce', '-serial', `0x${randomBytes(16).toString('hex')}`, '-resp_text']);
      assert.match(unknown.stderr, /Response verify OK/);
      assert.match(unknown.stdout, /Cert Status: unknown/);
      // A CA of someone else's: openssl makes it and a certificate under it.
      const key = writeTemp(
        dir,
        'other.key',
        generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }),
      );
      const other = join(dir, 'other.pem');
      const made = await runAsync('openssl', ['req', '-x509', '-new', '-key', key, '-subj', '/CN=Not Ours', '-days', '2', '-out', other]);
      assert.equal(made.status, 0, made.stderr);
      const r = await runAsync('openssl', ['ocsp', '-issuer', other, '-serial', '0x01', '-url', `${url}/pki/ocsp`, '-no_nonce']);
      assert.match(r.stdout + r.stderr, /Responder Error: unauthorized \(6\)/);
      // A request naming two CAs, one ours: one signer cannot answer both.
      const mixed = await runAsync('openssl', [
        'ocsp',
        '-issuer',
        other,
        '-serial',
        '0x01',
        '-issuer',
        files.issuing!,
        '-cert',
        files.good!,
        '-url',
        `${url}/pki/ocsp`,
        '-no_nonce',
      ]);
      assert.match(mixed.stdout + mixed.stderr, /Responder Error: unauthorized \(6\)/);
    });

    it('malformedRequest for garbage, truncation, oversize and bad base64; 415 for another media type, 405 for other methods; never a 5xx', async () => {
      const good = await requestFor('good');
      const inputs: Buffer[] = [
        Buffer.alloc(0),
        randomBytes(40),
        good.subarray(0, good.length - 3),
        Buffer.concat([good, Buffer.from([0])]),
        Buffer.alloc(20_000, 0x30),
      ];
      for (const body of inputs) {
        const res = await post(body);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('content-type'), 'application/ocsp-response');
        assert.deepEqual(Buffer.from(await res.arrayBuffer()), MALFORMED, `for ${body.length} bytes`);
      }
      const asOpenssl = await runAsync('openssl', ['ocsp', '-respin', writeTemp(dir, 'malformed.der', MALFORMED), '-resp_text']);
      assert.match(asOpenssl.stdout + asOpenssl.stderr, /malformedRequest \(1\)/i);
      for (const path of ['/pki/ocsp/!!!notbase64', '/pki/ocsp/%E0%A4%A', '/pki/ocsp', '/pki/ocsp/']) {
        const res = await fetch(`${url}${path}`);
        assert.equal(res.status, 200, path);
        assert.deepEqual(Buffer.from(await res.arrayBuffer()), MALFORMED, path);
      }
      // Another declared media type is refused unread; none at all (some embedded clients) is read.
      for (const type of ['application/json', 'text/plain', 'multipart/form-data; boundary=x']) {
        const res = await post(good, { 'Content-Type': type });
        assert.equal(res.status, 415, type);
        assert.match(res.headers.get('content-type')!, /^application\/problem\+json/);
        assert.equal(res.headers.get('accept-post'), 'application/ocsp-request');
      }
      const untyped = await fetch(`${url}/pki/ocsp`, { method: 'POST', body: new Blob([good]) });
      assert.equal(untyped.status, 200);
      assert.notDeepEqual(Buffer.from(await untyped.arrayBuffer()), MALFORMED);
      assert.equal((await post(good, { 'Content-Type': 'Application/OCSP-Request; charset=binary' })).status, 200);
      const put = await fetch(`${url}/pki/ocsp`, { method: 'PUT', body: good });
      assert.equal(put.status, 405);
      assert.match(put.headers.get('content-type')!, /^application\/problem\+json/);
      assert.match(put.headers.get('allow')!, /POST/);
      // Mutations of a real request: always an OCSP response, never a 5xx.
      const seen = new Set<string>();
      for (let i = 0; i < 400; i++) {
        const m = Buffer.from(good);
        for (let k = 0; k < 1 + (i % 4); k++) m[Math.floor(Math.random() * m.length)] = Math.floor(Math.random() * 256);
        const res = await post(i % 7 === 0 ? m.subarray(0, Math.floor(Math.random() * m.length)) : m);
        assert.equal(res.status, 200);
        const body = Buffer.from(await res.arrayBuffer());
        assert.equal(body[0], 0x30);
        seen.add(body.subarray(0, 5).toString('hex'));
      }
      assert.ok(seen.has(MALFORMED.toString('hex')));
      assert.ok(
        [...seen].every((s) => ['3003', '3082'].some((p) => s.startsWith(p))),
        [...seen].join(','),
      );
    });

    it('GET per RFC 5019: the request base64 in the path, cacheable headers, 304 on a matching ETag, and the same bytes as the POST', async () => {
      const req = await requestFor('get');
      const path = `/pki/ocsp/${encodeURIComponent(req.toString('base64'))}`;
      const res = await fetch(`${url}${path}`);
      assert.equal(res.status, 200);
      const body = Buffer.from(await res.arrayBuffer());
      const cc = res.headers.get('cache-control')!;
      assert.match(cc, /^public, max-age=(\d+), no-transform, must-revalidate$/);
      assert.ok(Number(/max-age=(\d+)/.exec(cc)![1]) <= 60);
      const etag = res.headers.get('etag')!;
      assert.ok(etag && res.headers.get('last-modified') && res.headers.get('expires'));
      const check = await runAsync('openssl', [
        'ocsp',
        '-respin',
        writeTemp(dir, 'get.der', body),
        '-issuer',
        files.issuing!,
        '-cert',
        files.get!,
        '-CAfile',
        files.root!,
        '-verify_other',
        files.issuing!,
      ]);
      assert.match(check.stderr, /Response verify OK/);
      assert.match(opensslStatus(check, files.get!), /^good/);
      assert.deepEqual(Buffer.from(await (await post(req)).arrayBuffer()), body, 'GET and POST share the pre-signed response');
      // Kept for hours, a cached response owns its bytes: a view into Node's pool would keep a slab of 8 KB alive per certificate.
      const presigned = [...svc.ocsp.cache['entries'].values()].flatMap((e) => Object.values(e.byHash));
      assert.ok(presigned.length >= 1, 'responses are cached');
      for (const p of presigned) for (const b of [p.der, p.issuerKeyHash]) assert.equal(b.buffer.byteLength, b.length);
      const again = await fetch(`${url}${path}`, { headers: { 'If-None-Match': etag } });
      assert.equal(again.status, 304);
      // base64url is accepted too.
      assert.deepEqual(Buffer.from(await (await fetch(`${url}/pki/ocsp/${req.toString('base64url')}`)).arrayBuffer()), body);

      await api(`/v1/certificates/${serials.get}/revoke`, { reason: 'superseded' });
      const after = await fetch(`${url}${path}`, { headers: { 'If-None-Match': etag } });
      assert.equal(after.status, 200, 'the old ETag no longer matches');
      assert.notEqual(after.headers.get('etag'), etag);
      const revoked = await runAsync('openssl', [
        'ocsp',
        '-respin',
        writeTemp(dir, 'get2.der', Buffer.from(await after.arrayBuffer())),
        '-issuer',
        files.issuing!,
        '-cert',
        files.get!,
        '-CAfile',
        files.root!,
        '-verify_other',
        files.issuing!,
      ]);
      assert.match(opensslStatus(revoked, files.get!), /^revoked[\s\S]*Reason: superseded/);
    });

    it('GnuTLS ocsptool asks, verifies the delegated responder, and reads good, revoked (with its time) and the nonce', async () => {
      const ask = (extra: string[]) =>
        runAsync('ocsptool', [`--ask=${url}/pki/ocsp`, '--load-issuer', files.issuing!, '--load-cert', files.gnutls!, ...extra]);
      const good = await ask([]);
      assert.equal(good.status, 0, good.stderr);
      assert.match(good.stdout, /Certificate Status: good/);
      assert.match(good.stdout, /Verifying OCSP Response: Success/);
      const nonce = await ask(['--nonce']);
      assert.match(nonce.stdout, /Nonce: [0-9a-f]+/);
      assert.match(nonce.stdout, /Verifying OCSP Response: Success/);
      await api(`/v1/certificates/${serials.gnutls}/revoke`, { reason: 'privilegeWithdrawn' });
      const revoked = await ask([]);
      assert.match(revoked.stdout, /Certificate Status: revoked/);
      assert.match(revoked.stdout, /Revocation time: /);
    });
  });
}

describe(
  'OCSP responder replicas on postgres',
  { skip: envSkip('DATABASE_URL', 'the replica tests (two services on one PostgreSQL) are') ?? toolSkip('openssl') },
  () => {
    const target = dbTargets.find((t) => t.name === 'postgres')!;
    let a: Service & { dispose(): Promise<void> };
    let b: Service;
    let issuingId: string;
    const dir = tempDir();
    let notified: ((payload: string) => void) | undefined;
    const nextNotification = () => new Promise<string>((r) => (notified = r));
    const until = async (cond: () => boolean, what: string) => {
      for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
      assert.ok(cond(), what);
    };
    const requestOf = async (serial: string, pem: string) => {
      const out = join(dir, `${serial}.req`);
      const cas = await a.hierarchy.list();
      const issuer = writeTemp(dir, 'issuing.pem', cas.find((c) => c.id === issuingId)!.certificate!);
      const r = await runAsync('openssl', [
        'ocsp',
        '-issuer',
        issuer,
        '-cert',
        writeTemp(dir, `${serial}.pem`, pem),
        '-no_nonce',
        '-reqout',
        out,
      ]);
      assert.equal(r.status, 0, r.stderr);
      return readFileSync(out);
    };
    const statusIn = (der: Buffer) =>
      der.includes(Buffer.from([0x80, 0x00, 0x18])) ? 'good' : der.includes(Buffer.from([0xa1])) ? 'revoked' : 'other';

    before(async () => {
      a = await makeService(target);
      issuingId = (await bootstrap(a)).issuingId!;
      // A second process on the same database: its own pool, its own cache, its own change feed, the same KEK.
      b = await buildService(a.config, {
        db: knexFactory({ client: 'pg', connection: a.db.client.config.connection, pool: { min: 0, max: 10 } }),
        logger: pino({ level: 'silent' }),
      });
      const forget = b.ocsp.forgetRemote.bind(b.ocsp);
      b.ocsp.forgetRemote = (payload: string) => {
        forget(payload);
        notified?.(payload);
      };
      await until(() => b.ocsp.cache.enabled, 'the replica listens for changes');
    });
    after(async () => {
      await b?.close();
      await a?.dispose();
    });

    it("replicas answer with the same stored bytes, and a revocation through one reaches the other's cache through the database", async () => {
      const c = await a.issuance.issue({ profile: 'device', deviceId: 'replica-1', subjectPublicKeyInfo: p256() }, { actor: 'test' });
      const req = await requestOf(c.serial, toPem(c.der));
      const fromA = (await a.ocsp.respond(req)).der;
      const stored = await a.db('ocsp_responses').where({ serial: Buffer.from(c.serial, 'hex') });
      assert.equal(stored.length, 1, 'the pre-signed response is in the shared store');
      const fromB = (await b.ocsp.respond(req)).der;
      assert.deepEqual(fromB, fromA, 'the replica serves the stored response, not one of its own');
      assert.equal(statusIn(fromB), 'good');
      assert.ok(b.ocsp.cache.size > 0, 'and keeps it in memory');

      const notification = nextNotification();
      await a.revocations.revoke(c.serial, { reason: 'keyCompromise' }, { actor: 'test' });
      assert.equal(statusIn((await a.ocsp.respond(req)).der), 'revoked');
      assert.equal(await notification, c.serial);
      assert.equal(statusIn((await b.ocsp.respond(req)).der), 'revoked');
    });

    it('while its change feed is down a replica answers from the database, and uses its cache again once the feed is back', async () => {
      const c = await a.issuance.issue({ profile: 'device', deviceId: 'replica-2', subjectPublicKeyInfo: p256() }, { actor: 'test' });
      const req = await requestOf(c.serial, toPem(c.der));
      assert.equal(statusIn((await b.ocsp.respond(req)).der), 'good');
      await a.db.raw(
        `select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'mqtt-ca ocsp feed' and datname = current_database()`,
      );
      await until(() => !b.ocsp.cache.enabled, 'the replica noticed the lost feed');
      // A change it cannot hear about: it must still answer right.
      await a.revocations.revoke(c.serial, { reason: 'keyCompromise' }, { actor: 'test' });
      assert.equal(statusIn((await b.ocsp.respond(req)).der), 'revoked');
      await until(() => b.ocsp.cache.enabled, 'the feed reconnected');
      assert.equal(statusIn((await b.ocsp.respond(req)).der), 'revoked');
    });
  },
);

describe('OCSP responder certificates', { skip: toolSkip('openssl') }, () => {
  const target = dbTargets.find((t) => t.name === 'pglite')!;
  let svc: Service & { dispose(): Promise<void> };
  let issuingId: string;
  const clock = new ManualClock(new Date());
  const dir = tempDir();

  before(async () => {
    svc = await makeService(target, { clock });
    issuingId = (await bootstrap(svc)).issuingId!;
  });
  after(async () => svc?.dispose());

  const respond = async (serial: string, pem: string) => {
    const cas = await svc.hierarchy.list();
    const issuer = writeTemp(dir, 'issuing.pem', cas.find((c) => c.id === issuingId)!.certificate!);
    const out = join(dir, 'r.req');
    const r = await runAsync('openssl', ['ocsp', '-issuer', issuer, '-cert', writeTemp(dir, 'leaf.pem', pem), '-no_nonce', '-reqout', out]);
    assert.equal(r.status, 0, r.stderr);
    const answer = await svc.ocsp.respond(readFileSync(out));
    assert.equal(answer.error, undefined);
    return answer;
  };

  it('a successor is issued before the responder expires, signs from then on, and is recorded and audited; an expired one is never used', async () => {
    const c = await svc.issuance.issue(
      { profile: 'device', deviceId: 'rr-1', subjectPublicKeyInfo: p256(), validityDays: 365 },
      { actor: 'test' },
    );
    const issuingResponder = async () => (await svc.ocspResponders.renewDue()).find((r) => r.caId === issuingId)!;
    const first = await issuingResponder();
    const r1 = await respond(c.serial, toPem(c.der));
    assert.ok(r1.der.includes(first!.certificateDer), 'the response carries the responder certificate');

    clock.advance(21 * DAY); // 30-day responders are renewed with 10 days left
    const second = await issuingResponder();
    assert.notEqual(second!.serial, first!.serial);
    const r2 = await respond(c.serial, toPem(c.der));
    assert.ok(r2.der.includes(second!.certificateDer), 'the successor signs');
    const audit = await svc.audit.list({ limit: 10, action: 'ocsp-responder.issued' });
    assert.ok(audit.items.some((e) => e.targetId === second!.serial && (e.details as { replaces?: string }).replaces === first!.serial));
    const responders = await svc.db('certificates').where({ profile: 'ocsp-responder', ca_id: issuingId });
    assert.equal(responders.length, 2);

    // Past the successor's end without housekeeping: the next answer waits for a new responder rather than use an expired one.
    clock.advance(31 * DAY);
    const r3 = await respond(c.serial, toPem(c.der));
    const third = await issuingResponder();
    assert.notEqual(third!.serial, second!.serial);
    assert.ok(r3.der.includes(third!.certificateDer));
    const cas = await svc.hierarchy.list();
    const chain = writeTemp(
      dir,
      'chain.pem',
      cas.find((x) => x.kind === 'root')!.certificate! + cas.find((x) => x.id === issuingId)!.certificate!,
    );
    const v = await runAsync('openssl', [
      'ocsp',
      '-respin',
      writeTemp(dir, 'r3.der', r3.der),
      '-issuer',
      writeTemp(dir, 'iss.pem', cas.find((x) => x.id === issuingId)!.certificate!),
      '-cert',
      writeTemp(dir, 'c.pem', toPem(c.der)),
      '-CAfile',
      chain,
      '-attime',
      String(Math.floor(clock.now().getTime() / 1000) + 60),
    ]);
    assert.match(v.stderr, /Response verify OK/);
  });
});
