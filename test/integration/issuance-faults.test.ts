import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { Issuance, type IssuerSource } from '../../src/ca/issuance.js';
import { CertificateStore } from '../../src/store/certificate-store.js';
import { PkiUrls } from '../../src/ca/urls.js';
import type { IssuerContext } from '../../src/ca/hierarchy.js';
import type { Service } from '../../src/main.js';
import { serialFromBytes } from '../../src/shared/ids.js';
import { AuditLog } from '../../src/audit/audit-log.js';
import { AuditStore } from '../../src/store/audit-store.js';
import { deriveKey, parseKek } from '../../src/ca/kek.js';

const ctx = { actor: 'test' };
const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });

/** The real issuer, with a signer that fails (or never returns) the way a dying HSM or process would. */
function faultySource(svc: Service, signer: 'throws' | 'hangs'): IssuerSource {
  return {
    defaultIssuerId: () => svc.hierarchy.defaultIssuerId(),
    async issuer(caId: string): Promise<IssuerContext> {
      const real = await svc.hierarchy.issuer(caId);
      return {
        ...real,
        signer: {
          ...real.signer,
          keyAlgorithm: real.signer.keyAlgorithm,
          signatureAlgorithm: real.signer.signatureAlgorithm,
          publicKey: real.signer.publicKey,
          sign: () => (signer === 'throws' ? Promise.reject(new Error('HSM unplugged')) : new Promise<Buffer>(() => undefined)),
          signMany: () => (signer === 'throws' ? Promise.reject(new Error('HSM unplugged')) : new Promise<Buffer[]>(() => undefined)),
        },
      };
    },
  };
}

async function rows(svc: Service, caId: string) {
  return svc.db('certificates').select('serial', 'status', 'der', 'tbs_der', 'failure').where({ ca_id: caId });
}

