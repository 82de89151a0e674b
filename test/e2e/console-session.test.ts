import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { ensureConsoleBuilt } from '../helpers/console.js';
import { ManualClock } from '../../src/shared/clock.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

type Agent = ReturnType<typeof request>;

/** The session cookie's value in a Set-Cookie answer. */
function cookieOf(res: request.Response): { value: string; header: string } {
  const set = ([] as string[]).concat(res.headers['set-cookie'] ?? []);
  const header = set.find((c) => c.startsWith('mqca_session='));
  assert.ok(header, `no session cookie in ${JSON.stringify(set)}`);
  return { value: header.slice('mqca_session='.length).split(';')[0]!, header };
}

for (const target of dbTargets) {
  describe(`console sessions on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    const keys = {} as Record<Role, string>;
    const clock = new ManualClock(new Date());
    before(async () => {
      ensureConsoleBuilt();
      // Every /v1 response below is checked against openapi.yaml by the validator (a mismatch is a 500).
      const made = await makeApiService(target, {
        clock,
        env: { CONSOLE_SESSION_IDLE_MINUTES: '15', CONSOLE_SESSION_MAX_HOURS: '8' },
      });
      ({ svc, api } = made);
      Object.assign(keys, made.keys);
      await api
        .post('/v1/devices')
        .set({ Authorization: `Bearer ${keys.admin}` })
        .send({ id: 'console-dev-1', site: 'north' })
        .expect(201);
    });
    after(async () => svc?.dispose());

    const signIn = async (role: Role) => {
      const res = await api.post('/v1/console/session').send({ apiKey: keys[role] }).expect(201);
      return { cookie: `mqca_session=${cookieOf(res).value}`, csrf: res.body.csrfToken as string, res };
    };

    it('serves the console at / and /console with a strict CSP, hashed assets cached, index.html not', async () => {
      const root = await api.get('/').expect(302);
      assert.equal(root.headers.location, '/console/');
      const index = await api.get('/console/').expect(200);
      assert.match(String(index.headers['content-type']), /text\/html/);
      assert.equal(index.headers['cache-control'], 'no-cache');
      const csp = String(index.headers['content-security-policy']);
      for (const d of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'"])
        assert.ok(csp.includes(d), `CSP lacks ${d}: ${csp}`);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
      assert.doesNotMatch(index.text, /<script>|<style>|\sstyle=|\son[a-z]+=/i, 'no inline script or style in index.html');
      // SPA fallback: any /console path is the page.
      assert.equal((await api.get('/console/devices/x%3Cy').expect(200)).text, index.text);
      const js = /src="(\/console\/assets\/main-[A-Z0-9]+\.js)"/.exec(index.text)?.[1];
      const css = /href="(\/console\/assets\/main-[A-Z0-9]+\.css)"/.exec(index.text)?.[1];
      assert.ok(js && css, index.text);
      const asset = await api.get(js).expect(200);
      assert.match(String(asset.headers['cache-control']), /max-age=31536000.*immutable/);
      assert.match(String(asset.headers['content-type']), /javascript/);
      await api.get(css).expect(200);
      assertProblem(await api.get('/console/assets/nothing-here.js'), 404);
      // The API and /pki are unchanged: an unknown /v1 path is still a JSON 404.
      assertProblem(await api.get('/v1/nothing').set({ Authorization: `Bearer ${keys.admin}` }), 404);
    });

    it('signs in with an API key: an HttpOnly SameSite=Strict cookie, only its hash stored, audited without secrets', async () => {
      const { res, cookie, csrf } = await signIn('operator');
      const { header, value } = cookieOf(res);
      assert.match(header, /; Path=\//);
      assert.match(header, /; HttpOnly/);
      assert.match(header, /; SameSite=Strict/);
      assert.match(header, /; Max-Age=28800/);
      assert.doesNotMatch(header, /Secure/, 'not Secure over plain HTTP');
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.equal(res.body.role, 'operator');
      assert.match(value, /^[A-Za-z0-9_-]{43}$/);
      assert.match(csrf, /^[A-Za-z0-9_-]{43}$/);
      const rows = await svc.db('console_sessions').select('id_hash', 'api_key_id', 'role');
      const mine = rows.find((r) => Buffer.from(r.id_hash).equals(createHash('sha256').update(value).digest()));
      assert.ok(mine, 'the row is found by the id hash');
      assert.equal(mine.role, 'operator');
      const dump = JSON.stringify(await svc.db('console_sessions').select('*'));
      assert.ok(!dump.includes(value) && !dump.includes(csrf), 'neither the session id nor the CSRF token is stored');
      const audit = await svc.db('audit_log').where({ action: 'console.signed-in' }).select('actor', 'details');
      assert.ok(audit.length >= 1);
      const text = JSON.stringify(audit);
      assert.ok(!text.includes(value) && !text.includes(csrf) && !text.includes(keys.operator), 'no secret in the audit log');
      // The session answers like the key: reads, and who it is (with the same CSRF token after a reload).
      await api.get('/v1/devices').set('Cookie', cookie).expect(200);
      const me = await api.get('/v1/console/session').set('Cookie', cookie).expect(200);
      assert.equal(me.body.csrfToken, csrf);
      assert.equal(me.body.keyId, res.body.keyId);
    });

    it('refuses a state change made with the cookie without its CSRF token, or from another site', async () => {
      const { cookie, csrf } = await signIn('operator');
      const patch = () => api.patch('/v1/devices/console-dev-1').set('Cookie', cookie);
      assertProblem(await patch().send({ site: 'south' }), 403, /CSRF/);
      assertProblem(await patch().set('X-CSRF-Token', 'A'.repeat(43)).send({ site: 'south' }), 403, /CSRF/);
      assertProblem(await patch().set('X-CSRF-Token', csrf).set('Sec-Fetch-Site', 'cross-site').send({ site: 'south' }), 403);
      assertProblem(await patch().set('X-CSRF-Token', csrf).set('Origin', 'https://evil.example').send({ site: 'south' }), 403);
      assert.equal((await svc.db('devices').where({ id: 'console-dev-1' }).first()).site, 'north', 'nothing changed');
      const ok = await patch().set('X-CSRF-Token', csrf).set('Sec-Fetch-Site', 'same-origin').send({ site: 'south' }).expect(200);
      assert.equal(ok.body.site, 'south');
      // A sign-in from another site is refused too (login CSRF).
      assertProblem(await api.post('/v1/console/session').set('Sec-Fetch-Site', 'cross-site').send({ apiKey: keys.operator }), 403);
    });

    it('keeps the role of the key: an auditor session may read, not revoke or change', async () => {
      const { cookie, csrf } = await signIn('auditor');
      await api.get('/v1/audit').set('Cookie', cookie).expect(200);
      assertProblem(
        await api.post('/v1/certificates/0a0b/revoke').set('Cookie', cookie).set('X-CSRF-Token', csrf).send({ reason: 'keyCompromise' }),
        403,
      );
      assertProblem(await api.patch('/v1/devices/console-dev-1').set('Cookie', cookie).set('X-CSRF-Token', csrf).send({ site: 'x' }), 403);
    });

    it('answers wrong keys, garbage and oversized bodies with 4xx problems', async () => {
      assertProblem(await api.post('/v1/console/session').send({ apiKey: 'mqca_ak_00000000000000000000_' + 'A'.repeat(43) }), 401);
      assertProblem(await api.post('/v1/console/session').send({ apiKey: 'short' }), 401);
      assertProblem(await api.post('/v1/console/session').send({}), 400);
      assertProblem(await api.post('/v1/console/session').send({ apiKey: keys.admin, extra: 1 }), 400);
      assertProblem(await api.post('/v1/console/session').send({ apiKey: 'x'.repeat(513) }), 400);
      assertProblem(await api.post('/v1/console/session').send({ apiKey: 42 }), 400);
      assertProblem(await api.post('/v1/console/session').type('application/json').send('{"apiKey":'), 400);
      assertProblem(
        await api
          .post('/v1/console/session')
          .type('application/json')
          .send(`{"apiKey":"${'x'.repeat(70_000)}"}`),
        413,
      );
      assertProblem(await api.post('/v1/console/session').type('text/plain').send('hello'), 415);
      // A forged or ended cookie is a 401, never a 500.
      assertProblem(await api.get('/v1/devices').set('Cookie', 'mqca_session=garbage'), 401);
      assertProblem(await api.get('/v1/devices').set('Cookie', `mqca_session=${'B'.repeat(43)}`), 401);
      assertProblem(await api.get('/v1/console/session').set({ Authorization: `Bearer ${keys.admin}` }), 401);
    });

    it('keeps Bearer authentication as it was, and prefers it over a cookie', async () => {
      await api
        .get('/v1/devices')
        .set({ Authorization: `Bearer ${keys.auditor}` })
        .expect(200);
      const { cookie } = await signIn('auditor');
      // With a Bearer key the cookie is not looked at: no CSRF token needed for the operator key's change.
      await api
        .patch('/v1/devices/console-dev-1')
        .set('Cookie', cookie)
        .set({ Authorization: `Bearer ${keys.operator}` })
        .send({ site: 'east' })
        .expect(200);
      assertProblem(await api.get('/v1/devices').set('Cookie', cookie).set({ Authorization: 'Bearer wrong' }), 401);
    });

    it('ends a session left idle, and one past its absolute lifetime however busy', async () => {
      const idle = await signIn('operator');
      clock.advance(14 * 60_000);
      await api.get('/v1/devices').set('Cookie', idle.cookie).expect(200); // used: the idle clock restarts
      clock.advance(14 * 60_000);
      await api.get('/v1/devices').set('Cookie', idle.cookie).expect(200);
      clock.advance(15 * 60_000 + 1000);
      assertProblem(await api.get('/v1/devices').set('Cookie', idle.cookie), 401, /sign in again/);

      const busy = await signIn('operator');
      for (let t = 0; t < 8 * 60; t += 10) {
        clock.advance(10 * 60_000);
        const res = await api.get('/v1/console/session').set('Cookie', busy.cookie);
        if (t + 10 < 8 * 60) assert.equal(res.status, 200, `at ${t + 10} min: ${res.text}`);
        else assertProblem(res, 401);
      }
    });

    it('ends the sessions of a revoked key at once', async () => {
      const created = await api
        .post('/v1/api-keys')
        .set({ Authorization: `Bearer ${keys.admin}` })
        .send({ name: 'night shift', role: 'operator' })
        .expect(201);
      const res = await api.post('/v1/console/session').send({ apiKey: created.body.key }).expect(201);
      const cookie = `mqca_session=${cookieOf(res).value}`;
      await api.get('/v1/devices').set('Cookie', cookie).expect(200);
      await api
        .delete(`/v1/api-keys/${created.body.id}`)
        .set({ Authorization: `Bearer ${keys.admin}` })
        .expect(204);
      assertProblem(await api.get('/v1/devices').set('Cookie', cookie), 401);
      assert.equal((await svc.db('console_sessions').where({ api_key_id: created.body.id })).length, 0, 'and its row is gone');
    });

    it('signs out: needs the CSRF token, clears the cookie, deletes the session, audits it', async () => {
      const { cookie, csrf } = await signIn('provisioner');
      assertProblem(await api.delete('/v1/console/session').set('Cookie', cookie), 403);
      const out = await api.delete('/v1/console/session').set('Cookie', cookie).set('X-CSRF-Token', csrf).expect(204);
      assert.match(String(out.headers['set-cookie']), /mqca_session=;.*Max-Age=0/);
      assertProblem(await api.get('/v1/console/session').set('Cookie', cookie), 401);
      const entries = await svc.db('audit_log').where({ action: 'console.signed-out' });
      assert.ok(entries.length >= 1);
    });
  });
}
