// Issue #23, items 3 and 5: no route, incident action or approval hands a role what the role
// cannot get directly, and two people means two people. Each test reproduces an attack that
// worked before the fix, then shows it refused and the legitimate path still open.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import { ManualClock } from '../../src/shared/clock.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

type Agent = ReturnType<typeof request>;

interface Step {
  id: string;
  status: string;
  approvalId: string | null;
  actor: string;
  secrets?: { tokens: { deviceId: string; tokenId: string; token: string }[] };
}

const keyIdOf = (key: string) => /^mqca_(ak_[0-9a-f]{20})_/.exec(key)![1]!;

for (const target of dbTargets) {
  describe(`trust boundaries on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    let rootId: string;
    // Moved by hand: "created after the proposal" is judged on it.
    const clock = new ManualClock(new Date());
    const auth = (key: string) => ({ Authorization: `Bearer ${key}` });
    const as = (role: Role) => auth(keys[role]);
    /** A key made outside any other key's line (as bootstrap, the CLI and ADMIN_API_KEY make them). */
    const rootKey = async (name: string, role: Role) => (await svc.apiKeys.create({ name, role }, { actor: 'cli:test' })).key;
    const enroll = async (deviceId: string, lot?: string) => {
      await api
        .post('/v1/devices')
        .set(as('provisioner'))
        .send({ id: deviceId, kind: 'client', ...(lot ? { lot } : {}) })
        .expect(201);
      const tok = (await api.post('/v1/enrollment-tokens').set(as('provisioner')).send({ deviceId }).expect(201)).body.token as string;
      return (
        await api
          .post('/v1/enroll')
          .set(auth(tok))
          .send({ csr: p256Csr(deviceId).pem })
          .expect(201)
      ).body as { serial: string };
    };
    const newCa = async (name: string) =>
      (await api.post('/v1/cas').set(as('admin')).send({ kind: 'intermediate', name, parentId: rootId, pathLen: 0 }).expect(201)).body as {
        id: string;
      };
    const proposeCaRevoke = async (caId: string, key: string) => {
      const res = await api.post(`/v1/cas/${caId}/revoke`).set(auth(key)).send({ reason: 'cACompromise' });
      assert.equal(res.status, 202, res.text);
      return res.body as { id: string };
    };
    const approve = (id: string, key: string) => api.post(`/v1/approvals/${id}/approve`).set(auth(key));
    const approvalStatus = async (id: string) =>
      (await api.get(`/v1/approvals/${id}`).set(as('auditor')).expect(200)).body.status as string;

    before(async () => {
      ({ svc, api, keys } = await makeApiService(target, { clock, env: { BULK_REVOKE_APPROVAL_THRESHOLD: '1' } }));
      rootId = (await api.get('/v1/cas').set(as('auditor')).expect(200)).body.items.find((c: { kind: string }) => c.kind === 'root').id;
    });
    after(async () => svc?.dispose());

    it('an operator, refused device credentials, cannot get one through an incident reissue: it is proposed, and the provisioner who approves gets the token', async () => {
      await enroll('lost-1');
      // The operator may not make device credentials directly...
      assertProblem(await api.post('/v1/enrollment-tokens').set(as('operator')).send({ deviceId: 'lost-1' }), 403);
      assertProblem(
        await api
          .post('/v1/certificates')
          .set(as('operator'))
          .send({ profile: 'device', deviceId: 'lost-1', csr: p256Csr('lost-1').pem }),
        403,
      );
      // ...and before the fix got one anyway: a lost-device incident, then reissue, returned the device's enrollment token.
      const inc = (
        await api
          .post('/v1/incidents')
          .set(as('operator'))
          .send({ kind: 'lost-device', title: 'meter gone', targets: { devices: ['lost-1'] } })
          .expect(201)
      ).body as { id: string };
      const tokensBefore = (await api.get('/v1/enrollment-tokens').query({ deviceId: 'lost-1' }).set(as('auditor')).expect(200)).body.items
        .length as number;
      const asked = (await api.post(`/v1/incidents/${inc.id}/actions`).set(as('operator')).send({ action: 'reissue' }).expect(201))
        .body as Step;
      assert.equal(asked.secrets, undefined, 'the operator was handed enrollment tokens for lost-1');
      assert.equal(asked.status, 'proposed');
      assert.ok(asked.approvalId);
      assert.equal(
        (await api.get('/v1/enrollment-tokens').query({ deviceId: 'lost-1' }).set(as('auditor')).expect(200)).body.items.length,
        tokensBefore,
        'no token exists until approved',
      );
      // Nor may the operator (or another operator, or an auditor) approve it: it takes a role that makes device credentials.
      const otherOperator = await rootKey('night shift', 'operator');
      for (const key of [keys.operator, otherOperator, keys.auditor])
        assertProblem(await approve(asked.approvalId!, key), 403, /may not approve incident.reissue/);
      const proposal = (await api.get(`/v1/approvals/${asked.approvalId}`).set(as('operator')).expect(200)).body;
      assert.equal(proposal.action, 'incident.reissue');

      const approved = await approve(asked.approvalId!, keys.provisioner).expect(200);
      assert.equal(approved.body.status, 'executed', JSON.stringify(approved.body));
      const tokens = approved.body.secrets.tokens as { deviceId: string; token: string }[];
      assert.deepEqual(
        tokens.map((t) => t.deviceId),
        ['lost-1'],
      );
      // Never stored: not on the proposal, not on the timeline.
      assert.ok(
        !JSON.stringify((await api.get(`/v1/approvals/${asked.approvalId}`).set(as('operator')).expect(200)).body).includes(
          tokens[0]!.token,
        ),
      );
      const incident = (await api.get(`/v1/incidents/${inc.id}`).set(as('operator')).expect(200)).body;
      assert.ok(!JSON.stringify(incident).includes(tokens[0]!.token));
      const step = incident.timeline.find((s: Step) => s.id === asked.id) as Step;
      assert.equal(step.status, 'succeeded');
      // The token is the approver's doing.
      const made = (await api.get('/v1/enrollment-tokens').query({ deviceId: 'lost-1' }).set(as('auditor')).expect(200)).body.items as {
        id: string;
        createdBy: string;
      }[];
      assert.equal(made.find((t) => t.id === approved.body.secrets.tokens[0].tokenId)?.createdBy, `api-key:${keyIdOf(keys.provisioner)}`);
      // The token the provisioner got is the device's.
      await api
        .post('/v1/enroll')
        .set(auth(tokens[0]!.token))
        .send({ csr: p256Csr('lost-1').pem })
        .expect(201);
      // An admin (who may make tokens) reissues directly, as before.
      const direct = (await api.post(`/v1/incidents/${inc.id}/actions`).set(as('admin')).send({ action: 'reissue' }).expect(201))
        .body as Step;
      assert.equal(direct.status, 'succeeded');
      assert.equal(direct.secrets?.tokens.length, 1);
    });

    it("an operator cannot take over a client device with a broker certificate naming it, nor give a broker it holds a channel's key", async () => {
      const before = await enroll('meter-x');
      // Before the fix this was 201: the broker certificate became meter-x's current certificate, and fetched its session keys.
      const res = await api
        .post('/v1/certificates')
        .set(as('operator'))
        .send({ profile: 'broker', deviceId: 'meter-x', dnsNames: ['evil.example'], csr: p256Csr('meter-x').pem });
      assertProblem(res, 403, /device meter-x is a client: it takes no broker certificate/);
      assert.equal((await api.get('/v1/devices/meter-x').set(as('auditor')).expect(200)).body.currentSerial, before.serial);
      // Nor for anyone the other way round: a broker gets no device certificate.
      await api.post('/v1/devices').set(as('provisioner')).send({ id: 'broker-x', kind: 'broker' }).expect(201);
      assertProblem(
        await api
          .post('/v1/certificates')
          .set(as('provisioner'))
          .send({ profile: 'device', deviceId: 'broker-x', csr: p256Csr('broker-x').pem }),
        403,
        /broker-x is a broker/,
      );
      // Broker certificates for brokers, and unbound ones, as before.
      await api
        .post('/v1/certificates')
        .set(as('operator'))
        .send({ profile: 'broker', deviceId: 'broker-x', dnsNames: ['broker-x.example'], csr: p256Csr('broker-x').pem })
        .expect(201);
      await api
        .post('/v1/certificates')
        .set(as('operator'))
        .send({ profile: 'broker', dnsNames: ['mqtt.example'], csr: p256Csr().pem })
        .expect(201);
      // Holding broker-x's certificate, the operator cannot make broker-x a channel member: before the fix it then fetched the channel's key.
      await enroll('meter-y');
      assertProblem(
        await api
          .post('/v1/channels')
          .set(as('operator'))
          .send({ name: 'feeder-x', topicTree: 'feeder/x/#', members: ['meter-y', 'broker-x'] }),
        400,
        /brokers cannot join a channel .*: broker-x/,
      );
      await api
        .post('/v1/channels')
        .set(as('operator'))
        .send({ name: 'feeder-x', topicTree: 'feeder/x/#', members: ['meter-y'] })
        .expect(201);
      assertProblem(
        await api
          .post('/v1/channels/feeder-x/members')
          .set(as('operator'))
          .send({ deviceIds: ['broker-x'] }),
        400,
        /brokers cannot join a channel/,
      );
    });

    it('revoke-credentials revokes no key of a role above the actor, and never the last active admin key (nor does DELETE or the CLI)', async () => {
      const inc = (
        await api.post('/v1/incidents').set(as('operator')).send({ kind: 'credential-leak', title: 'keys in a pastebin' }).expect(201)
      ).body as { id: string };
      const adminId = keyIdOf(keys.admin);
      const revokeKeys = (apiKeyIds: string[], role: Role | string, dryRun = false) =>
        api
          .post(`/v1/incidents/${inc.id}/actions`)
          .set(role in keys ? as(role as Role) : auth(role))
          .send({ action: 'revoke-credentials', dryRun, params: { apiKeyIds, enrollmentTokens: false, sessionKeys: false } });
      // Before the fix an operator revoked the (only) admin key this way, locking every admin out.
      assertProblem(await revokeKeys([adminId], 'operator', true), 403, /operator role may not revoke keys of a role above it/);
      assertProblem(await revokeKeys([adminId], 'operator'), 403, /operator role may not revoke keys of a role above it/);
      await api.get('/v1/api-keys').set(as('admin')).expect(200);
      // The last active admin key: not by the incident action, not by DELETE, not by the CLI's path.
      assertProblem(await revokeKeys([adminId], 'admin'), 409, /last active admin key/);
      assertProblem(await api.delete(`/v1/api-keys/${adminId}`).set(as('admin')), 409, /last active admin key/);
      await assert.rejects(svc.apiKeys.revoke(adminId, { actor: 'cli:test', role: 'admin' }), { kind: 'Conflict' });
      await api.get('/v1/api-keys').set(as('admin')).expect(200);
      // Peers are fair game: an operator answering a leak revokes a leaked provisioner key.
      const leaked = await rootKey('leaked provisioner', 'provisioner');
      const done = (await revokeKeys([keyIdOf(leaked)], 'operator').expect(201)).body as Step;
      assert.equal(done.status, 'succeeded');
      assertProblem(await api.get('/v1/devices').set(auth(leaked)), 401);
      // With a second admin, one admin key may go; both at once may not (all or nothing).
      const second = await rootKey('deputy admin', 'admin');
      assertProblem(await revokeKeys([adminId, keyIdOf(second)], 'admin'), 409, /last active admin key/);
      await api.get('/v1/api-keys').set(auth(second)).expect(200);
      await api.get('/v1/api-keys').set(as('admin')).expect(200);
      await api
        .delete(`/v1/api-keys/${keyIdOf(second)}`)
        .set(as('admin'))
        .expect(204);
      assertProblem(await api.get('/v1/api-keys').set(auth(second)), 401);
    });

    it("refuses an approver whose key name is the proposer's under Unicode look-alikes, invisible characters or another hyphen", async () => {
      for (const d of ['look-1', 'look-2']) await enroll(d, 'LOT-LOOK');
      const proposer = await rootKey('ops-lead', 'operator');
      const held = await api
        .post('/v1/revocations')
        .set(auth(proposer))
        .send({ selector: { lot: 'LOT-LOOK' }, reason: 'keyCompromise' });
      assert.equal(held.status, 202, held.text);
      const disguises = {
        'zero-width space': 'ops-\u200blead',
        'Cyrillic o': '\u043eps-lead',
        'Unicode hyphen': 'ops\u2010lead',
        'non-breaking hyphen and capitals': 'OPS\u2011LEAD',
        'fullwidth letters': '\uff4fps-lead',
        'Cyrillic e and a soft hyphen': 'ops-l\u0435\u00adad',
      };
      for (const [what, name] of Object.entries(disguises)) {
        assertProblem(await approve(held.body.id, await rootKey(name, 'operator')), 403, /cannot approve one's own proposal/);
        assert.equal(await approvalStatus(held.body.id), 'pending', what);
      }
      const other = await approve(held.body.id, await rootKey('ops-deputy', 'operator')).expect(200);
      assert.equal(other.body.status, 'executed');
    });

    it("refuses an approving key the proposer made (directly or through keys it made), one that made the proposer's key, and one made after the proposal", async () => {
      // Before the fix any admin minted a second admin key and approved their own proposal with it.
      const victim = await newCa('mint-and-approve');
      const p = await proposeCaRevoke(victim.id, keys.admin);
      clock.advance(1000);
      const minted = (await api.post('/v1/api-keys').set(as('admin')).send({ name: 'Totally Different Person', role: 'admin' }).expect(201))
        .body as { id: string; key: string };
      assertProblem(await approve(p.id, minted.key), 403, /descends from/);
      // Through a key it made: the minted key mints another.
      const grandchild = (
        await api.post('/v1/api-keys').set(auth(minted.key)).send({ name: 'Yet Another Person', role: 'admin' }).expect(201)
      ).body as { id: string; key: string };
      const listed = (await api.get('/v1/api-keys').set(as('admin')).expect(200)).body.items as {
        id: string;
        createdByKey: string | null;
      }[];
      assert.equal(listed.find((k) => k.id === grandchild.id)?.createdByKey, minted.id);
      assert.equal(listed.find((k) => k.id === keyIdOf(keys.admin))?.createdByKey, null);
      assertProblem(await approve(p.id, grandchild.key), 403, /descends from/);
      // The other way round: a key minted before, which proposes; its maker approves.
      const p2 = await proposeCaRevoke((await newCa('minted-proposer')).id, minted.key);
      assertProblem(await approve(p2.id, keys.admin), 403, /descends from/);
      // A key of another person, made after the proposal (outside anyone's line): not a second person for it either.
      const late = await rootKey('late admin', 'admin');
      assertProblem(await approve(p.id, late), 403, /created after the proposal/);
      assert.equal(await approvalStatus(p.id), 'pending');
      // A second person, whose key existed before the proposal and is in no line with the proposer's, approves.
      const p3 = await proposeCaRevoke((await newCa('second-person')).id, keys.admin);
      clock.advance(1000);
      assert.equal((await approve(p3.id, late).expect(200)).body.status, 'executed');
    });
  });
}
