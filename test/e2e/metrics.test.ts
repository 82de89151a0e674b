import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { listenOnLoopback, writeCaFiles } from '../helpers/http.js';
import { toolSkip } from '../helpers/tools.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });

const PROM_CLIENT_LINT = /^mqttca_nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/;

/** A scrape's samples, keyed `name{labels as exposed}`. */
type Samples = Map<string, number>;

function samplesOf(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** The sum of the samples of `name` whose labels include every one of `labels` (0 when there is none). */
function value(s: Samples, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const [key, v] of s) {
    const brace = key.indexOf('{');
    if ((brace < 0 ? key : key.slice(0, brace)) !== name) continue;
    if (Object.entries(labels).every(([k, want]) => key.includes(`${k}="${want}"`))) sum += v;
  }
  return sum;
}

for (const target of dbTargets) {
  describe(`Prometheus /metrics on ${target.name}`, { skip: target.skip ?? toolSkip('promtool') ?? toolSkip('openssl') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let keys: Record<Role, string>;
    let http: { url: string; close(): Promise<void> };
    let url: string;
    const dir = tempDir();
    let files: { root: string; issuing: string };

    const scrape = async (): Promise<{ text: string; samples: Samples }> => {
      const res = await fetch(`${url}/metrics`, { headers: { Authorization: `Bearer ${keys.operator}` } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      const text = await res.text();
      return { text, samples: samplesOf(text) };
    };
    const ocsp = (cert: string, extra: string[]) =>
      runAsync('openssl', [
        'ocsp',
        '-issuer',
        files.issuing,
        '-url',
        `${url}/pki/ocsp`,
        '-CAfile',
        files.root,
        '-verify_other',
        files.issuing,
        ...extra,
        '-cert',
        cert,
      ]);

    before(async () => {
      let issuingId: string;
      ({ svc, keys, issuingId } = await makeApiService(target));
      http = await listenOnLoopback(createHttpHandler(svc));
      url = http.url;
      files = await writeCaFiles(svc, issuingId, dir);
    });
    after(async () => {
      await http?.close();
      await svc?.dispose();
    });

    it('scrapes as valid Prometheus text (promtool check metrics), and counts what the service did', async () => {
      const before0 = await scrape();

      // Issuance, counted by profile once committed.
      const certs = [];
      for (const name of ['metrics-a', 'metrics-b']) {
        const c = await svc.issuance.issue({ profile: 'device', deviceId: name, subjectPublicKeyInfo: p256() }, { actor: 'test' });
        certs.push({ serial: c.serial, file: writeTemp(dir, `${name}.pem`, toPem(c.der)) });
      }
      // A revocation through the REST API: counted by reason, its time to visibility observed, and its request timed under the route template.
      const revoke = await fetch(`${url}/v1/certificates/${certs[0]!.serial}/revoke`, {
        method: 'POST',
        body: JSON.stringify({ reason: 'keyCompromise' }),
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${keys.operator}` },
      });
      assert.equal(revoke.status, 200, await revoke.text());
      // OCSP as a broker asks: a revoked certificate pre-signed at revocation, one with a nonce (signed), a good one, and garbage.
      for (const [cert, extra, want] of [
        [certs[0]!.file, ['-no_nonce'], /: revoked/],
        [certs[0]!.file, [], /: revoked/],
        [certs[1]!.file, ['-no_nonce'], /: good/],
      ] as const) {
        const r = await ocsp(cert, [...extra]);
        assert.match(r.stdout + r.stderr, /Response verify OK/, r.stderr);
        assert.match(r.stdout, want);
      }
      const garbage = await fetch(`${url}/pki/ocsp`, {
        method: 'POST',
        body: randomBytes(40),
        headers: { 'Content-Type': 'application/ocsp-request' },
      });
      assert.equal(garbage.status, 200);
      // A refused enrollment: a security event, and a 401 on /v1/enroll.
      const refused = await fetch(`${url}/v1/enroll`, {
        method: 'POST',
        body: JSON.stringify({ csr: 'not a csr' }),
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer mqttca_et_${randomBytes(8).toString('hex')}` },
      });
      assert.ok(refused.status >= 400 && refused.status < 500, `status ${refused.status}`);

      await svc.crlWatch.check(); // its scheduled job, run now: the CRL gauges show its findings
      const after0 = await scrape();
      // An exposition that Prometheus's own tool parses and lints clean, but for three gauges of
      // prom-client's default process metrics, which that library names *_total.
      const check = spawnSync('promtool', ['check', 'metrics'], { input: after0.text, encoding: 'utf8' });
      const problems = `${check.stdout}${check.stderr}`.split('\n').filter((l) => l.trim() && !PROM_CLIENT_LINT.test(l));
      assert.deepEqual(problems, [], `promtool (exit ${check.status}):\n${check.stdout}${check.stderr}`);

      const delta = (name: string, labels?: Record<string, string>) =>
        value(after0.samples, name, labels) - value(before0.samples, name, labels);
      assert.equal(delta('mqttca_certificates_issued_total', { profile: 'device' }), 2);
      assert.equal(delta('mqttca_certificates_revoked_total', { reason: 'keyCompromise' }), 1);
      assert.equal(delta('mqttca_revocation_visible_seconds_count'), 1);
      assert.ok(value(after0.samples, 'mqttca_revocation_visible_seconds_sum') > 0);
      // Pre-signed at revocation: from memory, or from the shared store while PostgreSQL's change feed is still connecting (the cache is off until it is).
      assert.equal(
        delta('mqttca_ocsp_responses_total', { status: 'revoked', source: 'memory' }) +
          delta('mqttca_ocsp_responses_total', { status: 'revoked', source: 'stored' }),
        1,
      );
      assert.equal(delta('mqttca_ocsp_responses_total', { status: 'revoked', source: 'signed' }), 1);
      assert.equal(delta('mqttca_ocsp_responses_total', { status: 'good' }), 1);
      assert.equal(delta('mqttca_ocsp_responses_total', { status: 'malformedRequest', source: 'none' }), 1);
      assert.equal(delta('mqttca_security_events_total', { kind: 'enrollment.refused' }), 1);
      assert.equal(
        delta('mqttca_http_request_duration_seconds_count', { route: '/v1/certificates/:serial/revoke', method: 'POST', status: '200' }),
        1,
      );
      assert.equal(
        delta('mqttca_http_request_duration_seconds_count', { route: '/v1/enroll', method: 'POST', status: String(refused.status) }),
        1,
      );
      // The raw path (a serial) never becomes a label.
      assert.ok(!after0.text.includes(certs[0]!.serial), 'a serial appears in the metrics');
      // The CRL published by the revocation, and the job queues, read at scrape time.
      assert.ok(value(after0.samples, 'mqttca_crl_number') >= 1, 'no CRL number');
      assert.ok(value(after0.samples, 'mqttca_crl_age_seconds') < 60, 'the CRL is older than the revocation');
      assert.equal(value(after0.samples, 'mqttca_job_queue_up'), 1);
      assert.ok(
        [...after0.samples.keys()].some((k) => k.startsWith('mqttca_job_queue_jobs{')),
        'no job queue counts',
      );
    });
  });
}