for (const target of dbTargets) {
  describe(`issuance faults on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let caId: string;
    const kek = randomBytes(32).toString('base64');
    before(async () => {
      svc = await makeService(target, { env: { MQTT_CA_KEK: kek } });
      const root = await svc.hierarchy.createRoot({ name: 'fault root', keyAlgorithm: 'EC-P256' }, ctx);
      caId = (await svc.hierarchy.createIntermediate({ name: 'fault issuing', parentId: root.id, keyAlgorithm: 'EC-P256' }, ctx)).id;
    });
    after(async () => svc?.dispose());

    it('a signing failure after the serial is recorded leaves the intent marked failed, no certificate, and a clean retry', async () => {
      const broken = new Issuance(
        svc.db,
        faultySource(svc, 'throws'),
        new CertificateStore(),
        svc.audit,
        new PkiUrls('http://x'),
        svc.clock,
      );
      await assert.rejects(broken.issue({ profile: 'device', caId, deviceId: 'dev-f1', subjectPublicKeyInfo: p256() }, ctx));
      const after1 = await rows(svc, caId);
      assert.equal(after1.length, 1, 'the serial was recorded before signing');
      assert.equal(after1[0].status, 'failed');
      assert.equal(after1[0].der, null, 'no signed certificate exists for it');
      assert.ok(after1[0].tbs_der.length > 100, 'the intended certificate is on record');
      assert.match(after1[0].failure, /HSM unplugged/);
      assert.equal((await svc.audit.list({ limit: 10, action: 'certificate.issued' })).items.length, 0);

      const ok = await svc.issuance.issue({ profile: 'device', caId, deviceId: 'dev-f1', subjectPublicKeyInfo: p256() }, ctx);
      const after2 = await rows(svc, caId);
      assert.equal(after2.length, 2);
      const issued = after2.filter((r) => r.status === 'issued');
      assert.equal(issued.length, 1);
      assert.equal(serialFromBytes(issued[0].serial), ok.serial);
      assert.ok(issued[0].der.length > 100);
      assert.equal(issued[0].tbs_der, null, 'once signed, the DER (which holds it) replaces the intended certificate');
      assert.ok(after2.find((r) => r.status === 'failed').tbs_der.length > 100, 'the failed intent keeps its record');
      assert.notEqual(serialFromBytes(after1[0].serial), ok.serial, 'a failed serial is never reused');
    });

    it('batches signed while a commit runs are committed together: every certificate recorded once, every audit entry chained', async () => {
      // Batches of 4, three in flight. The first commit is held (before its statement, so the
      // database stays free) until all three are signed. Whichever batches it did not take queue
      // behind it and leave together, so of the first two commits one carries several batches (which
      // one depends on how many were signed before the first commit began).
      let signed = 0;
      let othersSigned!: () => void;
      const twoMoreBatchesSigned = new Promise<void>((r) => (othersSigned = r));
      const counted: IssuerSource = {
        defaultIssuerId: () => svc.hierarchy.defaultIssuerId(),
        async issuer(id: string) {
          const real = await svc.hierarchy.issuer(id);
          const signer = Object.assign(Object.create(real.signer) as typeof real.signer, {
            signMany: async (d: Uint8Array[]) => {
              const sigs = await real.signer.signMany(d);
              if ((signed += d.length) >= 12) othersSigned();
              return sigs;
            },
          });
          return { ...real, signer };
        },
      };
      const commits: number[] = [];
      const store = new CertificateStore();
      const counting = Object.assign(Object.create(store) as CertificateStore, {
        completeWithRegistration: async (
          db: Parameters<CertificateStore['completeWithRegistration']>[0],
          c: Parameters<CertificateStore['completeWithRegistration']>[1],
        ) => {
          if (commits.length === 0) await twoMoreBatchesSigned;
          commits.push(c.certificates.length);
          return store.completeWithRegistration(db, c);
        },
      });
      const issuance = new Issuance(svc.db, counted, counting, svc.audit, new PkiUrls('http://x'), svc.clock, { maxBatch: 4 });
      const issued = await Promise.all(
        Array.from({ length: 80 }, (_, n) =>
          issuance.issue({ profile: 'device', caId, deviceId: `dev-m${n}`, subjectPublicKeyInfo: p256() }, ctx),
        ),
      );
      assert.equal(new Set(issued.map((c) => c.serial)).size, 80);
      assert.equal(
        commits.reduce((a, b) => a + b, 0),
        80,
      );
      assert.ok(commits[0]! > 4 || commits[1]! > 4, `several batches left in one commit (commits: ${commits.join(',')})`);
      const recorded = await svc
        .db('certificates')
        .whereIn(
          'device_id',
          issued.map((_, n) => `dev-m${n}`),
        )
        .select('status', 'serial');
      assert.equal(recorded.length, 80);
      assert.ok(recorded.every((r) => r.status === 'issued'));
      for (const c of issued.slice(0, 80)) {
        assert.equal((await svc.audit.list({ limit: 5, action: 'certificate.issued', targetId: c.serial })).items.length, 1);
      }
      assert.equal((await svc.audit.verify(svc.db)).ok, true);
    });

    it('a process that dies between "serial recorded" and "signed" leaves a pending intent that the next start closes; the store stays consistent', async () => {
      const dying = new Issuance(svc.db, faultySource(svc, 'hangs'), new CertificateStore(), svc.audit, new PkiUrls('http://x'), svc.clock);
      void dying.issue({ profile: 'device', caId, deviceId: 'dev-f2', subjectPublicKeyInfo: p256() }, ctx);
      // Wait until the intent is on record: from here on the "process" never signs.
      for (let i = 0; i < 200 && !(await rows(svc, caId)).some((r) => r.status === 'pending'); i++)
        await new Promise((r) => setTimeout(r, 10));
      const pending = (await rows(svc, caId)).filter((r) => r.status === 'pending');
      assert.equal(pending.length, 1);
      assert.equal(pending[0].der, null);

      // A live process's young intent is left alone; an old one is closed.
      assert.deepEqual(await svc.issuance.failAbandoned(60_000, { actor: 'system:recovery' }), []);
      const closed = await svc.issuance.failAbandoned(0, { actor: 'system:recovery' });
      assert.deepEqual(closed, [serialFromBytes(pending[0].serial)]);
      const now = (await rows(svc, caId)).find((r) => serialFromBytes(r.serial) === closed[0]);
      assert.equal(now.status, 'failed');
      assert.match(now.failure, /abandoned/);
      const audit = await svc.audit.list({ limit: 10, action: 'certificate.abandoned' });
      assert.deepEqual(
        audit.items.map((e) => e.targetId),
        closed,
      );

      const retry = await svc.issuance.issue({ profile: 'device', caId, deviceId: 'dev-f2', subjectPublicKeyInfo: p256() }, ctx);
      const all = await rows(svc, caId);
      assert.equal(all.filter((r) => r.status === 'pending').length, 0);
      assert.ok(all.filter((r) => r.status === 'issued').every((r) => r.der !== null));
      assert.ok(all.some((r) => serialFromBytes(r.serial) === retry.serial && r.status === 'issued'));
      assert.equal((await svc.audit.verify(svc.db)).ok, true);
    });

    describe('the one-statement commit and its fallback', () => {
      const register = (id: string) => svc.devices.register({ id, kind: 'client' }, ctx);
      const issue = (deviceId: string, deviceStatus?: string) =>
        svc.issuance.issue({ profile: 'device', caId, deviceId, subjectPublicKeyInfo: p256() }, ctx, {
          registration: Promise.resolve({ deviceStatus }),
        });
      const deviceRow = (id: string) => svc.db('devices').where({ id }).first();
      const activations = async (id: string) =>
        (await svc.audit.list({ limit: 10, action: 'device.activated', targetId: id })).items.length;

      it("records a registered device's first certificate, its activation and both audit entries, whether registration saw its status right or not", async () => {
        for (const [id, seen] of [
          ['dev-one-a', 'registered'],
          ['dev-one-b', 'active'],
          ['dev-one-c', undefined],
        ] as const) {
          await register(id);
          const cert = await issue(id, seen);
          const d = await deviceRow(id);
          assert.equal(d.status, 'active', id);
          assert.equal(serialFromBytes(d.current_serial), cert.serial, id);
          assert.ok(d.activated_at, id);
          assert.equal(await activations(id), 1, `${id}: one device.activated entry`);
          const issuedEntries = await svc.audit.list({ limit: 10, action: 'certificate.issued', targetId: cert.serial });
          assert.equal(issuedEntries.items.length, 1);
        }
        // An active device renewing, first seen as registered (a stale read): no second activation.
        const again = await issue('dev-one-a', 'registered');
        assert.equal(serialFromBytes((await deviceRow('dev-one-a')).current_serial), again.serial);
        assert.equal(await activations('dev-one-a'), 1);
        assert.equal((await svc.audit.verify(svc.db)).ok, true);
      });

      it('leaves a device suspended meanwhile as it is (the certificate is still recorded), and takes two enrollments of one device in one batch', async () => {
        await register('dev-one-s');
        await svc.db('devices').where({ id: 'dev-one-s' }).update({ status: 'suspended' });
        const cert = await issue('dev-one-s', 'registered');
        const d = await deviceRow('dev-one-s');
        assert.equal(d.status, 'suspended');
        assert.equal(d.current_serial, null);
        const row = await svc
          .db('certificates')
          .where({ serial: Buffer.from(cert.serial, 'hex') })
          .first();
        assert.equal(row.status, 'issued');
        assert.equal(
          row.tbs_der,
          null,
          'the general commit path (taken here: the plan no longer held) clears the intended certificate too',
        );
        assert.equal(await activations('dev-one-s'), 0);

        await register('dev-one-twice');
        const [a, b] = await Promise.all([issue('dev-one-twice', 'registered'), issue('dev-one-twice', 'registered')]);
        const current = serialFromBytes((await deviceRow('dev-one-twice')).current_serial);
        assert.ok([a.serial, b.serial].includes(current));
        assert.equal(await activations('dev-one-twice'), 1, 'activated once');
        assert.equal((await svc.audit.verify(svc.db)).ok, true);
      });

      it('fails alone a request whose registration check fails while its intent is recorded, leaving no row; the rest of its batch is issued', async () => {
        for (const id of ['dev-chk-ok1', 'dev-chk-no', 'dev-chk-ok2']) await register(id);
        const refusal = new Error('the token is used up');
        const check = Promise.reject(refusal);
        const results = await Promise.allSettled([
          issue('dev-chk-ok1', 'registered'),
          svc.issuance.issue({ profile: 'device', caId, deviceId: 'dev-chk-no', subjectPublicKeyInfo: p256() }, ctx, {
            registration: check,
          }),
          issue('dev-chk-ok2', 'registered'),
        ]);
        assert.deepEqual(
          results.map((r) => r.status),
          ['fulfilled', 'rejected', 'fulfilled'],
        );
        assert.equal((results[1] as PromiseRejectedResult).reason, refusal, "the check's own error");
        assert.equal((await svc.db('certificates').where({ device_id: 'dev-chk-no' })).length, 0, 'its intent is gone: nothing was signed');
        assert.equal((await deviceRow('dev-chk-no')).status, 'registered');
        for (const id of ['dev-chk-ok1', 'dev-chk-ok2']) assert.equal((await deviceRow(id)).status, 'active');
        assert.equal((await svc.audit.verify(svc.db)).ok, true);
      });

      it('chains on the head another process moved meanwhile, and the log still verifies', async () => {
        // Another instance of the service (same chain key) appends between two of this one's commits.
        const other = new AuditLog(new AuditStore(svc.db), deriveKey(parseKek(kek, 'test'), 'audit chain'), svc.clock);
        await register('dev-one-h1');
        await register('dev-one-h2');
        await issue('dev-one-h1', 'registered');
        await other.append(svc.db, [{ actor: 'other-process', action: 'test.appended', targetType: 'test', targetId: 'x' }]);
        const cert = await issue('dev-one-h2', 'registered');
        assert.equal(serialFromBytes((await deviceRow('dev-one-h2')).current_serial), cert.serial);
        const tail = (await svc.audit.list({ limit: 3 })).items.map((e) => e.action);
        assert.deepEqual(tail, ['device.activated', 'certificate.issued', 'test.appended']);
        assert.equal((await svc.audit.verify(svc.db)).ok, true);
      });
    });
  });
}
