import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { malleateP256, p256Csr, type TestCsr } from '../helpers/csr.js';
import { ManualClock } from '../../src/shared/clock.js';
import { renewalSigningInput, sessionKeysSigningInput } from '../../src/enroll/device-certificate-auth.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

/**
 * Issue 23, item 7: a signed request is accepted once. An ECDSA signature stays valid with s
 * replaced by n − s (other bytes, same message): a guard keyed on the signature's bytes took the
 * malleated copy for a new request (a second renewal, a second session-key fetch).
 */
for (const target of dbTargets) {
  describe(`trust: signed device requests can't be replayed, on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    let keys: Record<Role, string>;
    const clock = new ManualClock(new Date());
    const der = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');

    before(async () => {
      ({ svc, api, keys } = await makeApiService(target, { clock }));
    });
    after(async () => {
      await svc?.dispose();
    });

    const enrolled = async (id: string): Promise<{ csr: TestCsr; certificate: string }> => {
      await api
        .post('/v1/devices')
        .set({ Authorization: `Bearer ${keys.provisioner}` })
        .send({ id, kind: 'client' })
        .expect(201);
      const tok = (
        await api
          .post('/v1/enrollment-tokens')
          .set({ Authorization: `Bearer ${keys.provisioner}` })
          .send({ deviceId: id })
          .expect(201)
      ).body.token as string;
      const csr = p256Csr(id);
      const body = (
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ csr: csr.pem })
          .expect(201)
      ).body;
      return { csr, certificate: body.certificate };
    };

    it('a renewal signature with s replaced by n − s is a replay: no second certificate', async () => {
      const d = await enrolled('sr-renew');
      const next = p256Csr('sr-renew');
      const signedAt = clock.now().toISOString();
      const signature = sign('sha256', renewalSigningInput(signedAt, next.der), d.csr.privateKey);
      const header = (sig: Buffer) =>
        `MQTT-CA-Renewal cert="${der(d.certificate).toString('base64')}", signed-at="${signedAt}", signature="${sig.toString('base64')}"`;
      await api
        .post('/v1/renew')
        .set({ Authorization: header(signature) })
        .send({ csr: next.pem })
        .expect(201);
      const malleated = malleateP256(signature);
      assert.notDeepEqual(malleated, signature);
      assertProblem(
        await api
          .post('/v1/renew')
          .set({ Authorization: header(malleated) })
          .send({ csr: next.pem }),
        401,
        /replay/,
      );
      assertProblem(
        await api
          .post('/v1/renew')
          .set({ Authorization: header(signature) })
          .send({ csr: next.pem }),
        401,
        /replay/,
      );
      const certs = (
        await api
          .get('/v1/certificates')
          .query({ deviceId: 'sr-renew' })
          .set({ Authorization: `Bearer ${keys.auditor}` })
          .expect(200)
      ).body.items;
      assert.equal(certs.length, 2, 'one enrollment and one renewal');
    });

    it('a session-key fetch signature with s replaced by n − s is a replay: no second fetch', async () => {
      const d = await enrolled('sr-keys');
      const signedAt = clock.now().toISOString();
      const signature = sign('sha256', sessionKeysSigningInput(signedAt), d.csr.privateKey);
      const header = (sig: Buffer) =>
        `MQTT-CA-SessionKeys cert="${der(d.certificate).toString('base64')}", signed-at="${signedAt}", signature="${sig.toString('base64')}"`;
      await api
        .get('/v1/session-keys')
        .set({ Authorization: header(signature) })
        .expect(200);
      assertProblem(await api.get('/v1/session-keys').set({ Authorization: header(malleateP256(signature)) }), 401, /replay/);
      // A new signature over a new time is a new request.
      clock.advance(1);
      const at2 = clock.now().toISOString();
      const fresh = sign('sha256', sessionKeysSigningInput(at2), d.csr.privateKey);
      await api
        .get('/v1/session-keys')
        .set({
          Authorization: `MQTT-CA-SessionKeys cert="${der(d.certificate).toString('base64')}", signed-at="${at2}", signature="${fresh.toString('base64')}"`,
        })
        .expect(200);
    });
  });
}
