// CertificateStore.activeDeviceIds: the devices a broker that checks no revocation (NATS 2.9) may let in.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { bootstrap } from '../../src/bootstrap.js';
import type { Service } from '../../src/main.js';
import { CertificateStore } from '../../src/store/certificate-store.js';

const spki = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });

for (const target of dbTargets) {
  describe(`devices with an active certificate on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    const ctx = { actor: 'test' };
    const issue = async (deviceId: string) =>
      (await svc.issuance.issue({ profile: 'device', deviceId, subjectPublicKeyInfo: spki() }, ctx)) as { serial: string; notAfter?: Date };

    before(async () => {
      svc = await makeService(target);
      await bootstrap(svc);
    });
    after(async () => svc?.dispose());

    it('lists each device with an issued certificate within its validity once; revoked and held ones leave, a second certificate keeps its device', async () => {
      const store = new CertificateStore();
      await issue('act-1');
      await issue('act-1'); // two certificates, one device
      const revoked = await issue('act-2');
      const held = await issue('act-3');
      const twice = await issue('act-4');
      await issue('act-4');
      await svc.issuance.issue({ profile: 'broker', dnsNames: ['b.example'], subjectPublicKeyInfo: spki() }, ctx);
      await svc.revocations.revoke(revoked.serial as never, { reason: 'superseded' }, ctx);
      await svc.revocations.revoke(held.serial as never, { reason: 'certificateHold' }, ctx);
      await svc.revocations.revoke(twice.serial as never, { reason: 'superseded' }, ctx);
      const now = new Date();
      assert.deepEqual(await store.activeDeviceIds(svc.db, now), ['act-1', 'act-4']);
      // Past their notAfter none is active; before their notBefore neither.
      assert.deepEqual(await store.activeDeviceIds(svc.db, new Date(now.getTime() + 20 * 365 * 86_400_000)), []);
      assert.deepEqual(await store.activeDeviceIds(svc.db, new Date(now.getTime() - 86_400_000)), []);
    });
  });
}
