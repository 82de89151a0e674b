import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import { enrollWithDeviceToken } from '../helpers/enroll.js';

/**
 * Decommissioning a device takes its certificates out of trust: before, the device's record
 * said decommissioned while OCSP and the CRLs still said good, so a broker let a retired (or
 * resold, or scrapped-and-stolen) meter in until its certificate expired.
 */
for (const target of dbTargets) {
  describe(`decommissioning a device on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    const keys = {} as Record<Role, string>;
    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const enroll = async (deviceId: string): Promise<string> => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: deviceId, kind: 'client' }).expect(201);
      return enrollWithDeviceToken(api, keys.admin, deviceId);
    };
    const ocsp = async (serial: string) =>
      (await api.get(`/v1/certificates/${serial}/ocsp`).set(auth('auditor')).expect(200)).body as {
        certStatus: string;
        reason: string | null;
      };

    before(async () => {
      const made = await makeApiService(target);
      ({ svc, api } = made);
      Object.assign(keys, made.keys);
    });
    after(async () => svc?.dispose());

    it('revokes the device’s certificates (cessationOfOperation, in OCSP before it answers), then decommissions it; a repeat changes nothing', async () => {
      const serial = await enroll('retired-1');
      const other = await enroll('kept-1');
      assert.equal((await ocsp(serial)).certStatus, 'good');

      const res = await api.post('/v1/devices/retired-1/decommission').set(auth('operator')).expect(200);
      assert.equal(res.body.status, 'decommissioned');
      const cert = (await api.get(`/v1/certificates/${serial}`).set(auth('auditor')).expect(200)).body;
      assert.equal(cert.status, 'revoked');
      assert.equal(cert.revocation.reason, 'cessationOfOperation');
      const answer = await ocsp(serial);
      assert.deepEqual([answer.certStatus, answer.reason], ['revoked', 'cessationOfOperation']);
      assert.equal((await ocsp(other)).certStatus, 'good', 'another device is left alone');

      const again = await api.post('/v1/devices/retired-1/decommission').set(auth('operator')).expect(200);
      assert.equal(again.body.status, 'decommissioned');
      const revokedEntries = await svc.db('audit_log').where({ action: 'certificate.revoked', target_id: serial }).count({ n: 'seq' });
      assert.equal(Number(revokedEntries[0]!.n), 1, 'revoked once');
    });

    it('answers 404 for an unknown device and revokes nothing; other roles are refused', async () => {
      const res = await api.post('/v1/devices/nobody-here/decommission').set(auth('operator')).expect(404);
      assert.match(res.headers['content-type'] ?? '', /problem\+json/);
      const serial = await enroll('retired-2');
      await api.post('/v1/devices/retired-2/decommission').set(auth('provisioner')).expect(403);
      await api.post('/v1/devices/retired-2/decommission').set(auth('auditor')).expect(403);
      assert.equal((await ocsp(serial)).certStatus, 'good');
    });
  });
}
