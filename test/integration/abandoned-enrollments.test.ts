import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import { ManualClock } from '../../src/shared/clock.js';

// What an enrollment leaves when its process dies mid-request, written as that process would
// have left it, and what a retry makes of it before and after ENROLL_RECOVERY_SECONDS (30 here).
for (const target of dbTargets) {
  describe(`enrollments abandoned by a dead process, on ${target.name}`, { skip: target.skip }, () => {
    const clock = new ManualClock(new Date());
    let s: Awaited<ReturnType<typeof makeApiService>>;
    const admin = () => ({ Authorization: `Bearer ${s.keys.admin}` });
    before(async () => {
      s = await makeApiService(target, { clock, env: { ENROLL_RECOVERY_SECONDS: '30' } });
    });
    after(async () => s?.svc.dispose());

    /** A device of its own and a token for it. */
    async function device(id: string) {
      await s.api.post('/v1/devices').set(admin()).send({ id, kind: 'client' }).expect(201);
      const created = (await s.api.post('/v1/enrollment-tokens').set(admin()).send({ deviceId: id }).expect(201)).body as {
        id: string;
        token: string;
      };
      const { token, id: tokenId } = created;
      const enroll = (csrPem: string, key?: string) =>
        s.api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${token}`, ...(key ? { 'Idempotency-Key': key } : {}) })
          .send({ csr: csrPem });
      return { token, tokenId, enroll };
    }
    /** The token use the dead attempt spent, at the clock's now. */
    const spentUse = (tokenId: string, deviceId: string) =>
      s.svc.db.transaction(async (tx) => {
        await tx('enrollment_token_uses').insert({ token_id: tokenId, device_id: deviceId, used_at: clock.now() });
        await tx('enrollment_tokens').where({ id: tokenId }).increment('uses', 1);
      });
    const uses = async (tokenId: string) => Number((await s.svc.db('enrollment_tokens').where({ id: tokenId }).first()).uses);
    const certificates = async (deviceId: string) =>
      (await s.svc.db('certificates').where({ device_id: deviceId }).select('status')).map((r: { status: string }) => r.status).sort();
    const audited = async (action: string, targetId: string) =>
      Number((await s.svc.db('audit_log').where({ action, target_id: targetId }).count({ n: '*' }).first())!.n);

    it('a keyed retry after the certificate was recorded but never delivered gets that certificate, once the lease is past', async () => {
      const d = await device('ab-recorded');
      const csr = p256Csr('ab-recorded');
      const first = (await d.enroll(csr.pem, 'k-1').expect(201)).body;
      // The process died after the commit, before it stored its answer under the key.
      await s.svc
        .db('idempotency_keys')
        .where({ key: 'k-1' })
        .update({ state: 'in-progress', status_code: null, response: null, created_at: clock.now() });
      clock.advance(10_000);
      const early = await d.enroll(csr.pem, 'k-1');
      assertProblem(early, 409);
      assert.equal(early.headers['retry-after'], '20');
      clock.advance(21_000);
      const again = (await d.enroll(csr.pem, 'k-1').expect(201)).body;
      assert.equal(again.serial, first.serial);
      assert.equal(again.certificate, first.certificate);
      assert.deepEqual(again.chain, first.chain);
      assert.deepEqual(await certificates('ab-recorded'), ['issued']);
      // Stored again under the key: a later retry is a plain replay.
      assert.equal((await d.enroll(csr.pem, 'k-1').expect(201)).body.serial, first.serial);
      assert.equal(await uses(d.tokenId), 1);
    });

    it('a keyed retry after the process died before signing closes its intent, gives its token use back and enrolls', async () => {
      const d = await device('ab-unsigned');
      const csr = p256Csr('ab-unsigned');
      // The claim, the use and an intent never signed, as the dead process left them.
      await s.svc.db('idempotency_keys').insert({
        scope: `token:${d.tokenId}:ab-unsigned`,
        key: 'k-2',
        request_hash: createHash('sha256').update(csr.der).digest(),
        state: 'in-progress',
        created_at: clock.now(),
      });
      await spentUse(d.tokenId, 'ab-unsigned');
      const pending = await s.svc.db('certificates').where({ status: 'issued' }).first();
      const orphan = Buffer.from('7e' + 'ab'.repeat(15), 'hex');
      await s.svc.db('certificates').insert({
        ...pending,
        serial: orphan,
        status: 'pending',
        der: null,
        tbs_der: Buffer.from([0x30, 0]),
        device_id: 'ab-unsigned',
        created_at: clock.now(),
        issued_at: null,
      });
      clock.advance(5_000);
      assertProblem(await d.enroll(csr.pem, 'k-2'), 409);
      assertProblem(await d.enroll(csr.pem), 409); // without the key: the use is still in flight
      clock.advance(30_000);
      const body = (await d.enroll(csr.pem, 'k-2').expect(201)).body;
      assert.deepEqual(await certificates('ab-unsigned'), ['failed', 'issued']);
      assert.equal(
        (await s.svc.db('certificates').where({ serial: orphan }).first()).der,
        null,
        'the abandoned intent is closed, never signed',
      );
      assert.equal(await audited('certificate.abandoned', orphan.toString('hex')), 1);
      assert.equal(await uses(d.tokenId), 1, "one use: the dead attempt's was given back");
      assert.equal((await d.enroll(csr.pem, 'k-2').expect(201)).body.serial, body.serial);
    });

    it('a retry without a key, after the process died having spent the token, gets its use back and enrolls; once it paid for a certificate, it does not', async () => {
      const d = await device('ab-nokey');
      await spentUse(d.tokenId, 'ab-nokey');
      clock.advance(1_000);
      const early = await d.enroll(p256Csr('ab-nokey').pem);
      assertProblem(early, 409);
      assert.equal(early.headers['retry-after'], '29');
      clock.advance(30_000);
      await d.enroll(p256Csr('ab-nokey').pem).expect(201);
      assert.equal(await audited('enrollment-token.use-reclaimed', d.tokenId), 1);
      assert.equal(await uses(d.tokenId), 1);
      // That use paid for a certificate: a second enrollment with the token is refused, lease or not.
      clock.advance(60_000);
      const again = await d.enroll(p256Csr('ab-nokey').pem);
      assertProblem(again, 403);
      assert.match(again.body.detail, /already enrolled with this token/);
      assert.deepEqual(await certificates('ab-nokey'), ['issued']);
    });
  });
}
