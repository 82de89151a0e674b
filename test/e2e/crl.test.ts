import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import { run, tempDir, writeTemp } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import * as x509 from '@peculiar/x509';
import { toPem } from '../../src/ca/x509/pem.js';
import { parseSerial } from '../../src/shared/ids.js';
import type { Service } from '../../src/main.js';
import { Revocations } from '../../src/revoke/revocation.js';
import { CertificateStore } from '../../src/store/certificate-store.js';
import { CrlPublisher, type CrlPolicy } from '../../src/revoke/crl-publisher.js';
import { CrlStore } from '../../src/store/crl-store.js';
import { PkiUrls } from '../../src/ca/urls.js';
import type { Role } from '../../src/access/api-keys.js';

type Agent = ReturnType<typeof request>;

/** supertest's parser for a binary body (a Buffer in res.body). */
const binary: Parameters<request.Test['parse']>[0] = (res, cb) => {
  const chunks: Buffer[] = [];
  res.on('data', (c: Buffer) => chunks.push(c));
  res.on('end', () => cb(null, Buffer.concat(chunks)));
};

for (const target of dbTargets) {
  describe(`CRLs on ${target.name}`, { skip: target.skip ?? toolSkip('openssl') ?? toolSkip('certtool') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    let issuingId: string;
    let rootPem: string;
    let issuingPem: string;
    const certs: Record<string, { serial: string; pem: string }> = {};
    const dir = tempDir();

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const enroll = async (deviceId: string) => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: deviceId, kind: 'client' }).expect(201);
      const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId }).expect(201)).body.token as string;
      const body = (
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ csr: p256Csr(deviceId).pem })
          .expect(201)
      ).body;
      certs[deviceId] = { serial: body.serial, pem: body.certificate };
    };
    const revoke = (deviceId: string, body: Record<string, unknown>) =>
      api.post(`/v1/certificates/${certs[deviceId]!.serial}/revoke`).set(auth('operator')).send(body).expect(200);
    const crlDer = async (headers: Record<string, string> = {}) =>
      api.get(`/pki/crl/${issuingId}.crl`).set(headers).buffer(true).parse(binary);
    const crlText = (pem: string) => {
      const r = run('openssl', ['crl', '-in', writeTemp(dir, 'text.pem', pem), '-noout', '-text']);
      assert.equal(r.status, 0, r.stderr);
      return r.stdout;
    };
    const crlNumberOf = (text: string) => BigInt(/X509v3 CRL Number:\s*\n\s*(\d+)/.exec(text)![1]!);
    const deltaPem = async () =>
      toPem((await api.get(`/pki/crl/${issuingId}-delta.crl`).buffer(true).parse(binary).expect(200)).body as Buffer, 'X509 CRL');
    const verifyWithDelta = (deviceId: string, basePem: string, delta?: string) =>
      run('openssl', [
        'verify',
        '-crl_check',
        '-use_deltas',
        '-extended_crl',
        '-CAfile',
        writeTemp(dir, 'root.pem', rootPem),
        '-untrusted',
        writeTemp(dir, 'issuing.pem', issuingPem),
        '-CRLfile',
        writeTemp(dir, 'base.pem', basePem),
        ...(delta ? ['-CRLfile', writeTemp(dir, 'delta.pem', delta)] : []),
        writeTemp(dir, 'leaf.pem', certs[deviceId]!.pem),
      ]);
    let firstCrlPem: string;
    const verifyLeaf = (deviceId: string, crlPem: string) =>
      run('openssl', [
        'verify',
        '-crl_check',
        '-CAfile',
        writeTemp(dir, 'root.pem', rootPem),
        '-untrusted',
        writeTemp(dir, 'issuing.pem', issuingPem),
        '-CRLfile',
        writeTemp(dir, 'crl.pem', crlPem),
        writeTemp(dir, 'leaf.pem', certs[deviceId]!.pem),
      ]);

    /** A publisher of the issuing CA's CRLs beside the service's (as another replica's would be). */
    const publisher = (
      policy: Partial<CrlPolicy> = {},
      opts: { store?: CrlStore; failSigning?: boolean; onError?: (e: unknown) => void } = {},
    ) =>
      new CrlPublisher(
        svc.db,
        opts.store ?? new CrlStore(),
        {
          signingCas: async () => [{ id: issuingId, scope: 'user', keyAlgorithm: 'EC-P256' }],
          issuer: async (id) => {
            const issuer = await svc.hierarchy.issuer(id);
            if (!opts.failSigning) return issuer;
            return {
              ...issuer,
              signer: Object.create(issuer.signer, {
                sign: {
                  value: async () => {
                    throw new Error('signer offline');
                  },
                },
              }),
            };
          },
        },
        new PkiUrls(svc.config.publicUrl),
        svc.audit,
        svc.clock,
        { validityMs: svc.config.crlValidityMs, refreshBeforeMs: 0, deltaMaxEntries: 10_000, ...policy },
        opts.onError,
      );

    before(async () => {
      ({ svc, api, keys, issuingId } = await makeApiService(target));
      const cas = (await api.get('/v1/cas').set(auth('auditor')).expect(200)).body.items as {
        id: string;
        kind: string;
        certificate: string;
      }[];
      rootPem = cas.find((c) => c.kind === 'root')!.certificate;
      issuingPem = cas.find((c) => c.id === issuingId)!.certificate;
      for (const id of ['crl-good', 'crl-kc', 'crl-hold', 'crl-old']) await enroll(id);
    });
    after(async () => svc?.dispose());

    it('publishes a signed, empty CRL that openssl and certtool accept, with the extensions brokers need', async () => {
      const res = await crlDer();
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-type'], 'application/pkix-crl');
      const pem = toPem(res.body as Buffer, 'X509 CRL');
      const check = run('openssl', [
        'crl',
        '-in',
        writeTemp(dir, 'c.pem', pem),
        '-CAfile',
        writeTemp(dir, 'issuing.pem', issuingPem),
        '-noout',
      ]);
      assert.match(check.stderr + check.stdout, /verify OK/);
      const text = crlText(pem);
      assert.match(text, /Version 2/);
      assert.match(text, /X509v3 CRL Number:\s*\n\s*1\b/);
      assert.match(text, /X509v3 Authority Key Identifier/);
      assert.match(
        text,
        /X509v3 Issuing Distribution Point: critical\s*\n\s*Full Name:\s*\n\s*URI:http:\/\/ca\.test:8080\/pki\/crl\/[a-z0-9_]+\.crl\s*Only User Certificates/,
      );
      assert.match(text, /No Revoked Certificates/);
      assert.match(text, /X509v3 Freshest CRL:\s*\n\s*Full Name:\s*\n\s*URI:http:\/\/ca\.test:8080\/pki\/crl\/[a-z0-9_]+-delta\.crl/);
      firstCrlPem = pem;
      const gnutls = run('certtool', [
        '--verify-crl',
        '--load-ca-certificate',
        writeTemp(dir, 'issuing.pem', issuingPem),
        '--infile',
        writeTemp(dir, 'c.pem', pem),
      ]);
      assert.equal(gnutls.status, 0, gnutls.stdout + gnutls.stderr);
      assert.equal(verifyLeaf('crl-good', pem).status, 0);
    });

    it('lists revoked certificates with reasons and invalidity dates, and openssl verify -crl_check refuses them', async () => {
      const invalidityDate = new Date(Date.now() - 30_000);
      await revoke('crl-kc', { reason: 'keyCompromise', invalidityDate: invalidityDate.toISOString() });
      await revoke('crl-hold', { reason: 'certificateHold' });
      // The revoke calls returned with a delta CRL listing them; the full CRL follows in the background.
      await svc.crls.settled();
      const pem = toPem((await crlDer()).body as Buffer, 'X509 CRL');
      const text = crlText(pem);
      assert.ok(crlNumberOf(text) > crlNumberOf(crlText(firstCrlPem)));
      for (const id of ['crl-kc', 'crl-hold']) assert.match(text, new RegExp(`Serial Number: ${certs[id]!.serial.toUpperCase()}`));
      assert.doesNotMatch(text, new RegExp(certs['crl-good']!.serial.toUpperCase()));
      assert.match(text, /Key Compromise/);
      assert.match(text, /Certificate Hold/);
      assert.match(text, /Invalidity Date:\s*\n\s*\w{3}\s+\d+ \d\d:\d\d:\d\d \d{4} GMT/);
      for (const id of ['crl-kc', 'crl-hold']) {
        const r = verifyLeaf(id, pem);
        assert.notEqual(r.status, 0);
        assert.match(r.stdout + r.stderr, /certificate revoked/);
      }
      assert.equal(verifyLeaf('crl-good', pem).status, 0);
      const gnutls = run('certtool', [
        '--verify-crl',
        '--load-ca-certificate',
        writeTemp(dir, 'issuing.pem', issuingPem),
        '--infile',
        writeTemp(dir, 'c.pem', pem),
      ]);
      assert.equal(gnutls.status, 0, gnutls.stdout + gnutls.stderr);
    });

    it('publishes a delta CRL beside each full one: what changed since the base, which openssl combines with the base', async () => {
      // The newest delta published against the first CRL: the one the keyCompromise revocation returned with (at least).
      const firstNumber = crlNumberOf(crlText(firstCrlPem));
      const row = await svc
        .db('crls')
        .select('der')
        .where({ ca_id: issuingId, kind: 'delta', base_number: firstNumber.toString() })
        .orderBy('crl_number', 'desc')
        .first();
      const delta = toPem(Buffer.from(row!.der as Uint8Array), 'X509 CRL');
      const check = run('openssl', [
        'crl',
        '-in',
        writeTemp(dir, 'd.pem', delta),
        '-CAfile',
        writeTemp(dir, 'issuing.pem', issuingPem),
        '-noout',
      ]);
      assert.match(check.stderr + check.stdout, /verify OK/);
      const text = crlText(delta);
      assert.match(text, new RegExp(`X509v3 Delta CRL Indicator: critical\\s*\\n\\s*${firstNumber}\\b`));
      assert.match(
        text,
        /X509v3 Issuing Distribution Point: critical\s*\n\s*Full Name:\s*\n\s*URI:http:\/\/ca\.test:8080\/pki\/crl\/[a-z0-9_]+\.crl\s*Only User Certificates/,
      );
      assert.doesNotMatch(text, /Freshest CRL/);
      assert.match(text, new RegExp(`Serial Number: ${certs['crl-kc']!.serial.toUpperCase()}`));
      assert.match(text, /Key Compromise/);
      // The base alone knows nothing of these revocations; with the delta, openssl refuses them.
      assert.equal(verifyWithDelta('crl-kc', firstCrlPem).status, 0);
      const refused = verifyWithDelta('crl-kc', firstCrlPem, delta);
      assert.notEqual(refused.status, 0);
      assert.match(refused.stdout + refused.stderr, /certificate revoked/);
      assert.equal(verifyWithDelta('crl-good', firstCrlPem, delta).status, 0);
      const gnutls = run('certtool', [
        '--verify-crl',
        '--load-ca-certificate',
        writeTemp(dir, 'issuing.pem', issuingPem),
        '--infile',
        writeTemp(dir, 'd.pem', delta),
      ]);
      assert.equal(gnutls.status, 0, gnutls.stdout + gnutls.stderr);
      // Served: the newest delta, stored with the rebuilt full CRL, against it (its new base).
      const full = crlText(toPem((await crlDer()).body as Buffer, 'X509 CRL'));
      const current = await deltaPem();
      const currentText = crlText(current);
      assert.equal(crlNumberOf(currentText), crlNumberOf(full) + 1n);
      assert.match(currentText, new RegExp(`X509v3 Delta CRL Indicator: critical\\s*\\n\\s*${crlNumberOf(full)}\\b`));
      const pem = await api.get(`/pki/crl/${issuingId}-delta.pem`).expect(200);
      assert.equal(pem.text, current);
      assert.equal((await api.get(`/pki/crl/${issuingId}-delta.crl`).set('If-None-Match', pem.headers.etag as string)).status, 304);
    });

    it('a delta marks a certificate released from hold removeFromCRL, so a base that lists the hold plus the delta lets it in', async () => {
      await enroll('crl-hold2');
      await revoke('crl-hold2', { reason: 'certificateHold' });
      await svc.crls.settled();
      // The full CRL it writes (listing the hold) becomes the base.
      const { full } = await publisher().publish(issuingId);
      assert.equal(full.isBase, true);
      const base = toPem(full.der, 'X509 CRL');
      assert.match(verifyWithDelta('crl-hold2', base).stdout + verifyWithDelta('crl-hold2', base).stderr, /certificate revoked/);
      // The delta comes at least a second after its base: OpenSSL without -extended_crl would take the
      // newer delta for a complete CRL of its own (its get_crl_score skips deltas only in that mode).
      await new Promise((r) => setTimeout(r, 1100));
      await api.post(`/v1/certificates/${certs['crl-hold2']!.serial}/release`).set(auth('operator')).expect(200);
      // The delta the release returned with (the full CRL it makes be rebuilt may already be the newer base).
      const row = await svc
        .db('crls')
        .select('der')
        .where({ ca_id: issuingId, kind: 'delta', base_number: full.crlNumber.toString() })
        .orderBy('crl_number', 'desc')
        .first();
      const delta = toPem(Buffer.from(row!.der as Uint8Array), 'X509 CRL');
      const text = crlText(delta);
      assert.match(text, new RegExp(`X509v3 Delta CRL Indicator: critical\\s*\\n\\s*${full.crlNumber}\\b`));
      assert.match(text, new RegExp(`Serial Number: ${certs['crl-hold2']!.serial.toUpperCase()}[\\s\\S]*?Remove From CRL`));
      assert.doesNotMatch(text, new RegExp(certs['crl-kc']!.serial.toUpperCase()), 'revoked before the base: not in the delta');
      const ok = verifyWithDelta('crl-hold2', base, delta);
      assert.equal(ok.status, 0, ok.stdout + ok.stderr);
      assert.match(verifyWithDelta('crl-kc', base, delta).stdout + verifyWithDelta('crl-kc', base, delta).stderr, /certificate revoked/);
      assertProblem(await api.get('/pki/crl/ca_nobody-delta.crl'), 404);
    });

    it('serves conditional GETs: 304 while unchanged, a new CRL number after a change; a release leaves the CRL', async () => {
      await svc.crls.settled();
      const first = await crlDer();
      const etag = first.headers.etag as string;
      assert.ok(etag && first.headers['last-modified']);
      assert.match(String(first.headers['cache-control']), /no-cache/);
      assert.equal((await crlDer({ 'If-None-Match': etag })).status, 304);
      await api.post(`/v1/certificates/${certs['crl-hold']!.serial}/release`).set(auth('operator')).expect(200);
      await svc.crls.settled();
      const next = await crlDer({ 'If-None-Match': etag });
      assert.equal(next.status, 200);
      assert.notEqual(next.headers.etag, etag);
      const pem = toPem(next.body as Buffer, 'X509 CRL');
      // After the first CRL's delta: the release's delta, then the rebuilt full CRL.
      assert.equal(crlNumberOf(crlText(pem)), crlNumberOf(crlText(toPem(first.body as Buffer, 'X509 CRL'))) + 3n);
      assert.equal(verifyLeaf('crl-hold', pem).status, 0);
      const asPem = await api.get(`/pki/crl/${issuingId}.pem`).expect(200);
      assert.equal(asPem.text, pem);
    });

    it('drops entries once their certificate has expired', async () => {
      await revoke('crl-old', { reason: 'superseded' });
      await svc.crls.settled();
      assert.match(crlText(toPem((await crlDer()).body as Buffer, 'X509 CRL')), new RegExp(certs['crl-old']!.serial.toUpperCase()));
      // As if its validity had run out: the next CRL no longer carries it.
      await svc
        .db('certificates')
        .where({ serial: Buffer.from(certs['crl-old']!.serial, 'hex') })
        .update({ not_after: new Date(Date.now() - 1000) });
      await svc.crls.publish(issuingId);
      const text = crlText(toPem((await crlDer()).body as Buffer, 'X509 CRL'));
      assert.doesNotMatch(text, new RegExp(certs['crl-old']!.serial.toUpperCase()));
      assert.match(text, new RegExp(certs['crl-kc']!.serial.toUpperCase()));
    });

    it('numbers CRLs strictly upwards when publishes race, coalescing a burst', async () => {
      await svc.crls.settled();
      const before = (await svc.crls.current(issuingId))!.crlNumber;
      const rows = await Promise.all(Array.from({ length: 8 }, () => svc.crls.publish(issuingId)));
      const numbers = [...new Set(rows.map((r) => r.full.crlNumber))].sort((a, b) => (a < b ? -1 : 1));
      assert.ok(numbers.length >= 1 && numbers.length <= 2, `a burst of 8 became ${numbers.length} CRLs`);
      // Each publish numbers its full CRL and then its delta: the two kinds share the sequence.
      assert.equal(numbers[0], before + 2n);
      assert.ok(rows.every((r) => r.delta.crlNumber === r.full.crlNumber + 1n));
      const stored = (await svc.db('crls').where({ ca_id: issuingId }).orderBy('crl_number')).map((r: { crl_number: string }) =>
        BigInt(r.crl_number),
      );
      for (let i = 1; i < stored.length; i++) assert.equal(stored[i], stored[i - 1]! + 1n);
    });

    it('a repeated revoke republishes, so a call that died between its commit and its CRL is made good by the retry', async () => {
      await enroll('crl-late');
      // As if the process had stopped right after the commit: recorded, but no CRL published.
      const noPublisher = new Revocations(svc.db, new CertificateStore(), svc.devices, svc.audit, svc.clock);
      await noPublisher.revoke(certs['crl-late']!.serial as never, { reason: 'keyCompromise' }, { actor: 'test' });
      const serialRe = new RegExp(certs['crl-late']!.serial.toUpperCase());
      assert.doesNotMatch(crlText(toPem((await crlDer()).body as Buffer, 'X509 CRL')), serialRe);
      // A publisher that fails: the caller hears that the revocation is recorded and is asked to repeat.
      const failing = new Revocations(svc.db, new CertificateStore(), svc.devices, svc.audit, svc.clock, [
        {
          onRevocationChanged: async () => {
            throw new Error('signer offline');
          },
        },
      ]);
      await assert.rejects(
        failing.revoke(certs['crl-late']!.serial as never, { reason: 'keyCompromise' }, { actor: 'test' }),
        (e: { kind?: string; message: string }) => {
          assert.equal(e.kind, 'Unavailable');
          assert.match(e.message, /recorded.*repeat the call/);
          return true;
        },
      );
      const retry = await revoke('crl-late', { reason: 'keyCompromise' });
      assert.equal(retry.headers['revocation-changed'], 'false');
      await svc.crls.settled();
      assert.match(crlText(toPem((await crlDer()).body as Buffer, 'X509 CRL')), serialRe);
    });

    it('a revoke returns with the certificate in the delta CRL before the full CRL is rebuilt, which follows in the background', async () => {
      await svc.crls.settled();
      await enroll('crl-fast');
      // Revocations publishing through a publisher that rebuilds the full CRL an hour after a change (or when asked to settle).
      const later = publisher({ rebuildAfterMs: 3_600_000 });
      const revocations = new Revocations(svc.db, new CertificateStore(), svc.devices, svc.audit, svc.clock, [later]);
      const fullBefore = crlText(toPem((await crlDer()).body as Buffer, 'X509 CRL'));
      await revocations.revoke(certs['crl-fast']!.serial as never, { reason: 'keyCompromise' }, { actor: 'test' });
      const serialRe = new RegExp(`Serial Number: ${certs['crl-fast']!.serial.toUpperCase()}`);
      const delta = await deltaPem();
      const deltaText = crlText(delta);
      assert.match(deltaText, serialRe);
      assert.match(deltaText, new RegExp(`X509v3 Delta CRL Indicator: critical\\s*\\n\\s*${crlNumberOf(fullBefore)}\\b`));
      // Not in the full CRL yet: with it alone openssl lets the certificate in; with the delta it refuses it.
      const full = toPem((await crlDer()).body as Buffer, 'X509 CRL');
      assert.equal(crlNumberOf(crlText(full)), crlNumberOf(fullBefore));
      assert.doesNotMatch(crlText(full), serialRe);
      assert.equal(verifyLeaf('crl-fast', full).status, 0);
      assert.match(
        verifyWithDelta('crl-fast', full, delta).stdout + verifyWithDelta('crl-fast', full, delta).stderr,
        /certificate revoked/,
      );
      await later.settled();
      const rebuilt = toPem((await crlDer()).body as Buffer, 'X509 CRL');
      assert.ok(crlNumberOf(crlText(rebuilt)) > crlNumberOf(crlText(delta)));
      assert.match(crlText(rebuilt), serialRe);
      const r = verifyLeaf('crl-fast', rebuilt);
      assert.match(r.stdout + r.stderr, /certificate revoked/);
    });

    it("two publishers on one database (two replicas) never build a CA's full CRL at the same time", async () => {
      let building = 0;
      let most = 0;
      /** Counts full snapshots being read across both publishers, each held a little so that overlapping builds would show. */
      class Watched extends CrlStore {
        override async *snapshot(...args: Parameters<CrlStore['snapshot']>) {
          const full = 'full' in args[3];
          if (full) most = Math.max(most, ++building);
          try {
            yield* super.snapshot(...args);
            await new Promise((res) => setTimeout(res, 30));
          } finally {
            if (full) building--;
          }
        }
      }
      const replicas = [publisher({}, { store: new Watched() }), publisher({}, { store: new Watched() })];
      const before = (await svc.crls.current(issuingId))!.crlNumber;
      const pairs = await Promise.all(Array.from({ length: 8 }, (_, i) => replicas[i % 2]!.publish(issuingId)));
      assert.equal(most, 1);
      const fulls = [...new Set(pairs.map((p) => p.full.crlNumber))];
      assert.ok(fulls.length >= 2 && fulls.every((n) => n > before));
      assert.ok(pairs.every((p) => p.delta.crlNumber === p.full.crlNumber + 1n && p.delta.baseNumber === p.full.crlNumber));
    });

    it("a delta built on the last one's entries (reading only what changed since) lists what one built afresh does", async () => {
      await svc.crls.settled();
      for (const id of ['inc-kc', 'inc-hold', 'inc-sup']) await enroll(id);
      /** The delta's reads since: a store that records the clock value each delta snapshot starts after. */
      const since: bigint[] = [];
      const recording = new (class extends CrlStore {
        override snapshot(...a: Parameters<CrlStore['snapshot']>) {
          if ('sinceSeq' in a[3]) since.push(a[3].sinceSeq);
          return super.snapshot(...a);
        }
      })();
      // No background rebuild: every delta of this test is against the one base published now.
      const kept = publisher({ rebuildAfterMs: 3_600_000 }, { store: recording });
      const { full } = await kept.publish(issuingId);
      const changes = new Revocations(svc.db, new CertificateStore(), svc.devices, svc.audit, svc.clock, [svc.ocsp, kept]);
      const entriesOf = async (crl: { crlNumber: bigint }) =>
        new Map(
          new x509.X509Crl((await kept.der({ caId: issuingId, shard: 0, crlNumber: crl.crlNumber }))!).entries.map((e) => [
            e.serialNumber.toLowerCase().replace(/^0+/, ''),
            e.reason,
          ]),
        );
      const ctx = { actor: 'test' };
      const steps: [string, () => Promise<unknown>][] = [
        ['revoke', () => changes.revoke(parseSerial(certs['inc-kc']!.serial)!, { reason: 'keyCompromise' }, ctx)],
        ['hold', () => changes.revoke(parseSerial(certs['inc-hold']!.serial)!, { reason: 'certificateHold' }, ctx)],
        ['release', () => changes.release(parseSerial(certs['inc-hold']!.serial)!, ctx)],
        ['supersede', () => changes.revoke(parseSerial(certs['inc-sup']!.serial)!, { reason: 'superseded' }, ctx)],
      ];
      for (const [what, step] of steps) {
        await step();
        const incremental = (await kept.currentDelta(issuingId))!;
        assert.equal(incremental.baseNumber, full.crlNumber, `${what}: against the same base`);
        // Another process, with no entries of its own, publishes the delta from scratch.
        const fresh = publisher({ rebuildAfterMs: 3_600_000 });
        await fresh.onRevocationChanged({ caIds: [issuingId], serials: [] });
        const scratch = (await fresh.currentDelta(issuingId))!;
        await fresh.close();
        assert.ok(scratch.crlNumber > incremental.crlNumber);
        assert.deepEqual(await entriesOf(incremental), await entriesOf(scratch), `${what}: the same entries`);
      }
      const hold = certs['inc-hold']!.serial.toLowerCase().replace(/^0+/, '');
      const last = await entriesOf((await kept.currentDelta(issuingId))!);
      assert.equal(last.get(hold), x509.X509CrlReason.removeFromCRL);
      assert.equal(last.get(certs['inc-kc']!.serial.toLowerCase().replace(/^0+/, '')), x509.X509CrlReason.keyCompromise);
      // The entries kept between deltas own their bytes: a view into Node's pool would keep a slab of 8 KB per entry alive.
      const keptEntries = [...kept['deltaEntries'].values()].flatMap((d) => [...d.entries.values()]);
      assert.ok(keptEntries.length >= 3);
      for (const e of keptEntries) assert.equal(e.buffer.byteLength, e.length);
      // After the base's own delta, each delta read only what changed since the one before.
      assert.equal(since.length, steps.length + 1);
      // (the first change's read starts where the base's own delta's ended, which saw no change)
      assert.equal(since[1], since[0]);
      for (let i = 2; i < since.length; i++) assert.ok(since[i]! > since[i - 1]!, `read ${i} starts after read ${i - 1}`);
      await kept.close();
    });

    it('a full CRL build that fails leaves the previous CRL served, and is reported', async () => {
      await svc.crls.settled();
      const errors: unknown[] = [];
      // Every CRL is due for this one (refreshBeforeMs > validity), and its signer is offline.
      const broken = publisher({ refreshBeforeMs: svc.config.crlValidityMs * 2 }, { failSigning: true, onError: (e) => errors.push(e) });
      const before = (await svc.crls.current(issuingId))!;
      const served = await broken.current(issuingId);
      assert.equal(served!.crlNumber, before.crlNumber, 'a due CRL is served while its replacement is built');
      await broken.settled();
      assert.match(String(errors[0]), /signer offline/);
      assert.equal((await svc.crls.current(issuingId))!.crlNumber, before.crlNumber);
      const pem = toPem((await crlDer()).body as Buffer, 'X509 CRL');
      assert.equal(crlNumberOf(crlText(pem)), before.crlNumber);
      assert.equal(verifyLeaf('crl-good', pem).status, 0);
    });

    it("serves the bundle of every CA's CRL for Mosquitto, which openssl verifies a whole chain against", async () => {
      const res = await api.get('/pki/crl/bundle.pem').expect(200);
      const blocks = res.text.match(/-----BEGIN X509 CRL-----[\s\S]+?-----END X509 CRL-----\n/g)!;
      assert.equal(blocks.length, 2, "the root's CRL and the issuing CA's");
      assert.deepEqual(
        blocks.map((b) => /Only CA Certificates/.test(crlText(b))).sort(),
        [false, true],
        "one CRL covers CA certificates (the root's)",
      );
      const all = (id: string) =>
        run('openssl', [
          'verify',
          '-crl_check_all',
          '-CAfile',
          writeTemp(dir, 'root.pem', rootPem),
          '-untrusted',
          writeTemp(dir, 'issuing.pem', issuingPem),
          '-CRLfile',
          writeTemp(dir, 'bundle.pem', res.text),
          writeTemp(dir, 'leaf.pem', certs[id]!.pem),
        ]);
      const good = all('crl-good');
      assert.equal(good.status, 0, good.stdout + good.stderr);
      assert.match(all('crl-kc').stdout + all('crl-kc').stderr, /certificate revoked/);
      assert.equal((await api.get('/pki/crl/bundle.pem').set('If-None-Match', res.headers.etag as string)).status, 304);
      assertProblem(await api.get('/pki/crl/ca_nobody.crl'), 404);
      assertProblem(await api.get('/pki/crl/../../etc/passwd'), 404);
      assertProblem(await api.post('/pki/crl/bundle.pem'), 405);
    });
  });
}
