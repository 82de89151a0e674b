import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { ManualClock } from '../../src/shared/clock.js';
import { loadConfig, ConfigError } from '../../src/config/config.js';

const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/** This Update and Next Update as `openssl ocsp` prints them for one certificate. */
function window(out: string, certFile: string): { status: string; thisUpdate: number; nextUpdate: number } {
  const at = out.indexOf(`${certFile}: `);
  assert.ok(at >= 0, `no status for ${certFile} in:\n${out}`);
  const block = out.slice(at + certFile.length + 2).split(/\n(?=\S)/)[0]!;
  const m = /^(\w+)\n\s*This Update: (.+)\n\s*Next Update: (.+)/.exec(block);
  assert.ok(m, block);
  return { status: m[1]!, thisUpdate: Date.parse(m[2]!), nextUpdate: Date.parse(m[3]!) };
}

for (const target of dbTargets) {
  describe(`OCSP validity by profile on ${target.name}`, { skip: target.skip ?? toolSkip('openssl') }, () => {
    // Starts at the real time: openssl checks thisUpdate/nextUpdate against its own clock (5 minutes' leeway).
    const clock = new ManualClock(new Date());
    const dir = tempDir();
    const files: Record<string, string> = {};
    let svc: Service & { dispose(): Promise<void> };
    let server: Server;
    let url: string;

    before(async () => {
      const made = await makeApiService(target, { clock, env: { OCSP_BROKER_VALIDITY_MINUTES: '1' } });
      svc = made.svc;
      server = createServer(createHttpHandler(svc));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const cas = await svc.hierarchy.list();
      files.root = writeTemp(dir, 'root.pem', cas.find((c) => c.kind === 'root')!.certificate!);
      files.issuing = writeTemp(dir, 'issuing.pem', cas.find((c) => c.id === made.issuingId)!.certificate!);
      const broker = await svc.issuance.issue(
        { profile: 'broker', dnsNames: ['broker.example'], subjectPublicKeyInfo: p256() },
        { actor: 'test' },
      );
      files.broker = writeTemp(dir, 'broker.pem', toPem(broker.der));
      const device = await svc.issuance.issue({ profile: 'device', deviceId: 'dev-v1', subjectPublicKeyInfo: p256() }, { actor: 'test' });
      files.device = writeTemp(dir, 'device.pem', toPem(device.der));
    });
    after(async () => {
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
      await svc?.dispose();
    });

    const ask = async (name: string) => {
      const r = await runAsync('openssl', [
        'ocsp',
        '-issuer',
        files.issuing!,
        '-cert',
        files[name]!,
        '-url',
        `${url}/pki/ocsp`,
        '-CAfile',
        files.root!,
        '-verify_other',
        files.issuing!,
        '-no_nonce',
      ]);
      const out = r.stdout + r.stderr;
      assert.match(out, /Response verify OK/, out);
      return window(out, files[name]!);
    };

    it("a broker certificate's answer is valid for the broker validity (1 minute here), a device's for OCSP_VALIDITY_HOURS", async () => {
      const b = await ask('broker');
      assert.equal(b.status, 'good');
      assert.equal(b.nextUpdate - b.thisUpdate, MINUTE);
      const d = await ask('device');
      assert.equal(d.status, 'good');
      assert.equal(d.nextUpdate - d.thisUpdate, 24 * HOUR);
    });

    it("past the old answer's half-life a broker gets a new answer, the same one before it; a device keeps its answer", async () => {
      const first = await ask('broker');
      const device = await ask('device');
      clock.advance(10_000);
      assert.deepEqual(await ask('broker'), first, 'before the half-life: the same answer');
      clock.advance(21_000); // 31 s after it was signed: past half of one minute
      const second = await ask('broker');
      assert.ok(second.thisUpdate > first.thisUpdate, 'a new answer');
      assert.equal(second.nextUpdate - second.thisUpdate, MINUTE);
      assert.ok(second.nextUpdate - clock.now().getTime() > 30_000, 'a stapling broker asking now gets more than half a minute');
      assert.deepEqual(await ask('device'), device, 'the device answer is hours from its half-life');
    });

    it('GET answers are not kept by HTTP caches past the half-life: max-age capped by it', async () => {
      const out = join(dir, 'b.req');
      const r = await runAsync('openssl', ['ocsp', '-issuer', files.issuing!, '-cert', files.broker!, '-no_nonce', '-reqout', out]);
      assert.equal(r.status, 0, r.stderr);
      const res = await fetch(`${url}/pki/ocsp/${encodeURIComponent(readFileSync(out).toString('base64'))}`);
      assert.equal(res.status, 200);
      const maxAge = Number(/max-age=(\d+)/.exec(res.headers.get('cache-control')!)![1]);
      assert.ok(maxAge <= 30, `max-age ${maxAge}`);
    });

    it("the refresh re-signs the stored broker responses past half a minute, and not the device's", async () => {
      await ask('broker');
      await ask('device');
      clock.advance(31_000);
      const resigned = await svc.ocsp.refreshDue(1000);
      assert.ok(resigned >= 1, 'the broker response (sha1) re-signed');
      const rows = await svc
        .db('ocsp_responses as r')
        .join('certificates as c', 'c.serial', 'r.serial')
        .select('c.profile', 'r.this_update', 'r.next_update');
      for (const row of rows) {
        const span = new Date(row.next_update as string).getTime() - new Date(row.this_update as string).getTime();
        assert.equal(span, row.profile === 'broker' ? MINUTE : 24 * HOUR);
        if (row.profile === 'broker') assert.ok(clock.now().getTime() - new Date(row.this_update as string).getTime() < 30_000);
      }
      assert.equal(await svc.ocsp.refreshDue(1000), 0, 'nothing left due');
    });
  });
}

describe('OCSP_BROKER_VALIDITY_MINUTES', () => {
  const base = { MQTT_CA_KEK: Buffer.alloc(32, 1).toString('base64'), DATA_DIR: tempDir() };
  it('defaults to 60 minutes, is bounded to 1 minute .. 7 days, and a responder must outlive four broker responses', () => {
    assert.equal(loadConfig(base).ocspBrokerValidityMs, 60 * MINUTE);
    assert.equal(loadConfig({ ...base, OCSP_BROKER_VALIDITY_MINUTES: '1' }).ocspBrokerValidityMs, MINUTE);
    assert.throws(() => loadConfig({ ...base, OCSP_BROKER_VALIDITY_MINUTES: '0' }), ConfigError);
    assert.throws(() => loadConfig({ ...base, OCSP_BROKER_VALIDITY_MINUTES: String(7 * 24 * 60 + 1) }), ConfigError);
    assert.throws(
      () => loadConfig({ ...base, OCSP_BROKER_VALIDITY_MINUTES: String(7 * 24 * 60), OCSP_RESPONDER_DAYS: '20' }),
      /OCSP_BROKER_VALIDITY_MINUTES/,
    );
  });
});
