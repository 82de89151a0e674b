// Idempotency-Key on the API's state-changing routes (issue #25): a repeated request runs once and
// gets the first answer again; another body is 422, a repeat in flight 409; keys are per API key,
// expire, are never kept with a secret, and a 5xx lets the key go. And the CLI's client sends one.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem, listenOnLoopback } from '../helpers/http.js';
import { ManualClock } from '../../src/shared/clock.js';
import { ApiClient, ApiError } from '../../src/cli/api-client.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import { enrollWithDeviceToken } from '../helpers/enroll.js';

type Agent = ReturnType<typeof request>;
const HOUR = 3_600_000;

for (const target of dbTargets) {
  describe(`Idempotency-Key on the API on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    const clock = new ManualClock(new Date());
    before(async () => {
      // Every response, replays included, is checked against openapi.yaml by the validator (a mismatch is a 500).
      ({ svc, api, keys } = await makeApiService(target, { clock }));
    });
    after(async () => svc?.dispose());

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const count = async (table: string, where: Record<string, unknown> = {}) =>
      Number((await svc.db(table).where(where).count({ n: '*' }))[0]!.n);
    const audited = async (action: string, targetId: string) => count('audit_log', { action, target_id: targetId });
    const enroll = async (deviceId: string): Promise<string> => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: deviceId }).expect(201);
      return enrollWithDeviceToken(api, keys.admin, deviceId);
    };
    const openIncident = (role: Role, key: string | undefined, title: string, devices: string[]) => {
      const r = api.post('/v1/incidents').set(auth(role));
      if (key !== undefined) r.set('Idempotency-Key', key);
      return r.send({ kind: 'lost-device', title, targets: { devices } });
    };

    it('runs a request once per key: the repeat gets the first answer with Idempotent-Replayed, and nothing runs again', async () => {
      const key = randomUUID();
      const first = await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', key).send({ id: 'idem-1' }).expect(201);
      assert.equal(first.headers['idempotent-replayed'], undefined);
      const again = await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', key).send({ id: 'idem-1' }).expect(201);
      assert.equal(again.headers['idempotent-replayed'], 'true');
      assert.deepEqual(again.body, first.body);
      assert.equal(await audited('device.registered', 'idem-1'), 1);
      // Without the key the same request runs, and is refused: the device exists.
      assertProblem(await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'idem-1' }), 409);

      // A revocation: one audit entry, the first answer's headers repeated.
      const serial = await enroll('idem-rv');
      const rkey = randomUUID();
      const revoke = () =>
        api
          .post(`/v1/certificates/${serial}/revoke`)
          .set(auth('operator'))
          .set('Idempotency-Key', rkey)
          .send({ reason: 'certificateHold' })
          .expect(200);
      const r1 = await revoke();
      const r2 = await revoke();
      assert.equal(r1.headers['revocation-changed'], 'true');
      assert.equal(r2.headers['revocation-changed'], 'true', 'the replay repeats the first answer, not a second call’s "false"');
      assert.equal(r2.headers['also-revoked'], r1.headers['also-revoked']);
      assert.equal(r2.headers['idempotent-replayed'], 'true');
      assert.deepEqual(r2.body, r1.body);
      assert.equal(await audited('certificate.revoked', serial), 1);

      // An incident and one of its actions: one incident, one step.
      const ikey = randomUUID();
      const inc = (await openIncident('operator', ikey, 'idem incident', ['idem-rv']).expect(201)).body as { id: string };
      const incAgain = await openIncident('operator', ikey, 'idem incident', ['idem-rv']).expect(201);
      assert.equal(incAgain.body.id, inc.id);
      assert.equal(incAgain.headers.location, `/v1/incidents/${inc.id}`);
      assert.equal(await count('incidents', { title: 'idem incident' }), 1);
      const akey = randomUUID();
      const act = () =>
        api
          .post(`/v1/incidents/${inc.id}/actions`)
          .set(auth('operator'))
          .set('Idempotency-Key', akey)
          .send({ action: 'revoke-certificates', params: { reason: 'keyCompromise' } })
          .expect(201);
      const s1 = await act();
      const s2 = await act();
      assert.equal(s2.body.id, s1.body.id);
      assert.equal(s2.headers['idempotent-replayed'], 'true');
      const timeline = (await api.get(`/v1/incidents/${inc.id}`).set(auth('auditor')).expect(200)).body.timeline as unknown[];
      assert.equal(timeline.length, 1);
    });

    it('refuses the key with another body or route (422), and a malformed key (400)', async () => {
      const key = randomUUID();
      await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', key).send({ id: 'idem-2' }).expect(201);
      assertProblem(
        await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', key).send({ id: 'idem-3' }),
        422,
        /different request/,
      );
      assertProblem(
        await api.patch('/v1/devices/idem-2').set(auth('provisioner')).set('Idempotency-Key', key).send({ site: 'north' }),
        422,
        /another route/,
      );
      assert.equal(await count('devices', { id: 'idem-3' }), 0);
      assert.equal((await api.get('/v1/devices/idem-2').set(auth('auditor')).expect(200)).body.site, null);
      for (const bad of ['has space', 'x'.repeat(256), 'tab\there'])
        assertProblem(await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', bad).send({ id: 'idem-bad' }), 400);
      assertProblem(await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', '').send({ id: 'idem-bad' }), 400);
      assert.equal(await count('devices', { id: 'idem-bad' }), 0);
      // 255 printable characters is a key.
      await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', '~'.repeat(255)).send({ id: 'idem-long' }).expect(201);
    });

    it('runs two concurrent requests with one key once: the other waits (409, Retry-After) or gets the answer', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'idem-conc' }).expect(201);
      const key = randomUUID();
      const answers = await Promise.all([1, 2, 3].map(() => openIncident('operator', key, 'concurrent', ['idem-conc'])));
      const ok = answers.filter((r) => r.status === 201);
      assert.ok(ok.length >= 1, answers.map((r) => `${r.status} ${r.text}`).join('\n'));
      assert.equal(new Set(ok.map((r) => r.body.id as string)).size, 1);
      for (const r of answers.filter((x) => x.status !== 201)) {
        assertProblem(r, 409, /still in progress/);
        assert.equal(r.headers['retry-after'], '1');
      }
      assert.equal(await count('incidents', { title: 'concurrent' }), 1);
      // Retried after a second, the one that waited gets the first answer.
      const later = await openIncident('operator', key, 'concurrent', ['idem-conc']).expect(201);
      assert.equal(later.body.id, ok[0]!.body.id);
    });

    it('keeps keys per API key: another key’s same Idempotency-Key runs its own request, and a console session acts as its key', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'idem-who' }).expect(201);
      const key = randomUUID();
      const byOperator = await openIncident('operator', key, 'whose key', ['idem-who']).expect(201);
      const byAdmin = await openIncident('admin', key, 'whose key', ['idem-who']).expect(201);
      assert.notEqual(byAdmin.body.id, byOperator.body.id);
      assert.equal(byAdmin.headers['idempotent-replayed'], undefined);
      assert.equal(await count('incidents', { title: 'whose key' }), 2);

      // The operator's console session is the operator's key: its repeat is a replay.
      const signIn = await api.post('/v1/console/session').send({ apiKey: keys.operator }).expect(201);
      const cookie = ([] as string[])
        .concat(signIn.headers['set-cookie'] ?? [])
        .find((c) => c.startsWith('mqca_session='))!
        .split(';')[0]!;
      const viaSession = await api
        .post('/v1/incidents')
        .set('Cookie', cookie)
        .set('X-CSRF-Token', signIn.body.csrfToken as string)
        .set('Idempotency-Key', key)
        .send({ kind: 'lost-device', title: 'whose key', targets: { devices: ['idem-who'] } })
        .expect(201);
      assert.equal(viaSession.body.id, byOperator.body.id);
      assert.equal(viaSession.headers['idempotent-replayed'], 'true');
      assert.equal(await count('incidents', { title: 'whose key' }), 2);
    });

    it('never keeps a token shown once: a repeated token creation is 409 naming the token, and the table holds no secret', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'idem-tok' }).expect(201);
      const key = randomUUID();
      const made = await api
        .post('/v1/enrollment-tokens')
        .set(auth('provisioner'))
        .set('Idempotency-Key', key)
        .send({ deviceId: 'idem-tok' })
        .expect(201);
      const token = made.body.token as string;
      assert.match(token, /^mqet_/);
      const again = await api
        .post('/v1/enrollment-tokens')
        .set(auth('provisioner'))
        .set('Idempotency-Key', key)
        .send({ deviceId: 'idem-tok' });
      assertProblem(again, 409, /already done/);
      assert.ok(String(again.body.detail).includes(made.body.id as string), again.text);
      assert.match(String(again.body.detail), /shown once/);
      assert.doesNotMatch(again.text, /mqet_/);
      assert.equal(await count('enrollment_tokens', { device_id: 'idem-tok' }), 1);
      const rows = await svc.db('idempotency_keys').select('*');
      const dump = JSON.stringify(rows);
      assert.ok(dump.includes(made.body.id as string), 'the kept answer names the token');
      assert.ok(!dump.includes(token), 'the token is not in idempotency_keys');
      assert.ok(!dump.includes(token.slice(-43)), 'nor its secret part');
      const kept = rows.find((r) => r.key === key)!;
      assert.equal(kept.method, 'POST');
      assert.equal(kept.route, '/v1/enrollment-tokens');
      const response = (typeof kept.response === 'string' ? JSON.parse(kept.response) : kept.response) as { body: object };
      assert.equal('token' in response.body, false);
    });

    it('keeps no error answer: after a 5xx the key is let go and a retry runs; after a 4xx the corrected request runs', async () => {
      const key = randomUUID();
      const register = svc.devices.register.bind(svc.devices);
      svc.devices.register = async () => {
        throw new Error('the disk fell off');
      };
      try {
        assertProblem(await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', key).send({ id: 'idem-5xx' }), 500);
      } finally {
        svc.devices.register = register;
      }
      assert.equal(await count('idempotency_keys', { key }), 0);
      const retried = await api
        .post('/v1/devices')
        .set(auth('provisioner'))
        .set('Idempotency-Key', key)
        .send({ id: 'idem-5xx' })
        .expect(201);
      assert.equal(retried.headers['idempotent-replayed'], undefined);
      assert.equal(await audited('device.registered', 'idem-5xx'), 1);

      // A refusal changed nothing: the same key with the mistake corrected runs (no 422).
      const k2 = randomUUID();
      assertProblem(await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', k2).send({ id: 'idem-5xx' }), 409);
      await api.post('/v1/devices').set(auth('provisioner')).set('Idempotency-Key', k2).send({ id: 'idem-4xx' }).expect(201);
    });

    // Last: it moves the clock a day on.
    it('forgets a key after IDEMPOTENCY_KEY_TTL_HOURS (24 h): the request then runs again', async () => {
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'idem-ttl' }).expect(201);
      const key = randomUUID();
      const first = await openIncident('operator', key, 'expiring', ['idem-ttl']).expect(201);
      clock.advance(23 * HOUR);
      const replayed = await openIncident('operator', key, 'expiring', ['idem-ttl']).expect(201);
      assert.equal(replayed.body.id, first.body.id);
      clock.advance(HOUR + 1000);
      const anew = await openIncident('operator', key, 'expiring', ['idem-ttl']).expect(201);
      assert.notEqual(anew.body.id, first.body.id);
      assert.equal(anew.headers['idempotent-replayed'], undefined);
      assert.equal(await count('incidents', { title: 'expiring' }), 2);
      // The housekeeping purge (the hourly job, which may get there first) deletes what expired: the API's keys only.
      await svc.db('idempotency_keys').insert({
        scope: 'token:tok_x:dev-x',
        key: 'enroll-key',
        request_hash: Buffer.alloc(32),
        state: 'in-progress',
        created_at: clock.now(),
      });
      clock.advance(25 * HOUR);
      await svc.apiIdempotency.purgeApiKeys(24 * HOUR);
      assert.equal(await count('idempotency_keys', { key }), 0);
      assert.equal(await count('idempotency_keys', { key: 'enroll-key' }), 1, 'enrollment’s keys are not the API’s to purge');
    });
  });
}

describe('the CLI’s API client and Idempotency-Key', () => {
  it('sends a key per state-changing request of an invocation, the same one when it retries, and none on GET', async () => {
    const seen: { method: string; key: string | undefined }[] = [];
    let failNext = 1;
    const server = await listenOnLoopback((req, res) => {
      seen.push({ method: req.method!, key: req.headers['idempotency-key'] as string | undefined });
      req.resume();
      if (req.method === 'POST' && failNext > 0) {
        failNext--;
        res.writeHead(503, { 'Content-Type': 'application/problem+json', 'Retry-After': '1' });
        res.end(JSON.stringify({ title: 'Service unavailable', status: 503 }));
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{}');
    });
    try {
      const waited: number[] = [];
      const client = new ApiClient({ url: server.url, key: 'k', keySource: 'test' }, async (s) => {
        waited.push(s);
      });
      await client.post('/v1/devices', { id: 'a' });
      await client.post('/v1/devices', { id: 'b' });
      await client.get('/v1/devices');
      assert.deepEqual(waited, [1]);
      assert.deepEqual(
        seen.map((s) => s.method),
        ['POST', 'POST', 'POST', 'GET'],
      );
      assert.ok(seen[0]!.key && /^[!-~]{1,255}$/.test(seen[0]!.key));
      assert.equal(seen[1]!.key, seen[0]!.key, 'the retry sends the same key');
      assert.notEqual(seen[2]!.key, seen[0]!.key, 'the next request has its own');
      assert.equal(seen[3]!.key, undefined);
      // Another invocation (another client) has other keys.
      const other = new ApiClient({ url: server.url, key: 'k', keySource: 'test' });
      await other.post('/v1/devices', { id: 'c' });
      assert.ok(![seen[0]!.key, seen[2]!.key].includes(seen[4]!.key));
      // A 503 that persists is the command's answer after the retries.
      failNext = 10;
      await assert.rejects(
        new ApiClient({ url: server.url, key: 'k', keySource: 'test' }, async () => undefined).post('/v1/devices', { id: 'd' }),
        (e: unknown) => e instanceof ApiError && e.status === 503,
      );
    } finally {
      await server.close();
    }
  });
});
