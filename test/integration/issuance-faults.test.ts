import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { Issuance, type IssuerSource } from '../../src/ca/issuance.js';
import { CertificateStore } from '../../src/store/certificate-store.js';
import { PkiUrls } from '../../src/ca/urls.js';
import type { IssuerContext } from '../../src/ca/hierarchy.js';
import type { Service } from '../../src/main.js';
import { serialFromBytes } from '../../src/shared/ids.js';

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
    before(async () => {
      svc = await makeService(target);
      caId = (await svc.hierarchy.createRoot({ name: 'fault root', keyAlgorithm: 'EC-P256' }, ctx)).id;
    });
    after(async () => svc?.dispose());

    it('a signing failure after the serial is recorded leaves the intent marked failed, no certificate, and a clean retry', async () => {
      const broken = new Issuance(svc.db, faultySource(svc, 'throws'), new CertificateStore(), svc.audit, new PkiUrls('http://x'), svc.clock);
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
      assert.notEqual(serialFromBytes(after1[0].serial), ok.serial, 'a failed serial is never reused');
    });

    it('batches signed while a commit runs are committed together: every certificate recorded once, every audit entry chained', async () => {
      // Batches of 4, three in flight. The first commit is held (before its transaction, so the
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
          return { ...real, signer: { ...real.signer, sign: async (d: Uint8Array) => {
            const sig = await real.signer.sign(d);
            if (++signed === 12) othersSigned();
            return sig;
          } } };
        },
      };
      let transactions = 0;
      const gatedDb = new Proxy(svc.db, {
        get(target, prop, receiver) {
          if (prop !== 'transaction') return Reflect.get(target, prop, receiver);
          return async (...args: Parameters<typeof target.transaction>) => {
            if (transactions++ === 0) await twoMoreBatchesSigned;
            return (target.transaction as (...a: unknown[]) => unknown)(...args);
          };
        },
      });
      const commits: number[] = [];
      const store = new CertificateStore();
      const counting = Object.assign(Object.create(store) as CertificateStore, {
        completeIssued: (tx: Parameters<CertificateStore['completeIssued']>[0], items: Parameters<CertificateStore['completeIssued']>[1], at: Date) => {
          commits.push(items.length);
          return store.completeIssued(tx, items, at);
        },
      });
      const issuance = new Issuance(gatedDb, counted, counting, svc.audit, new PkiUrls('http://x'), svc.clock, { maxBatch: 4 });
      const issued = await Promise.all(
        Array.from({ length: 80 }, (_, n) => issuance.issue({ profile: 'device', caId, deviceId: `dev-m${n}`, subjectPublicKeyInfo: p256() }, ctx)),
      );
      assert.equal(new Set(issued.map((c) => c.serial)).size, 80);
      assert.equal(commits.reduce((a, b) => a + b, 0), 80);
      assert.ok(commits[0]! > 4 || commits[1]! > 4, `several batches left in one commit (commits: ${commits.join(',')})`);
      const recorded = await svc.db('certificates').whereIn('device_id', issued.map((_, n) => `dev-m${n}`)).select('status', 'serial');
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
      for (let i = 0; i < 200 && !(await rows(svc, caId)).some((r) => r.status === 'pending'); i++) await new Promise((r) => setTimeout(r, 10));
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
      assert.deepEqual(audit.items.map((e) => e.targetId), closed);

      const retry = await svc.issuance.issue({ profile: 'device', caId, deviceId: 'dev-f2', subjectPublicKeyInfo: p256() }, ctx);
      const all = await rows(svc, caId);
      assert.equal(all.filter((r) => r.status === 'pending').length, 0);
      assert.ok(all.filter((r) => r.status === 'issued').every((r) => r.der !== null));
      assert.ok(all.some((r) => serialFromBytes(r.serial) === retry.serial && r.status === 'issued'));
      assert.equal((await svc.audit.verify(svc.db)).ok, true);
    });
  });
}
