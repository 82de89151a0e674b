import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { listenOnLoopback } from '../helpers/http.js';
import { p256Csr } from '../helpers/csr.js';
import { runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { envSkip, toolSkip } from '../helpers/tools.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { createPkiHandler, type PkiSource } from '../../src/http/pki/handler.js';
import { ManualClock } from '../../src/shared/clock.js';
import type { OcspAnswer } from '../../src/revoke/ocsp-responder.js';
import type { Role } from '../../src/access/api-keys.js';
import { Redis } from 'ioredis';
import { MemoryRateLimiter, RedisRateLimiter } from '../../src/detect/rate-limits.js';

const pglite = dbTargets[0]!;

/** GET /v1/cas from a given loopback address with a given key, by curl: the status and the Retry-After header. */
async function curlFrom(
  url: string,
  from: string,
  key: string,
  path = '/v1/cas',
): Promise<{ status: number; retryAfter: string | undefined; body: string }> {
  const r = await runAsync('curl', ['-s', '-D', '-', '--interface', from, '-H', `Authorization: Bearer ${key}`, `${url}${path}`]);
  const [head, body] = r.stdout.split('\r\n\r\n');
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head!)![1]), retryAfter: /^retry-after: (\S+)/im.exec(head!)?.[1], body: body ?? '' };
}

const rateLimitedCount = async (svc: Service, scope: string) => {
  const m = (await svc.metrics.registry.getSingleMetric('mqttca_rate_limited_total')!.get()).values.find((v) => v.labels.scope === scope);
  return m?.value ?? 0;
};

