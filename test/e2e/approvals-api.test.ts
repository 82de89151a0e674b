import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem, servedCrlText } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import { run, tempDir, writeTemp } from '../helpers/openssl.js';
import { readFileSync } from 'node:fs';
import { ManualClock } from '../../src/shared/clock.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

type Agent = ReturnType<typeof request>;
const HOUR = 3_600_000;
const THRESHOLD = 3;

for (const target of dbTargets) {
  describe(`two-person rule over HTTP on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    let issuingId: string;
    let rootId: string;
    /** A second admin (another person), a third one, and another key of the first admin's owner (same name). */
    let admin2: string;
    let admin3: string;
    let adminSameName: string;
    // Starts at the real time: openssl checks the OCSP answers' times against its own clock.
    const clock = new ManualClock(new Date());

    const auth = (role: Role | string) => ({ Authorization: `Bearer ${role in (keys ?? {}) ? keys[role as Role] : role}` });
    const newCa = async (name: string) =>
      (await api.post('/v1/cas').set(auth('admin')).send({ kind: 'intermediate', name, parentId: rootId, pathLen: 0 }).expect(201))
        .body as { id: string };
    const ca = async (id: string) =>
      (await api.get(`/v1/cas/${id}`).set(auth('auditor')).expect(200)).body as {
        status: string;
        isDefaultIssuer: boolean;
        certificate: string;
      };
    const proposeCaRevoke = async (caId: string, reason = 'cACompromise', who: string = keys.admin) => {
      const res = await api.post(`/v1/cas/${caId}/revoke`).set(auth(who)).send({ reason, note: 'key found on a laptop' });
      assert.equal(res.status, 202, res.text);
      assert.equal(res.headers.location, `/v1/approvals/${res.body.id}`);
      return res.body as { id: string; status: string; targets: { serial: string; parentId: string }; summary: string };
    };
    const approve = (id: string, who: string) => api.post(`/v1/approvals/${id}/approve`).set(auth(who));
    const approval = async (id: string) => (await api.get(`/v1/approvals/${id}`).set(auth('auditor')).expect(200)).body;
    const certificate = async (serial: string) => (await api.get(`/v1/certificates/${serial}`).set(auth('auditor')).expect(200)).body;
    const auditOf = async (q: Record<string, string>) =>
      (
        await api
          .get('/v1/audit')
          .query({ limit: 500, ...q })
          .set(auth('auditor'))
          .expect(200)
      ).body.items as { action: string; actor: string; targetId: string; requestId: string | null; details: Record<string, any> }[];
    const keyIdOf = (key: string) => /^mqca_(ak_[0-9a-f]{20})_/.exec(key)![1]!;
    /** The block of `openssl crl -text` for one serial (its lines up to the next serial). */
    const crlEntry = (text: string, serial: string) => {
      const at = text.indexOf(`Serial Number: ${serial.toUpperCase()}`);
      if (at < 0) return undefined;
      const next = text.indexOf('Serial Number:', at + 10);
      return text.slice(at, next < 0 ? undefined : next);
    };
    /** The parent's OCSP answer for a CA's certificate, as `openssl ocsp` reads and verifies it */
    const ocspStatus = async (caPem: string, parentPem: string) => {
      const dir = tempDir();
      const [issuer, cert, reqFile] = [writeTemp(dir, 'parent.pem', parentPem), writeTemp(dir, 'ca.pem', caPem), `${dir}/req.der`];
      const req = run('openssl', ['ocsp', '-issuer', issuer, '-cert', cert, '-no_nonce', '-reqout', reqFile]);
      assert.equal(req.status, 0, req.stderr);
      const res = await api
        .post('/pki/ocsp')
        .set('Content-Type', 'application/ocsp-request')
        .send(readFileSync(reqFile))
        .buffer(true)
        .parse((r, cb) => {
          const chunks: Buffer[] = [];
          r.on('data', (c: Buffer) => chunks.push(c));
          r.on('end', () => cb(null, Buffer.concat(chunks)));
        });
      assert.equal(res.status, 200);
      const out = run('openssl', [
        'ocsp',
        '-respin',
        writeTemp(dir, 'resp.der', res.body as Buffer),
        '-issuer',
        issuer,
        '-cert',
        cert,
        '-CAfile',
        issuer,
      ]);
      assert.equal(out.status, 0, out.stderr);
      assert.match(out.stderr + out.stdout, /Response verify OK/);
      return out.stdout + out.stderr;
    };
    const enroll = async (deviceId: string, lot: string) => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: deviceId, kind: 'client', lot }).expect(201);
      const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId }).expect(201)).body.token as string;
      const body = (
        await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ csr: p256Csr(deviceId).pem })
          .expect(201)
      ).body;
      return body.serial as string;
    };

    before(async () => {
      ({ svc, api, keys, issuingId } = await makeApiService(target, {
        clock,
        env: { BULK_REVOKE_APPROVAL_THRESHOLD: String(THRESHOLD), APPROVAL_TTL_HOURS: '24' },
      }));
      rootId = (await api.get('/v1/cas').set(auth('auditor')).expect(200)).body.items.find((c: { kind: string }) => c.kind === 'root').id;
      admin2 = (await svc.apiKeys.create({ name: 'second admin', role: 'admin' }, { actor: 'test' })).key;
      admin3 = (await svc.apiKeys.create({ name: 'third admin', role: 'admin' }, { actor: 'test' })).key;
      adminSameName = (await svc.apiKeys.create({ name: 'Initial Admin', role: 'admin' }, { actor: 'test' })).key;
    });
    after(async () => svc?.dispose());

    it('lets only admins propose a CA revocation, and refuses a root, a hold and an unknown CA', async () => {
      const victim = await newCa('refusals');
      for (const role of ['operator', 'provisioner', 'auditor'] as const) {
        assertProblem(
          await api.post(`/v1/cas/${victim.id}/revoke`).set(auth(role)).send({ reason: 'cACompromise' }),
          403,
          new RegExp(`${role} role`),
        );
      }
      assertProblem(await api.post(`/v1/cas/${rootId}/revoke`).set(auth('admin')).send({ reason: 'cACompromise' }), 400, /is a root/);
      assertProblem(
        await api.post(`/v1/cas/${victim.id}/revoke`).set(auth('admin')).send({ reason: 'certificateHold' }),
        400,
        /not put on hold/,
      );
      assertProblem(await api.post(`/v1/cas/${victim.id}/revoke`).set(auth('admin')).send({ reason: 'bogus' }), 400);
      assertProblem(await api.post('/v1/cas/ca_nope/revoke').set(auth('admin')).send({ reason: 'cACompromise' }), 404);
      assertProblem(await api.post('/v1/cas/nope/revoke').set(auth('admin')).send({}), 400);
      assert.equal((await api.get('/v1/approvals').set(auth('auditor')).expect(200)).body.items.length, 0);
      // A CA's certificate is not revoked around the rule, singly or in bulk.
      const serial = (await svc.hierarchy.revocationTarget(victim.id)).serial.toString('hex');
      assertProblem(
        await api.post(`/v1/certificates/${serial}/revoke`).set(auth('operator')).send({ reason: 'cACompromise' }),
        403,
        /CA's certificate/,
      );
      const bulk = await api
        .post('/v1/revocations')
        .set(auth('operator'))
        .send({ selector: { serials: [serial] }, reason: 'cACompromise' })
        .expect(200);
      assert.equal(bulk.body.revoked, 0);
      assert.equal((await certificate(serial)).status, 'issued');
    });

    it("revokes a CA only when a different admin approves: on the root's CRL with cACompromise, and it issues nothing more", async () => {
      const victim = await newCa('victim');
      await api.post(`/v1/cas/${victim.id}/default-issuer`).set(auth('admin')).expect(200);
      const p = await proposeCaRevoke(victim.id);
      assert.equal(p.status, 'pending');
      assert.equal(p.targets.parentId, rootId);
      assert.match(p.summary, /default issuer/);
      const serial = p.targets.serial;
      const shown = await approval(p.id);
      assert.deepEqual(shown.params, { caId: victim.id, reason: 'cACompromise' });
      assert.equal(shown.note, 'key found on a laptop');
      assert.equal(shown.proposedBy.keyId, keyIdOf(keys.admin));

      // The proposer, another key of the same person, and roles that may not: refused, nothing changes.
      assertProblem(await approve(p.id, keys.admin), 403, /cannot approve one's own proposal/);
      assertProblem(await approve(p.id, adminSameName), 403, /cannot approve one's own proposal/);
      for (const role of ['operator', 'provisioner', 'auditor'] as const)
        assertProblem(await approve(p.id, keys[role]), 403, new RegExp(`${role} role may not approve`));
      assertProblem(await approve('apr_0000', admin2), 404);
      assert.equal((await ca(victim.id)).status, 'active');
      assert.equal((await certificate(serial)).status, 'issued');
      assert.equal(crlEntry(await servedCrlText(api, rootId), serial), undefined);
      const rootPem = (await ca(rootId)).certificate;
      const victimPem = (await ca(victim.id)).certificate;
      assert.match(await ocspStatus(victimPem, rootPem), /ca\.pem: good/);

      const res = await approve(p.id, admin2).expect(200);
      assert.equal(res.body.status, 'executed', JSON.stringify(res.body));
      assert.equal(res.body.decidedBy.keyId, keyIdOf(admin2));
      assert.equal(res.body.result.serial, serial);
      assert.equal(res.body.result.wasDefaultIssuer, true);
      assertProblem(await approve(p.id, admin3), 409, /executed already/);

      const after = await ca(victim.id);
      assert.equal(after.status, 'revoked');
      assert.equal(after.isDefaultIssuer, false);
      const cert = await certificate(serial);
      assert.equal(cert.status, 'revoked');
      assert.equal(cert.revocation.reason, 'cACompromise');
      const entry = crlEntry(await servedCrlText(api, rootId), serial);
      assert.ok(entry, `serial ${serial} is not on the root's CRL`);
      assert.match(entry, /CA Compromise/);
      const ocsp = await ocspStatus(victimPem, rootPem);
      assert.match(ocsp, /ca\.pem: revoked/);
      assert.match(ocsp, /Reason: cACompromise/);

      // It issues nothing more: named, or as the default it no longer is.
      const broker = p256Csr('broker.example');
      assertProblem(
        await api
          .post('/v1/certificates')
          .set(auth('operator'))
          .send({ profile: 'broker', csr: broker.pem, caId: victim.id, dnsNames: ['broker.example'] }),
        409,
        /revoked/,
      );
      assertProblem(
        await api
          .post('/v1/certificates')
          .set(auth('operator'))
          .send({ profile: 'broker', csr: broker.pem, dnsNames: ['broker.example'] }),
        409,
        /no default issuing CA/,
      );
      assertProblem(await api.post(`/v1/cas/${victim.id}/default-issuer`).set(auth('admin')).send(), 409);
      await api.post(`/v1/cas/${issuingId}/default-issuer`).set(auth('admin')).expect(200);
      await api
        .post('/v1/certificates')
        .set(auth('operator'))
        .send({ profile: 'broker', csr: broker.pem, dnsNames: ['broker.example'] })
        .expect(201);
      assertProblem(
        await api.post(`/v1/cas/${victim.id}/revoke`).set(auth('admin')).send({ reason: 'keyCompromise' }),
        409,
        /revoked already/,
      );

      // The audit log: both people on each step; the CA and its certificate revoked by the approver in the approval's request.
      const steps = (await auditOf({ targetType: 'approval', targetId: p.id })).reverse();
      assert.deepEqual(
        steps.map((e) => [e.action, e.actor]),
        [
          ['approval.proposed', `api-key:${keyIdOf(keys.admin)}`],
          ['approval.approved', `api-key:${keyIdOf(admin2)}`],
          ['approval.executed', `api-key:${keyIdOf(admin2)}`],
        ],
      );
      for (const e of steps.slice(1)) {
        assert.equal(e.details.proposedBy.keyId, keyIdOf(keys.admin));
        assert.equal(e.details.approvedBy.keyId, keyIdOf(admin2));
      }
      const [caRevoked] = await auditOf({ action: 'ca.revoked', targetId: victim.id });
      assert.equal(caRevoked!.actor, `api-key:${keyIdOf(admin2)}`);
      assert.equal(caRevoked!.details.reason, 'cACompromise');
      assert.equal(caRevoked!.requestId, steps[1]!.requestId);
      const [certRevoked] = await auditOf({ action: 'certificate.revoked', targetId: serial });
      assert.equal(certRevoked!.actor, `api-key:${keyIdOf(admin2)}`);
    });

    it('rejects: the CA stays active and the proposal cannot be approved afterwards', async () => {
      const other = await newCa('kept');
      const p = await proposeCaRevoke(other.id, 'superseded');
      assertProblem(
        await api.post(`/v1/approvals/${p.id}/reject`).set(auth('operator')).send({ reason: 'no' }),
        403,
        /operator role may not reject/,
      );
      const res = await api.post(`/v1/approvals/${p.id}/reject`).set(auth(admin2)).send({ reason: 'wrong CA' }).expect(200);
      assert.equal(res.body.status, 'rejected');
      assert.equal(res.body.reason, 'wrong CA');
      assertProblem(await approve(p.id, admin3), 409, /rejected already/);
      assert.equal((await ca(other.id)).status, 'active');
      const [rejected] = await auditOf({ action: 'approval.rejected', targetId: p.id });
      assert.equal(rejected!.actor, `api-key:${keyIdOf(admin2)}`);
      assert.equal(rejected!.details.reason, 'wrong CA');
      assert.equal(rejected!.details.proposedBy.keyId, keyIdOf(keys.admin));
    });

    it('expires an unapproved proposal after APPROVAL_TTL_HOURS', async () => {
      const other = await newCa('expiring');
      const p = await proposeCaRevoke(other.id);
      const q = await proposeCaRevoke(other.id, 'keyCompromise');
      clock.advance(24 * HOUR);
      assertProblem(await approve(p.id, admin2), 409, /expired/);
      assert.equal((await approval(p.id)).status, 'expired');
      assert.deepEqual(await svc.approvals.expireDue(), { expired: 1 });
      assert.equal((await approval(q.id)).status, 'expired');
      assert.equal((await ca(other.id)).status, 'active');
      const expired = await auditOf({ action: 'approval.expired' });
      assert.deepEqual(new Set(expired.map((e) => e.targetId)), new Set([p.id, q.id]));
      assert.ok(expired.every((e) => e.actor === 'system:approvals' && e.details.proposedBy.keyId === keyIdOf(keys.admin)));
    });

    it('executes once when two admins approve at the same moment', async () => {
      const other = await newCa('raced');
      const p = await proposeCaRevoke(other.id, 'keyCompromise');
      const [a, b] = await Promise.all([approve(p.id, admin2), approve(p.id, admin3)]);
      const statuses = [a.status, b.status].sort();
      assert.deepEqual(statuses, [200, 409], `${a.text} / ${b.text}`);
      const won = a.status === 200 ? a : b;
      assert.equal(won.body.status, 'executed');
      assert.equal((await auditOf({ action: 'approval.executed', targetId: p.id })).length, 1);
      assert.equal((await auditOf({ action: 'ca.revoked', targetId: other.id })).length, 1);
      assert.equal((await auditOf({ action: 'certificate.revoked', targetId: p.targets.serial })).length, 1);
    });

    it(`holds a bulk revocation of more than ${THRESHOLD} certificates for approval, then revokes exactly the matched set`, async () => {
      const serials: string[] = [];
      for (let i = 0; i < 5; i++) serials.push(await enroll(`big-${i}`, 'LOT-BIG'));
      const body = { selector: { lot: 'LOT-BIG' }, reason: 'keyCompromise' };
      // Dry runs are never held.
      const dry = await api
        .post('/v1/revocations')
        .set(auth('operator'))
        .send({ ...body, dryRun: true })
        .expect(200);
      assert.deepEqual([dry.body.dryRun, dry.body.revoked], [true, 5]);
      const held = await api.post('/v1/revocations').set(auth('operator')).send(body);
      assert.equal(held.status, 202, held.text);
      assert.equal(held.body.action, 'revocation.bulk');
      assert.equal(held.body.targets.revocable, 5);
      assert.deepEqual(held.body.targets.serials, [...serials].sort());
      for (const s of serials) assert.equal((await certificate(s)).status, 'issued');
      // Issued while the proposal waits: not what was proposed, so not taken.
      clock.advance(1000);
      const late = await enroll('big-late', 'LOT-BIG');

      assertProblem(await approve(held.body.id, keys.operator), 403, /own proposal/);
      assertProblem(await approve(held.body.id, keys.provisioner), 403, /provisioner role may not approve/);
      assertProblem(await approve(held.body.id, keys.auditor), 403, /auditor role may not approve/);
      const done = await approve(held.body.id, keys.admin).expect(200);
      assert.equal(done.body.status, 'executed', JSON.stringify(done.body));
      assert.deepEqual([done.body.result.revoked, done.body.result.alreadyRevoked], [5, 0]);
      assert.deepEqual(done.body.result.serials, [...serials].sort());
      for (const s of serials) assert.equal((await certificate(s)).revocation.reason, 'keyCompromise');
      assert.equal((await certificate(late)).status, 'issued');
      const revokedBy = await auditOf({ action: 'certificate.revoked', actor: `api-key:${keyIdOf(keys.admin)}` });
      assert.deepEqual(new Set(revokedBy.filter((e) => serials.includes(e.targetId)).map((e) => e.targetId)), new Set(serials));
      const steps = (await auditOf({ targetType: 'approval', targetId: held.body.id })).reverse();
      assert.deepEqual(
        steps.map((e) => e.action),
        ['approval.proposed', 'approval.approved', 'approval.executed'],
      );
      assert.equal(steps[0]!.actor, `api-key:${keyIdOf(keys.operator)}`);
      assert.equal(steps[2]!.details.approvedBy.keyId, keyIdOf(keys.admin));
    });

    it(`revokes ${THRESHOLD} or fewer at once, as before`, async () => {
      const serials = [await enroll('small-0', 'LOT-SMALL'), await enroll('small-1', 'LOT-SMALL'), await enroll('small-2', 'LOT-SMALL')];
      const res = await api
        .post('/v1/revocations')
        .set(auth('operator'))
        .send({ selector: { lot: 'LOT-SMALL' }, reason: 'superseded' })
        .expect(200);
      assert.deepEqual([res.body.dryRun, res.body.revoked], [false, 3]);
      for (const s of serials) assert.equal((await certificate(s)).status, 'revoked');
    });

    it('lists proposals by status and action, page by page, for admins, operators and auditors', async () => {
      assertProblem(await api.get('/v1/approvals').set(auth('provisioner')), 403);
      assertProblem(await api.get('/v1/approvals').query({ status: 'bogus' }).set(auth('auditor')), 400);
      const all = (await api.get('/v1/approvals').set(auth('operator')).expect(200)).body.items as {
        id: string;
        status: string;
        action: string;
        params?: unknown;
      }[];
      assert.equal(all.length, 6);
      assert.ok(all.every((x) => !('params' in x)));
      const executed = (await api.get('/v1/approvals').query({ status: 'executed', action: 'ca.revoke' }).set(auth('auditor')).expect(200))
        .body.items;
      assert.equal(executed.length, 2);
      const bulk = (await api.get('/v1/approvals').query({ action: 'revocation.bulk' }).set(auth('auditor')).expect(200)).body.items;
      assert.equal(bulk.length, 1);
      const seen: string[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = (
          await api
            .get('/v1/approvals')
            .query({ limit: 2, ...(cursor ? { cursor } : {}) })
            .set(auth('admin'))
            .expect(200)
        ).body;
        seen.push(...page.items.map((x: { id: string }) => x.id));
        if (!page.nextCursor) break;
        cursor = page.nextCursor;
      }
      assert.deepEqual(
        seen,
        all.map((x) => x.id),
      );
    });

    it('sweeps expired proposals on the housekeeping schedule', async () => {
      const jobs = (await api.get('/v1/jobs').set(auth('auditor')).expect(200)).body;
      const schedules = jobs.queues.flatMap((q: { schedules: { name: string; everyMs: number }[] }) => q.schedules);
      assert.ok(
        schedules.some((s: { name: string; everyMs: number }) => s.name === 'approval-expiry' && s.everyMs === 60_000),
        JSON.stringify(schedules),
      );
    });
  });
}
