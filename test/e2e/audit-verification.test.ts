import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem, listenOnLoopback } from '../helpers/http.js';
import { ensureConsoleBuilt } from '../helpers/console.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import { ManualClock } from '../../src/shared/clock.js';

/**
 * GET /v1/audit/verification (what `mqtt-ca audit verify` does, for the console's Audit page), and
 * the security event stream read with a console session cookie (what the Events page's live mode uses).
 */
for (const target of dbTargets) {
  describe(`audit verification and the event stream by session on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    const keys = {} as Record<Role, string>;
    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const clock = new ManualClock(new Date());

    before(async () => {
      ensureConsoleBuilt();
      // Every /v1 response is checked against openapi.yaml (a mismatch is a 500).
      const made = await makeApiService(target, { clock });
      ({ svc, api } = made);
      Object.assign(keys, made.keys);
      for (const id of ['av-1', 'av-2', 'av-3']) await api.post('/v1/devices').set(auth('admin')).send({ id }).expect(201);
    });
    after(async () => svc?.dispose());

    it('streams security events to a console session (the cookie, no Authorization header), and refuses one without a session', async () => {
      const server = await listenOnLoopback(createHttpHandler(svc, { validateResponses: true }));
      const controller = new AbortController();
      try {
        const signIn = await api.post('/v1/console/session').send({ apiKey: keys.auditor }).expect(201);
        const cookie = String(([] as string[]).concat(signIn.headers['set-cookie'] ?? [])[0]).split(';')[0]!;
        assert.equal((await fetch(`${server.url}/v1/events/stream`, { signal: controller.signal })).status, 401);
        const provisioner = await api.post('/v1/console/session').send({ apiKey: keys.provisioner }).expect(201);
        const pcookie = String(([] as string[]).concat(provisioner.headers['set-cookie'] ?? [])[0]).split(';')[0]!;
        assert.equal(
          (await fetch(`${server.url}/v1/events/stream`, { headers: { Cookie: pcookie }, signal: controller.signal })).status,
          403,
        );
        const res = await fetch(`${server.url}/v1/events/stream?kind=test.streamed`, {
          headers: { Cookie: cookie },
          signal: controller.signal,
        });
        assert.equal(res.status, 200);
        assert.match(String(res.headers.get('content-type')), /text\/event-stream/);
        const reader = res.body!.getReader();
        let text = '';
        // The stream is open (its retry line sent) before the event is recorded: the event arrives live.
        while (!text.includes('retry:')) text += new TextDecoder().decode((await reader.read()).value);
        await svc.securityEvents.record({ kind: 'test.streamed', subject: 'device:av-1', details: { note: 'live' } });
        const deadline = Date.now() + 10_000;
        while (!/event: test\.streamed\ndata: .*"subject":"device:av-1"/.test(text)) {
          assert.ok(Date.now() < deadline, `no event in ${text}`);
          const { value, done } = await reader.read();
          assert.ok(!done, 'the stream ended');
          text += new TextDecoder().decode(value);
        }
      } finally {
        controller.abort();
        await server.close();
      }
    });

    it('verifies an intact chain for admin and auditor; operator and provisioner are refused', async () => {
      for (const role of ['admin', 'auditor'] as const) {
        const res = await api.get('/v1/audit/verification').set(auth(role)).expect(200);
        assert.equal(res.body.chain.ok, true, JSON.stringify(res.body));
        assert.equal(res.body.chain.firstBad, null);
        const newest = (await api.get('/v1/audit?limit=1').set(auth('auditor')).expect(200)).body.items[0].seq as number;
        assert.ok(res.body.chain.checked >= newest - 1 && res.body.chain.checked > 5, JSON.stringify(res.body.chain));
        assert.equal(res.body.chain.head.seq, res.body.chain.checked);
        assert.equal(res.headers['cache-control'], 'no-store');
        assert.equal(typeof res.body.anchor.ok, 'boolean');
      }
      for (const role of ['operator', 'provisioner'] as const) assertProblem(await api.get('/v1/audit/verification').set(auth(role)), 403);
      assertProblem(await api.get('/v1/audit/verification'), 401);
    });

    /** An attacker with database access edits one entry (the trigger has to be switched off to do it); the returned function undoes it. */
    const tamper = async (seq: number) => {
      const { actor } = (await svc.db('audit_log').select('actor').where({ seq }).first()) as { actor: string };
      const set = async (to: string) => {
        await svc.db.raw('alter table audit_log disable trigger audit_log_no_update');
        await svc.db.raw(`update audit_log set actor = ? where seq = ?`, [to, seq]);
        await svc.db.raw('alter table audit_log enable trigger audit_log_no_update');
      };
      await set('someone-else');
      return () => set(actor);
    };
    const verification = async (query = '') =>
      (await api.get(`/v1/audit/verification${query}`).set(auth('auditor')).expect(200)).body as {
        ok: boolean;
        chain: {
          ok: boolean;
          checked: number;
          head: { seq: number } | null;
          firstBad: { seq: number; problem: string } | null;
          mode: string;
          from: number;
          fullVerifiedAt: string;
        };
        anchor: unknown;
      };

    it('reports the chain broken at the seq of a tampered entry, with the count verified before it', async () => {
      const intact = await verification('?full=true');
      assert.equal(intact.chain.ok, true);
      assert.equal(intact.chain.mode, 'full');
      const seq = Math.max(2, intact.chain.head!.seq - 3);
      const undo = await tamper(seq);
      const res = await verification('?full=true');
      assert.equal(res.ok, false);
      assert.equal(res.chain.ok, false);
      assert.equal(res.chain.mode, 'full');
      assert.equal(res.chain.firstBad!.seq, seq);
      assert.equal(res.chain.firstBad!.problem, 'altered');
      assert.equal(res.chain.checked, seq - 1);
      assert.equal(res.chain.head, null);
      assert.equal(res.anchor, null, 'a broken chain is not compared with the checkpoints');
      // Two at once share one walk of the chain and get the same answer.
      const [a, b] = await Promise.all([
        api.get('/v1/audit/verification').set(auth('admin')),
        api.get('/v1/audit/verification').set(auth('auditor')),
      ]);
      assert.deepEqual(a.body.chain, b.body.chain);
      await undo();
    });

    it('walks only the entries after the last one found intact, sees an edit from there on, and walks the whole chain again on request and once AUDIT_FULL_VERIFY_MINUTES have passed', async () => {
      // After a broken chain, the next verification walks the whole chain again.
      const first = await verification();
      assert.equal(first.chain.mode, 'full');
      assert.equal(first.chain.from, 0);
      assert.equal(first.chain.ok, true);
      const point = first.chain.head!.seq;

      // Unchanged: only the entry at the point is read again.
      const again = await verification();
      assert.deepEqual(
        { mode: again.chain.mode, from: again.chain.from, checked: again.chain.checked, fullVerifiedAt: again.chain.fullVerifiedAt },
        { mode: 'incremental', from: point, checked: point, fullVerifiedAt: first.chain.fullVerifiedAt },
      );

      // New entries are walked, chained on the point; an edit of one of them is seen.
      await api.post('/v1/devices').set(auth('admin')).send({ id: 'av-4' }).expect(201);
      await api.post('/v1/devices').set(auth('admin')).send({ id: 'av-5' }).expect(201);
      let undo = await tamper(point + 2);
      let res = await verification();
      assert.equal(res.chain.mode, 'incremental');
      assert.equal(res.chain.from, point);
      assert.equal(res.chain.ok, false);
      assert.equal(res.chain.firstBad!.seq, point + 2);
      await undo();

      // The entry at the point itself edited: seen.
      assert.equal((await verification()).chain.mode, 'full', 'after a broken chain, the whole chain');
      const at = (await verification()).chain.head!.seq;
      undo = await tamper(at);
      res = await verification();
      assert.equal(res.chain.mode, 'incremental');
      assert.equal(res.chain.firstBad!.seq, at);
      assert.equal(res.chain.firstBad!.problem, 'altered');
      await undo();

      // An entry before the point edited: not what an incremental verification reads ...
      assert.equal((await verification()).chain.ok, true);
      const head = (await verification()).chain.head!.seq;
      undo = await tamper(head - 2);
      res = await verification();
      assert.equal(res.chain.mode, 'incremental');
      assert.equal(res.chain.ok, true, 'an incremental verification reads only the entries from its point on');
      // ... seen by a whole walk on request,
      res = await verification('?full=true');
      assert.equal(res.chain.mode, 'full');
      assert.equal(res.chain.firstBad!.seq, head - 2);
      // and by the next one once the last whole walk is AUDIT_FULL_VERIFY_MINUTES (60) old.
      await undo();
      assert.equal((await verification()).chain.mode, 'full');
      undo = await tamper(head - 2);
      assert.equal((await verification()).chain.mode, 'incremental');
      clock.advance(61 * 60_000);
      res = await verification();
      assert.equal(res.chain.mode, 'full');
      assert.equal(res.chain.firstBad!.seq, head - 2);
      await undo();
    });
  });
}