describe(
  'rate limits on the API (per address, per API key) and on enrollment (per address)',
  { skip: pglite.skip ?? toolSkip('curl') },
  () => {
    let svc: Service & { dispose(): Promise<void> };
    let keys: Record<Role, string>;
    let http: { url: string; close(): Promise<void> };
    const clock = new ManualClock(new Date());

    before(async () => {
      // Rates so low that nothing refills while the test runs: what is allowed is exactly the burst.
      ({ svc, keys } = await makeApiService(pglite, {
        clock,
        env: { API_RATE_PER_SOURCE: '0.001/6', API_RATE_PER_KEY: '0.001/4', ENROLL_RATE_PER_SOURCE: '0.001/2' },
      }));
      http = await listenOnLoopback(createHttpHandler(svc, { validateResponses: true }));
    });
    after(async () => {
      await http?.close();
      await svc?.dispose();
    });

    it('refuses an address over its rate with 429 problem+json and Retry-After, whatever keys it uses; other addresses go on', async () => {
      for (const key of [keys.admin, keys.auditor, keys.provisioner, keys.admin, keys.auditor, keys.provisioner])
        assert.equal((await curlFrom(http.url, '127.0.0.5', key)).status, 200);
      const over = await curlFrom(http.url, '127.0.0.5', keys.operator);
      assert.equal(over.status, 429);
      assert.ok(Number(over.retryAfter) >= 1, `Retry-After ${over.retryAfter}`);
      const problem = JSON.parse(over.body);
      assert.equal(problem.status, 429);
      assert.match(problem.detail, /from this address/);
      // A wrong key from the same address is refused by the address's limit before the key is looked at.
      assert.equal((await curlFrom(http.url, '127.0.0.5', 'mqca_ak_00000000000000000000_' + 'A'.repeat(43))).status, 429);
      assert.equal((await curlFrom(http.url, '127.0.0.6', keys.operator)).status, 200);
      assert.equal(await rateLimitedCount(svc, 'api-source'), 2);
    });

    it('refuses an API key over its rate from every address', async () => {
      // admin has used 2 of its 4 in the test before.
      assert.equal((await curlFrom(http.url, '127.0.0.7', keys.admin)).status, 200);
      assert.equal((await curlFrom(http.url, '127.0.0.8', keys.admin)).status, 200);
      const over = await curlFrom(http.url, '127.0.0.9', keys.admin);
      assert.equal(over.status, 429);
      assert.match(JSON.parse(over.body).detail, /with this API key/);
      assert.equal((await curlFrom(http.url, '127.0.0.9', keys.operator)).status, 200, 'another key from the same address');
      assert.equal(await rateLimitedCount(svc, 'api-key'), 1);
    });

    it('refuses enrollments from an address over its rate: 429, nothing issued, no token use spent', async () => {
      // Each key has a request or two left of its burst of 4: the provisioner imports and makes the token, the auditor reads it back.
      const provisioner = { Authorization: `Bearer ${keys.provisioner}`, 'Content-Type': 'application/json' };
      const post = (path: string, body: unknown, headers: Record<string, string>) =>
        fetch(`${http.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
      assert.equal(
        (
          await post(
            '/v1/devices/import',
            { lot: 'RL-LOT', devices: ['rl-1', 'rl-2', 'rl-3'].map((id) => ({ id, kind: 'client' })) },
            provisioner,
          )
        ).status,
        201,
      );
      const created = await post('/v1/enrollment-tokens', { lot: 'RL-LOT', maxUses: 3 }, provisioner);
      assert.equal(created.status, 201);
      const t = (await created.json()) as { id: string; token: string };
      const enroll = (cn: string) =>
        post('/v1/enroll', { csr: p256Csr(cn).pem }, { Authorization: `Bearer ${t.token}`, 'Content-Type': 'application/json' });
      assert.equal((await enroll('rl-1')).status, 201);
      assert.equal((await enroll('rl-2')).status, 201);
      const certsBefore = Number((await svc.db('certificates').count({ n: '*' }).first())!.n);
      const over = await enroll('rl-3');
      assert.equal(over.status, 429);
      assert.ok(Number(over.headers.get('retry-after')) >= 1);
      assert.match(((await over.json()) as { detail: string }).detail, /too many enrollments from this address/);
      assert.equal(Number((await svc.db('certificates').count({ n: '*' }).first())!.n), certsBefore);
      const token = (await (
        await fetch(`${http.url}/v1/enrollment-tokens/${t.id}`, { headers: { Authorization: `Bearer ${keys.auditor}` } })
      ).json()) as { uses: number };
      assert.equal(token.uses, 2);
      assert.equal(await rateLimitedCount(svc, 'enroll-source'), 1);
    });
  },
);

describe(
  'rate limits shared across replicas through Redis',
  { skip: pglite.skip ?? envSkip('REDIS_URL', 'the tests of rate limits shared through Redis are') ?? toolSkip('curl') },
  () => {
    const env = { API_RATE_PER_SOURCE: '0.001/3', API_RATE_PER_KEY: '0', JOBS_PREFIX: `rl-${randomBytes(4).toString('hex')}` };

    it('two services on one Redis draw on the same buckets', async () => {
      const a = await makeApiService(pglite, { env: { ...env, REDIS_URL: process.env.REDIS_URL! } });
      const b = await makeApiService(pglite, { env: { ...env, REDIS_URL: process.env.REDIS_URL! } });
      const ha = await listenOnLoopback(createHttpHandler(a.svc));
      const hb = await listenOnLoopback(createHttpHandler(b.svc));
      try {
        assert.equal((await curlFrom(ha.url, '127.0.1.1', a.keys.admin)).status, 200);
        assert.equal((await curlFrom(hb.url, '127.0.1.1', b.keys.admin)).status, 200);
        assert.equal((await curlFrom(ha.url, '127.0.1.1', a.keys.admin)).status, 200);
        assert.equal((await curlFrom(hb.url, '127.0.1.1', b.keys.admin)).status, 429, 'the fourth request, on the other replica');
        assert.equal((await curlFrom(ha.url, '127.0.1.1', a.keys.admin)).status, 429);
      } finally {
        await ha.close();
        await hb.close();
        await a.svc.dispose();
        await b.svc.dispose();
      }
    });

    it('with Redis unreachable, each process limits on its own and nothing fails', async () => {
      // The limiter alone, on a port nothing listens on (a whole service there would also point its job queues at it).
      const dead = new Redis('redis://127.0.0.1:1', {
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        commandTimeout: 250,
        lazyConnect: true,
      });
      const errors: unknown[] = [];
      dead.on('error', () => undefined);
      const limiter = new RedisRateLimiter(dead, env.JOBS_PREFIX, new MemoryRateLimiter(), (e) => errors.push(e));
      try {
        const limit = { perSecond: 0.001, burst: 3 };
        const got = [];
        for (let i = 0; i < 4; i++) got.push((await limiter.take('api-source:127.0.1.2', limit)).allowed);
        assert.deepEqual(got, [true, true, true, false]);
        assert.equal(errors.length, 1, 'said once, not per request');
      } finally {
        dead.disconnect();
      }
    });
  },
);

describe(
  'the public PKI endpoints stay open but bounded: work in flight is capped',
  { skip: toolSkip('openssl') ?? toolSkip('curl') },
  () => {
    it('beyond the bound OCSP answers tryLater (as openssl reads it) and CRLs 503, both with Retry-After; capacity returns as work ends', async () => {
      const pending: ((a: OcspAnswer) => void)[] = [];
      let refused = 0;
      const source: PkiSource = {
        caCertificateDer: async () => Buffer.from('30030201', 'hex'),
        currentCrl: async () => undefined,
        currentDeltaCrl: async () => undefined,
        allCrls: async () => [],
        crlDer: async () => undefined,
        ocsp: () => new Promise<OcspAnswer>((resolve) => pending.push(resolve)),
      };
      const handler = createPkiHandler(source, {
        ocspMaxAgeSeconds: 60,
        clock: new ManualClock(new Date()),
        maxInFlight: 1,
        onRefused: () => refused++,
      });
      const http = await listenOnLoopback((req, res) => {
        if (!handler(req, res)) res.writeHead(404).end();
      });
      const dir = tempDir();
      try {
        const ocspPost = () =>
          fetch(`${http.url}/pki/ocsp`, { method: 'POST', headers: { 'Content-Type': 'application/ocsp-request' }, body: randomBytes(30) });
        const held = ocspPost(); // held in flight until the test answers it
        for (let i = 0; i < 100 && pending.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
        assert.equal(pending.length, 1);

        const busy = await ocspPost();
        assert.equal(busy.status, 200);
        assert.equal(busy.headers.get('retry-after'), '1');
        const file = writeTemp(dir, 'busy.der', Buffer.from(await busy.arrayBuffer()));
        const text = await runAsync('openssl', ['ocsp', '-respin', file, '-resp_text', '-noverify']);
        assert.match(text.stdout + text.stderr, /tryLater \(3\)|trylater \(3\)/i);
        const crl = await runAsync('curl', ['-s', '-D', '-', '-o', '/dev/null', `${http.url}/pki/ca/x.pem`]);
        assert.match(crl.stdout, /^HTTP\/1\.1 503/);
        assert.match(crl.stdout, /^retry-after: 1/im);
        assert.equal(refused, 2);

        const { encodeOcspError } = await import('../../src/ca/x509/ocsp-response.js');
        pending[0]!({ der: encodeOcspError('unauthorized'), error: 'unauthorized' });
        assert.equal((await held).status, 200);
        const ca = await runAsync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', `${http.url}/pki/ca/x.pem`]);
        assert.equal(ca.stdout, '200', 'capacity is back once the held request is answered');
      } finally {
        await http.close();
      }
    });
  },
);
