import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { p256Csr, signedRenewalAuth } from '../helpers/csr.js';
import { listenOnLoopback, jsonCaller } from '../helpers/http.js';
import { runAsync } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { ManualClock } from '../../src/shared/clock.js';
import type { Role } from '../../src/access/api-keys.js';

/**
 * Issue 23, item 6: one party's failures don't lock out another. Each test reproduces a lock-out
 * that worked before: a credential with no claim to a device putting it on hold, and an address
 * block (or a TLS-terminating proxy's one address) refusing requests that carry a valid credential.
 */
interface EventItem {
  kind: string;
  source: string | null;
  subject: string | null;
  details: Record<string, unknown>;
}

const UNKNOWN_TOKEN = () => `mqet_et_${randomBytes(10).toString('hex')}_${randomBytes(32).toString('base64url')}`;
const PROXY_ENV = { TRUSTED_PROXIES: '127.0.0.1/32, 10.0.0.0/8, ::1/128' };

for (const target of dbTargets) {
  describe(`trust: one party's failures don't lock out another, on ${target.name}`, { skip: target.skip ?? toolSkip('curl') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let keys: Record<Role, string>;
    let http: { url: string; close(): Promise<void> };
    const clock = new ManualClock(new Date());

    const call = jsonCaller(() => http.url);
    const asAdmin = (method: string, path: string, body?: unknown) => call(method, path, body, { Authorization: `Bearer ${keys.admin}` });
    const enroll = (token: string, cn: string, headers: Record<string, string> = {}) =>
      call('POST', '/v1/enroll', { csr: p256Csr(cn).pem }, { Authorization: `Bearer ${token}`, ...headers });
    const token = async (body: Record<string, unknown>) => {
      const r = await asAdmin('POST', '/v1/enrollment-tokens', body);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return { token: r.body.token as string, id: r.body.id as string };
    };
    const register = async (id: string, lot?: string) =>
      assert.equal((await asAdmin('POST', '/v1/devices', { id, kind: 'client', ...(lot ? { lot } : {}) })).status, 201);
    /** A device of `lot`, enrolled with its own token: active, with a current certificate. */
    const enrolled = async (id: string, lot?: string, headers: Record<string, string> = {}) => {
      await register(id, lot);
      const csr = p256Csr(id);
      const r = await call(
        'POST',
        '/v1/enroll',
        { csr: csr.pem },
        { Authorization: `Bearer ${(await token({ deviceId: id })).token}`, ...headers },
      );
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return { serial: r.body.serial as string, certificate: r.body.certificate as string, key: csr.privateKey };
    };
    const events = async (query: Record<string, string>): Promise<EventItem[]> => {
      const r = await asAdmin('GET', `/v1/events?${new URLSearchParams(query)}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.items;
    };
    /** Each test starts with every detection window of the one before behind it. */
    const freshWindows = () => clock.advance(15 * 60_000);

    before(async () => {
      ({ svc, keys } = await makeApiService(target, { clock, env: PROXY_ENV }));
      http = await listenOnLoopback(createHttpHandler(svc, { validateResponses: true }));
    });
    after(async () => {
      await http?.close();
      await svc?.dispose();
    });

    it('a lot token for lot L1 naming a device of lot L2 does not put the L2 device on hold: the refusals count against the token', async () => {
      freshWindows();
      const victim = await enrolled('tl-l2-dev', 'TL-L2');
      await register('tl-l1-dev', 'TL-L1');
      const l1 = await token({ lot: 'TL-L1' });
      for (let i = 0; i < 6; i++) assert.equal((await enroll(l1.token, 'tl-l2-dev')).status, 403);
      assert.equal(
        (await asAdmin('GET', '/v1/devices/tl-l2-dev')).body.status,
        'active',
        'the L2 device was held by refusals of a token that cannot enroll it',
      );
      assert.equal((await asAdmin('GET', `/v1/certificates/${victim.serial}`)).body.status, 'issued');
      assert.equal((await events({ kind: 'identity.repeated-failures', subject: 'tl-l2-dev' })).length, 0);
      const refused = await events({ kind: 'enrollment.refused', subject: `enrollment-token:${l1.id}` });
      assert.equal(refused.length, 6, 'each refusal is counted against the token');
      assert.equal(refused[0]!.details.deviceId, 'tl-l2-dev');
    });

    it('a used-up lot token naming a device of its own lot does not put that device on hold', async () => {
      freshWindows();
      const victim = await enrolled('tl-l3-b', 'TL-L3');
      await register('tl-l3-a', 'TL-L3');
      const lot = await token({ lot: 'TL-L3', maxUses: 1 });
      assert.equal((await enroll(lot.token, 'tl-l3-a')).status, 201);
      for (let i = 0; i < 6; i++) assert.equal((await enroll(lot.token, 'tl-l3-b')).status, 403);
      assert.equal((await asAdmin('GET', '/v1/devices/tl-l3-b')).body.status, 'active', 'a used-up token held a device');
      assert.equal((await asAdmin('GET', `/v1/certificates/${victim.serial}`)).body.status, 'issued');
    });

    it("a device's own credential asking for what it may not have still puts it on hold", async () => {
      freshWindows();
      await register('tl-own');
      const own = await token({ deviceId: 'tl-own', maxUses: 10 });
      const first = await enroll(own.token, 'tl-own');
      assert.equal(first.status, 201);
      for (let i = 0; i < 5; i++) assert.equal((await enroll(own.token, 'tl-other')).status, 403);
      assert.equal((await asAdmin('GET', '/v1/devices/tl-own')).body.status, 'suspended');
    });

    it('an address blocked after ten bad requests still enrolls with a valid token and renews with a valid certificate; invalid credentials stay refused', async () => {
      freshWindows();
      const renewer = await enrolled('tl-direct-renew');
      await register('tl-direct-1');
      for (let i = 0; i < 10; i++) assert.equal((await enroll(UNKNOWN_TOKEN(), 'tl-x')).status, 401);
      assert.equal((await enroll(UNKNOWN_TOKEN(), 'tl-x')).status, 429, 'the address is blocked');
      assert.equal((await call('POST', '/v1/enroll', { csr: p256Csr('tl-x').pem })).status, 429, 'so is a request without a credential');
      const valid = await enroll((await token({ deviceId: 'tl-direct-1' })).token, 'tl-direct-1');
      assert.equal(valid.status, 201, JSON.stringify(valid.body));
      const next = p256Csr('tl-direct-renew');
      const renewed = await call(
        'POST',
        '/v1/renew',
        { csr: next.pem },
        { Authorization: signedRenewalAuth(renewer.certificate, renewer.key, clock.now().toISOString(), next.der) },
      );
      assert.equal(renewed.status, 201, JSON.stringify(renewed.body));
      assert.equal((await enroll(UNKNOWN_TOKEN(), 'tl-x')).status, 429, 'the block still refuses invalid credentials');
    });

    it('behind a trusted proxy, a failing client blocks itself, not the fleet; a blocked client with a valid credential still enrolls and renews', async () => {
      freshWindows();
      const bad = { 'X-Forwarded-For': '198.51.100.7' };
      const good = { 'X-Forwarded-For': '198.51.100.8' };
      const renewer = await enrolled('tl-renew', undefined, bad);
      await register('tl-fleet-1');
      await register('tl-blocked-1');
      for (let i = 0; i < 10; i++) assert.equal((await enroll(UNKNOWN_TOKEN(), 'tl-x', bad)).status, 401);
      const blocked = await enroll(UNKNOWN_TOKEN(), 'tl-x', bad);
      assert.equal(blocked.status, 429, 'the failing client is blocked');
      assert.ok(Number(blocked.headers.get('retry-after')) > 0);
      const [tripped] = await events({ kind: 'source.blocked' });
      assert.equal(tripped?.source, '198.51.100.7', 'the block names the client, not the proxy');

      // Another client behind the same proxy is not blocked.
      assert.equal((await enroll((await token({ deviceId: 'tl-fleet-1' })).token, 'tl-fleet-1', good)).status, 201);
      // The blocked client itself, with a valid enrollment token: enrolled.
      const valid = await enroll((await token({ deviceId: 'tl-blocked-1' })).token, 'tl-blocked-1', bad);
      assert.equal(valid.status, 201, JSON.stringify(valid.body));
      // And with a valid device certificate (a signed renewal).
      const next = p256Csr('tl-renew');
      const renewed = await call(
        'POST',
        '/v1/renew',
        { csr: next.pem },
        { Authorization: signedRenewalAuth(renewer.certificate, renewer.key, clock.now().toISOString(), next.der), ...bad },
      );
      assert.equal(renewed.status, 201, JSON.stringify(renewed.body));
      // The block still refuses the client's invalid credentials.
      assert.equal((await enroll(UNKNOWN_TOKEN(), 'tl-x', bad)).status, 429);
    });

    it('X-Forwarded-For is believed only from a trusted proxy, and the client is its right-most untrusted hop', async () => {
      freshWindows();
      const at = async (query: string) => (await events({ kind: 'enrollment.token-invalid', source: query })).length;
      // Through the trusted proxy, past a second trusted hop (10.0.0.0/8): the address before it.
      assert.equal((await enroll(UNKNOWN_TOKEN(), 'tl-x', { 'X-Forwarded-For': '203.0.113.66, 203.0.113.50, 10.1.2.3' })).status, 401);
      assert.equal(await at('203.0.113.50'), 1);
      assert.equal(await at('203.0.113.66'), 0, 'a hop the client wrote itself is not believed');
      // From a peer that is no trusted proxy, the header is the client's own claim: ignored.
      const port = new URL(http.url).port;
      const r = await runAsync('curl', [
        '-s',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '--interface',
        '127.0.0.2',
        '-H',
        'X-Forwarded-For: 203.0.113.99',
        '-H',
        `Authorization: Bearer ${UNKNOWN_TOKEN()}`,
        '-H',
        'Content-Type: application/json',
        '--data',
        JSON.stringify({ csr: p256Csr('tl-x').pem }),
        `http://127.0.0.1:${port}/v1/enroll`,
      ]);
      assert.equal(r.stdout, '401');
      assert.equal(await at('203.0.113.99'), 0);
      assert.equal(await at('127.0.0.2'), 1);
      // The API's own address checks go by the same client: a wrong API key through the proxy is the client's.
      const wrongKey = await call('GET', '/v1/cas', undefined, {
        Authorization: `Bearer mqca_ak_00000000000000000000_${'A'.repeat(43)}`,
        'X-Forwarded-For': '203.0.113.77',
      });
      assert.equal(wrongKey.status, 401);
      assert.equal((await events({ kind: 'auth.failed', source: '203.0.113.77' })).length, 1);
    });
  });
}
