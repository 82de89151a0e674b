import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { p256Csr } from '../helpers/csr.js';
import { runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { listenOnLoopback, writeCaFiles, jsonCaller } from '../helpers/http.js';
import { toolSkip } from '../helpers/tools.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { loadConfig } from '../../src/config/config.js';
import { ManualClock } from '../../src/shared/clock.js';
import type { Role } from '../../src/access/api-keys.js';

interface EventItem {
  id: number;
  kind: string;
  severity: string;
  source: string | null;
  subject: string | null;
  details: Record<string, unknown> & { responses?: Record<string, Record<string, unknown>> };
}

const UNKNOWN_TOKEN = () => `mqet_et_${randomBytes(10).toString('hex')}_${randomBytes(32).toString('base64url')}`;

for (const target of dbTargets) {
  describe(
    `detection: security events, their list and stream, and the automatic responses, on ${target.name}`,
    { skip: target.skip ?? toolSkip('openssl') ?? toolSkip('curl') },
    () => {
      let svc: Service & { dispose(): Promise<void> };
      let keys: Record<Role, string>;
      let http: { url: string; close(): Promise<void> };
      let url: string;
      const clock = new ManualClock(new Date());
      const dir = tempDir();
      let files: { root: string; issuing: string };

      const call = jsonCaller(() => url);
      const asAdmin = (method: string, path: string, body?: unknown) => call(method, path, body, { Authorization: `Bearer ${keys.admin}` });
      const enroll = (token: string, cn: string) =>
        call('POST', '/v1/enroll', { csr: p256Csr(cn).pem }, { Authorization: `Bearer ${token}` });
      const events = async (query: Record<string, string>): Promise<EventItem[]> => {
        const r = await asAdmin('GET', `/v1/events?${new URLSearchParams(query)}`);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        return r.body.items;
      };
      const token = async (body: Record<string, unknown>) => {
        const r = await asAdmin('POST', '/v1/enrollment-tokens', body);
        assert.equal(r.status, 201, JSON.stringify(r.body));
        return r.body.token as string;
      };
      const register = async (id: string, lot?: string) =>
        assert.equal((await asAdmin('POST', '/v1/devices', { id, kind: 'client', ...(lot ? { lot } : {}) })).status, 201);
      /** Until `check` holds (events recorded in the background), at most ~5 s. */
      const eventually = async <T>(check: () => Promise<T | undefined>): Promise<T> => {
        for (let i = 0; i < 100; i++) {
          const v = await check();
          if (v !== undefined) return v;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error('timed out');
      };

      before(async () => {
        let issuingId: string;
        ({ svc, keys, issuingId } = await makeApiService(target, { clock }));
        http = await listenOnLoopback(createHttpHandler(svc, { validateResponses: true }));
        url = http.url;
        files = await writeCaFiles(svc, issuingId, dir);
      });
      after(async () => {
        await http?.close();
        await svc?.dispose();
      });

      it('a device that keeps asking for what it may not have is held: certificateHold, suspended, seen so by openssl ocsp', async () => {
        await register('det-0001');
        const t = await token({ deviceId: 'det-0001', maxUses: 10 });
        const first = await enroll(t, 'det-0001');
        assert.equal(first.status, 201);
        for (let i = 0; i < 5; i++) assert.equal((await enroll(t, 'det-0002')).status, 403);
        const [tripped] = await events({ kind: 'identity.repeated-failures' });
        assert.ok(tripped, 'no identity.repeated-failures event');
        assert.equal(tripped.subject, 'det-0001');
        assert.equal(tripped.details.rule, 'failing-identity');
        assert.deepEqual(tripped.details.responses!['suspend-device'], { held: first.body.serial, status: 'suspended' });
        assert.equal((await asAdmin('GET', '/v1/devices/det-0001')).body.status, 'suspended');
        const cert = writeTemp(dir, 'det-0001.pem', first.body.certificate);
        const r = await runAsync('openssl', [
          'ocsp',
          '-issuer',
          files.issuing,
          '-url',
          `${url}/pki/ocsp`,
          '-CAfile',
          files.root,
          '-no_nonce',
          '-cert',
          cert,
        ]);
        assert.match(r.stdout, /: revoked/, r.stdout + r.stderr);
        assert.match(r.stdout, /Reason: certificateHold/);
        // The audit log says who held it.
        const audit = (await asAdmin('GET', `/v1/audit?action=certificate.revoked&targetId=${first.body.serial}`)).body.items;
        assert.equal(audit[0].actor, 'system:detection');
      });

      it('a broker is never held automatically: that would cut off every client on it', async () => {
        assert.equal((await asAdmin('POST', '/v1/devices', { id: 'det-broker-1', kind: 'broker' })).status, 201);
        const t = await token({ deviceId: 'det-broker-1', dnsNames: ['mqtt.det.example'], maxUses: 10 });
        const csr = (dns: string) => p256Csr('det-broker-1', { sans: [{ type: 'dns', value: dns }] }).pem;
        const broker = (dns: string) => call('POST', '/v1/enroll', { csr: csr(dns) }, { Authorization: `Bearer ${t}` });
        const issued = await broker('mqtt.det.example');
        assert.equal(issued.status, 201);
        for (let i = 0; i < 5; i++) assert.equal((await broker('mqtt.elsewhere.example')).status, 403);
        const [tripped] = await events({ kind: 'identity.repeated-failures', subject: 'det-broker-1' });
        assert.deepEqual(tripped?.details.responses!['suspend-device'], { held: null, status: 'a broker: not held automatically' });
        assert.equal((await asAdmin('GET', '/v1/devices/det-broker-1')).body.status, 'active');
        assert.equal((await asAdmin('GET', `/v1/certificates/${issued.body.serial}`)).body.status, 'issued');
        // A success from the address (a new token: one enrollment per device per token): its failures so far no longer count towards a block.
        const again = await token({ deviceId: 'det-broker-1', dnsNames: ['mqtt.det.example'] });
        assert.equal(
          (await call('POST', '/v1/enroll', { csr: csr('mqtt.det.example') }, { Authorization: `Bearer ${again}` })).status,
          201,
        );
      });

      it('OCSP queries about a revoked certificate: one event per certificate, naming its device and the broker that asked', async () => {
        // det-0001's certificate is on hold (the test before). Two brokers' polls, one with a nonce (signed on the spot).
        const cert = `${dir}/det-0001.pem`;
        for (const extra of [['-no_nonce'], []]) {
          const r = await runAsync('openssl', [
            'ocsp',
            '-issuer',
            files.issuing,
            '-url',
            `${url}/pki/ocsp`,
            '-CAfile',
            files.root,
            ...extra,
            '-cert',
            cert,
          ]);
          assert.match(r.stdout, /: revoked/);
        }
        const seen = await eventually(async () => {
          const e = await events({ kind: 'ocsp.revoked-queried' });
          return e.length ? e : undefined;
        });
        await new Promise((r) => setTimeout(r, 200));
        assert.equal((await events({ kind: 'ocsp.revoked-queried' })).length, 1, 'one event, however many polls');
        assert.equal(seen[0]!.subject, 'det-0001');
        assert.equal(seen[0]!.source, '127.0.0.1');
        assert.equal(seen[0]!.details.reason, 'certificateHold');
      });

      it('a CSR naming a device not in the inventory is its own event', async () => {
        await register('det-lot-1', 'DET-LOT');
        const lot = await token({ lot: 'DET-LOT', maxUses: 5 });
        const r = await enroll(lot, 'det-ghost-7');
        assert.equal(r.status, 403);
        const [e] = await events({ kind: 'enrollment.unknown-identity' });
        assert.equal(e?.subject, 'det-ghost-7');
        assert.equal(e?.source, '127.0.0.1');
        // A success from the address: its failures so far no longer count towards a block.
        assert.equal((await enroll(lot, 'det-lot-1')).status, 201);
      });

      it('an API key used from a new address is an event; a wrong key is auth.failed', async () => {
        const curl = (from: string, key: string) =>
          runAsync('curl', [
            '-s',
            '-o',
            '/dev/null',
            '-w',
            '%{http_code}',
            '--interface',
            from,
            '-H',
            `Authorization: Bearer ${key}`,
            `${url}/v1/cas`,
          ]);
        const operatorId = (await asAdmin('GET', '/v1/api-keys')).body.items.find((k: { role: string }) => k.role === 'operator')
          .id as string;
        assert.equal((await curl('127.0.0.1', keys.operator)).stdout, '200');
        assert.equal((await events({ kind: 'apikey.new-address' })).length, 0, "a key's first address is only remembered");
        assert.equal((await curl('127.0.0.2', keys.operator)).stdout, '200');
        assert.equal((await curl('127.0.0.2', keys.operator)).stdout, '200');
        const fresh = await events({ kind: 'apikey.new-address' });
        assert.equal(fresh.length, 1);
        assert.equal(fresh[0]!.subject, operatorId);
        assert.equal(fresh[0]!.source, '127.0.0.2');
        assert.equal(fresh[0]!.details.addressesBefore, 1);

        const wrong = keys.operator.slice(0, -4) + 'AAAA';
        assert.equal((await curl('127.0.0.3', wrong)).stdout, '401');
        const [failed] = await events({ kind: 'auth.failed', source: '127.0.0.3' });
        assert.equal(failed?.subject, operatorId, 'an issued-format key names its id (not a secret)');
      });

      it('token guessing opens an incident; ten failures block the address (429, doubling) but not a valid token or API key', async () => {
        const valid = await token({ deviceId: 'det-lot-1', maxUses: 3 });
        for (let i = 0; i < 5; i++) assert.equal((await enroll(UNKNOWN_TOKEN(), 'det-lot-1')).status, 401);
        const [guess] = await events({ kind: 'enrollment.token-guessing' });
        assert.ok(guess, 'no enrollment.token-guessing event');
        assert.equal(guess.severity, 'critical');
        assert.equal(guess.source, '127.0.0.1');
        const incidentId = guess.details.responses!['open-incident']!.incidentId as string;
        const incident = (await asAdmin('GET', `/v1/incidents/${incidentId}`)).body;
        assert.equal(incident.kind, 'credential-leak');
        assert.equal(incident.status, 'open');
        assert.equal(incident.openedBy, 'system:detection');
        assert.match(incident.title, /token-guessing from 127\.0\.0\.1/);

        for (let i = 0; i < 5; i++) assert.equal((await enroll(UNKNOWN_TOKEN(), 'det-lot-1')).status, 401);
        const [blocked] = await events({ kind: 'source.blocked' });
        assert.equal(blocked?.source, '127.0.0.1');
        assert.equal(blocked?.details.retryAfterSeconds, 10);
        const refused = await enroll(UNKNOWN_TOKEN(), 'det-lot-1');
        assert.equal(refused.status, 429);
        assert.equal(refused.headers.get('retry-after'), '10');
        assert.equal(refused.headers.get('content-type'), 'application/problem+json; charset=utf-8');
        // A valid enrollment token from the blocked address still enrolls (a gateway's other devices).
        assert.equal((await enroll(valid, 'det-lot-1')).status, 201);
        // A wrong API key from the address: 429 too, and not recorded again; a valid key still works.
        const failedBefore = (await events({ kind: 'auth.failed', source: '127.0.0.1' })).length;
        assert.equal(
          (await call('GET', '/v1/cas', undefined, { Authorization: 'Bearer mqca_ak_00000000000000000000_' + 'A'.repeat(43) })).status,
          429,
        );
        assert.equal((await events({ kind: 'auth.failed', source: '127.0.0.1' })).length, failedBefore);
        assert.equal((await asAdmin('GET', '/v1/cas')).status, 200);
        // Once lifted, ten more failures block it for twice as long.
        clock.advance(10_001);
        for (let i = 0; i < 10; i++) assert.equal((await enroll(UNKNOWN_TOKEN(), 'det-lot-1')).status, 401);
        assert.equal((await enroll(UNKNOWN_TOKEN(), 'det-lot-1')).headers.get('retry-after'), '20');
        assert.equal((await events({ kind: 'enrollment.token-guessing' })).length, 1, 'one incident per address per cooldown');
        clock.advance(20_001);
        assert.equal((await enroll(UNKNOWN_TOKEN(), 'det-lot-1')).status, 401, 'lifted');
      });

      it('lists events by kind, severity, source and subject, a page at a time by cursor', async () => {
        const all = await events({ limit: '500' });
        assert.ok(all.length >= 30);
        for (let i = 1; i < all.length; i++) assert.ok(all[i - 1]!.id > all[i]!.id, 'newest first');
        const paged: number[] = [];
        let cursor: string | null = null;
        do {
          const r = await asAdmin('GET', `/v1/events?limit=7${cursor ? `&cursor=${cursor}` : ''}`);
          assert.equal(r.status, 200);
          paged.push(...r.body.items.map((e: EventItem) => e.id));
          cursor = r.body.nextCursor;
        } while (cursor);
        assert.deepEqual(
          paged,
          all.map((e) => e.id),
        );
        const two = await events({ kind: 'source.blocked,enrollment.token-guessing' });
        assert.deepEqual(new Set(two.map((e) => e.kind)), new Set(['source.blocked', 'enrollment.token-guessing']));
        assert.ok((await events({ severity: 'critical' })).every((e) => e.severity === 'critical'));
        assert.ok(
          (await events({ severity: 'warning' })).some((e) => e.severity === 'critical'),
          'warning and above',
        );
        assert.ok((await events({ source: '127.0.0.2' })).every((e) => e.source === '127.0.0.2'));
        assert.ok((await events({ subject: 'det-0001' })).length >= 6);
        for (const bad of ['cursor=nonsense', 'severity=loud', 'kind=Not%20A%20Kind', 'limit=0']) {
          const r = await asAdmin('GET', `/v1/events?${bad}`);
          assert.equal(r.status, 400, bad);
          assert.equal(r.headers.get('content-type'), 'application/problem+json; charset=utf-8');
        }
        assert.equal((await call('GET', '/v1/events', undefined, { Authorization: `Bearer ${keys.provisioner}` })).status, 403);
      });

      it("streams events as server-sent events (curl), from now or after a Last-Event-ID, including other replicas' events", async () => {
        const stream = (args: string[]) => {
          const p = spawn('curl', ['-sN', '-H', `Authorization: Bearer ${keys.auditor}`, ...args]);
          let out = '';
          p.stdout.on('data', (d: Buffer) => (out += d.toString()));
          return { text: () => out, stop: () => p.kill() };
        };
        const ids = (text: string) => [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
        const live = stream([`${url}/v1/events/stream?kind=enrollment.token-invalid,replica.test`]);
        await eventually(async () => (svc.eventFeed.size > 0 ? true : undefined));
        assert.equal((await enroll(UNKNOWN_TOKEN(), 'det-lot-1')).status, 401);
        // An event another replica committed: it reaches this stream by the feed's poll.
        await svc.db('security_events').insert({
          at: new Date(),
          kind: 'replica.test',
          severity: 'info',
          source: null,
          subject: 'elsewhere',
          request_id: null,
          details: '{}',
        });
        const text = await eventually(async () => (/event: replica\.test/.test(live.text()) ? live.text() : undefined));
        live.stop();
        assert.match(text, /^retry: 2000$/m);
        const frames = text.split('\n\n').filter((f) => f.startsWith('id: '));
        assert.equal(frames.length, 2, text);
        assert.match(frames[0]!, /^id: \d+\nevent: enrollment\.token-invalid\ndata: \{.*"kind":"enrollment\.token-invalid".*\}$/);
        const data = JSON.parse(frames[1]!.split('\ndata: ')[1]!);
        assert.equal(data.subject, 'elsewhere');

        // Resuming after the first: the second is sent again, nothing before it.
        const first = ids(text)[0]!;
        const resumed = stream(['-H', `Last-Event-ID: ${first}`, `${url}/v1/events/stream?kind=enrollment.token-invalid,replica.test`]);
        const again = await eventually(async () => (ids(resumed.text()).length ? resumed.text() : undefined));
        resumed.stop();
        assert.deepEqual(ids(again), [ids(text)[1]]);
        await eventually(async () => (svc.eventFeed.size === 0 ? true : undefined));

        const bad = await call('GET', '/v1/events/stream', undefined, {
          Authorization: `Bearer ${keys.auditor}`,
          'Last-Event-ID': 'yesterday',
        });
        assert.equal(bad.status, 400);
      });
    },
  );
}

describe('DETECTION_RULES', () => {
  const base = { MQTT_CA_KEK: randomBytes(32).toString('base64'), LOG_LEVEL: 'silent' };
  it('replaces the default rules, and a wrong rule stops the start with the reason', () => {
    const rules = [
      {
        name: 'quiet',
        on: ['auth.failed'],
        per: 'source',
        threshold: 3,
        windowSeconds: 60,
        raise: { kind: 'auth.guessing', severity: 'critical' },
        actions: ['block-source'],
      },
    ];
    const config = loadConfig({ ...base, DETECTION_RULES: JSON.stringify(rules) });
    assert.deepEqual(
      config.detectionRules.map((r) => [r.name, 'cooldownSeconds' in r ? r.cooldownSeconds : undefined, r.incidentKind]),
      [['quiet', 0, 'device-compromise']],
    );
    assert.ok(loadConfig(base).detectionRules.some((r) => r.name === 'failing-source'));
    for (const [bad, reason] of [
      ['not json', /not JSON/],
      [JSON.stringify([{ ...rules[0], per: 'subject' }]), /block-source needs per: source/],
      [JSON.stringify([{ ...rules[0], actions: ['suspend-device'] }]), /suspend-device needs per: subject/],
      [JSON.stringify([{ ...rules[0], on: ['auth.guessing'] }]), /may not count the kind it raises/],
      [JSON.stringify([rules[0], rules[0]]), /unique/],
      [JSON.stringify([{ ...rules[0], threshold: 0 }]), /DETECTION_RULES\.0\.threshold/],
      [JSON.stringify([{ ...rules[0], actions: ['reboot'] }]), /DETECTION_RULES\.0\.actions/],
    ] as const) {
      assert.throws(() => loadConfig({ ...base, DETECTION_RULES: bad }), reason);
    }
  });
});
