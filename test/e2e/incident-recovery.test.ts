// Incidents under the two-person rule: a CA-compromise recovery proposed by one admin and run on
// a second admin's approval (successor CA, the compromised CA revoked on its parent's CRL, its
// devices renewed onto the successor in waves shown in the incident), and incident revocations
// above the bulk threshold held for approval, rejected or approved.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem, servedCrlText } from '../helpers/http.js';
import { p256Csr, signedRenewalAuth, type TestCsr } from '../helpers/csr.js';
import { opensslVerify, tempDir, writeTemp } from '../helpers/openssl.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

type Agent = ReturnType<typeof request>;

interface Step {
  id: string;
  seq: number;
  action: string;
  status: string;
  touchedCount: number;
  result: Record<string, unknown> | null;
  error: string | null;
  approvalId: string | null;
}

for (const target of dbTargets) {
  describe(`incidents under the two-person rule on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    let issuingId: string;
    let admin2: string;
    let operator2: string;
    const bearer = (key: string) => ({ Authorization: `Bearer ${key}` });
    const auth = (role: Role) => bearer(keys[role]);
    const devices = new Map<string, { serial: string; certificate: string; csr: TestCsr }>();

    const enroll = async (id: string, lot?: string) => {
      await api
        .post('/v1/devices')
        .set(auth('provisioner'))
        .send({ id, kind: 'client', ...(lot ? { lot } : {}) })
        .expect(201);
      const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId: id }).expect(201)).body.token as string;
      const csr = p256Csr(id);
      const body = (await api.post('/v1/enroll').set(bearer(tok)).send({ csr: csr.pem }).expect(201)).body as {
        serial: string;
        certificate: string;
      };
      devices.set(id, { ...body, csr });
      return body;
    };
    const open = async (body: Record<string, unknown>, key = keys.operator) =>
      (await api.post('/v1/incidents').set(bearer(key)).send(body).expect(201)).body.id as string;
    const act = (id: string, body: Record<string, unknown>, key = keys.operator) =>
      api.post(`/v1/incidents/${id}/actions`).set(bearer(key)).send(body);
    const incident = async (id: string) =>
      (await api.get(`/v1/incidents/${id}`).set(auth('auditor')).expect(200)).body as {
        timeline: Step[];
        recovery?: Record<string, unknown>;
      };
    const certificate = async (serial: string) =>
      (await api.get(`/v1/certificates/${serial}`).set(auth('auditor')).expect(200)).body as {
        status: string;
        caId: string;
        revocation?: { reason: string } | null;
      };
    const ca = async (id: string) =>
      (await api.get(`/v1/cas/${id}`).set(auth('auditor')).expect(200)).body as {
        id: string;
        status: string;
        certificate: string;
        parentId: string | null;
      };

    before(async () => {
      ({ svc, api, keys, issuingId } = await makeApiService(target, { env: { BULK_REVOKE_APPROVAL_THRESHOLD: '2' } }));
      admin2 = (await svc.apiKeys.create({ name: 'second admin', role: 'admin' }, { actor: 'test' })).key;
      operator2 = (await svc.apiKeys.create({ name: 'second operator', role: 'operator' }, { actor: 'test' })).key;
      for (const id of ['feeder-1', 'feeder-2', 'feeder-3']) await enroll(id, 'FEEDERS');
      await enroll('substation-gw');
    });
    after(async () => {
      await svc?.dispose();
    });

    it('holds an incident revocation above the threshold for a second person; a rejection ends the step', async () => {
      const id = await open({ kind: 'device-compromise', title: 'feeder lot firmware backdoor', targets: { lots: ['FEEDERS'] } });
      const small = (
        await act(id, { action: 'revoke-certificates', params: { devices: ['feeder-1', 'feeder-2'] }, dryRun: true }).expect(201)
      ).body as Step;
      assert.equal(small.touchedCount, 2);

      const proposed = (await act(id, { action: 'revoke-certificates' }).expect(201)).body as Step;
      assert.equal(proposed.status, 'proposed');
      assert.equal(proposed.touchedCount, 3);
      assert.ok(proposed.approvalId);
      for (const d of ['feeder-1', 'feeder-2', 'feeder-3'])
        assert.equal((await certificate(devices.get(d)!.serial)).status, 'issued', 'nothing revoked before approval');
      assertProblem(
        await api.post(`/v1/incidents/${id}/close`).set(auth('operator')).send({ summary: 'x' }),
        409,
        /awaiting approval|wait for them/,
      );
      // The proposer may not approve; a second operator rejects.
      assertProblem(await api.post(`/v1/approvals/${proposed.approvalId}/approve`).set(auth('operator')).send(), 403, /own proposal/);
      await api.post(`/v1/approvals/${proposed.approvalId}/reject`).set(bearer(operator2)).send({ reason: 'wrong lot' }).expect(200);
      const rejected = (await incident(id)).timeline.find((s) => s.id === proposed.id)!;
      assert.equal(rejected.status, 'rejected');
      assert.match(rejected.error!, /rejected: wrong lot/);

      // Proposed again and approved by the second operator: exactly the three revoked, the approver the actor.
      const again = (await act(id, { action: 'revoke-certificates' }).expect(201)).body as Step;
      const approved = (await api.post(`/v1/approvals/${again.approvalId}/approve`).set(bearer(operator2)).send().expect(200)).body as {
        status: string;
        result: { status: string };
      };
      assert.equal(approved.status, 'executed');
      assert.equal(approved.result.status, 'succeeded');
      const step = (await incident(id)).timeline.find((s) => s.id === again.id)!;
      assert.equal(step.status, 'succeeded');
      for (const d of ['feeder-1', 'feeder-2', 'feeder-3'])
        assert.equal((await certificate(devices.get(d)!.serial)).revocation?.reason, 'keyCompromise');
      assert.equal((await certificate(devices.get('substation-gw')!.serial)).status, 'issued');
      const entries = (
        await api
          .get('/v1/audit')
          .query({ action: 'certificate.revoked', targetId: devices.get('feeder-1')!.serial })
          .set(auth('auditor'))
          .expect(200)
      ).body.items as { actor: string }[];
      const operator2Id = (await svc.apiKeys.list()).find((k) => k.name === 'second operator')!.id;
      assert.equal(entries[0]!.actor, `api-key:${operator2Id}`);
      await api.post(`/v1/incidents/${id}/close`).set(auth('operator')).send({ summary: 'lot revoked' }).expect(200);
    });

    it('recovers from a CA compromise on two admins: successor CA, the old one revoked on its parent, devices renewed onto the successor', async () => {
      const id = await open({ kind: 'ca-compromise', title: 'issuing CA key exfiltrated', targets: { caId: issuingId } });
      assertProblem(await act(id, { action: 'revoke-certificates', params: { devices: ['substation-gw'] } }), 400, /not targets/);
      const dry = (await act(id, { action: 'recover-ca', dryRun: true }).expect(201)).body as Step;
      // Its still-valid certificates: the gateway's (the feeders are revoked already) and the OCSP responder's.
      assert.equal(dry.result?.validCertificates, 2);
      assert.ok((dry as unknown as { touched: { id: string }[] }).touched.some((t) => t.id === devices.get('substation-gw')!.serial));
      // An operator may not propose it; one admin proposes, the same admin may not approve.
      assertProblem(await act(id, { action: 'recover-ca' }), 403);
      const proposed = (await act(id, { action: 'recover-ca', params: { waveSize: 10, waveIntervalSeconds: 60 } }, keys.admin).expect(201))
        .body as Step;
      assert.equal(proposed.status, 'proposed');
      assert.equal((await ca(issuingId)).status, 'active');
      assertProblem(await api.post(`/v1/approvals/${proposed.approvalId}/approve`).set(auth('admin')).send(), 403, /own proposal/);
      assertProblem(await api.post(`/v1/approvals/${proposed.approvalId}/approve`).set(bearer(operator2)).send(), 403);
      const approved = (await api.post(`/v1/approvals/${proposed.approvalId}/approve`).set(bearer(admin2)).send().expect(200)).body as {
        status: string;
      };
      assert.equal(approved.status, 'executed');

      const view = await incident(id);
      const step = view.timeline.find((s) => s.id === proposed.id)!;
      assert.equal(step.status, 'succeeded', step.error ?? '');
      const successorId = step.result!.successor as string;
      const old = await ca(issuingId);
      const successor = await ca(successorId);
      assert.equal(old.status, 'revoked');
      assert.equal(successor.parentId, old.parentId);
      assert.ok(view.recovery, 'the incident shows the recovery waves');
      assert.equal(view.recovery!.toCaId, successorId);
      assert.equal(view.recovery!.fromCaStatus, 'revoked');

      // The root's CRL lists the compromised CA with cACompromise (openssl reads it).
      const root = await ca(old.parentId!);
      await svc.crls.publish(root.id);
      const caSerial = step.result!.revokedSerial as string;
      assert.match(await servedCrlText(api, root.id), new RegExp(`Serial Number: ${caSerial.toUpperCase()}[\\s\\S]*?CA Compromise`));

      // New issuance comes from the successor; the gateway renews with its recorded certificate onto it.
      const gw = devices.get('substation-gw')!;
      const next = p256Csr('substation-gw');
      const renewed = (
        await api
          .post('/v1/renew')
          .set({ Authorization: signedRenewalAuth(gw.certificate, gw.csr.privateKey, new Date().toISOString(), next.der) })
          .send({ csr: next.pem })
          .expect(201)
      ).body as { certificate: string; caId: string };
      assert.equal(renewed.caId, successorId);
      const ok = opensslVerify(root.certificate, [successor.certificate], renewed.certificate);
      assert.equal(ok.status, 0, ok.stderr);
      // openssl, checking the root's CRL, refuses the compromised CA itself: every chain through it fails.
      const crlFile = writeTemp(tempDir(), 'root-crl.pem', (await api.get(`/pki/crl/${root.id}.pem`).expect(200)).text);
      const refused = opensslVerify(root.certificate, [], old.certificate, ['-crl_check', '-CRLfile', crlFile]);
      assert.notEqual(refused.status, 0);
      assert.match(refused.stdout + refused.stderr, /revoked/);
    });
  });
}
