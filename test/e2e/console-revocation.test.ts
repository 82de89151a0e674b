import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { writeCaFiles } from '../helpers/http.js';
import { runAsync, tempDir, writeTemp } from '../helpers/openssl.js';
import { ensureConsoleBuilt } from '../helpers/console.js';
import { startConsoleBrowser, type ConsoleBrowser } from '../helpers/console-browser.js';
import { p256Csr } from '../helpers/csr.js';
import { toolSkip } from '../helpers/tools.js';
import { ManualClock } from '../../src/shared/clock.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

/**
 * The console's Revocation health page in Debian's chromium (playwright-core), against the real
 * HTTP handler: a row per CA and CRL partition, OCSP counters and latency, a revoked certificate
 * looked up by an uploaded PEM and by serial, the polling that stops when the page is left, the
 * stale alarm (as text) under a manual clock, roles, and axe.
 */
const POLL_MS = 10_000;

for (const target of dbTargets) {
  describe(
    `console revocation health in chromium on ${target.name}`,
    { skip: target.skip ?? toolSkip('chromium') ?? toolSkip('openssl') },
    () => {
      let svc: Service & { dispose(): Promise<void> };
      let api: ReturnType<typeof request>;
      let web: ConsoleBrowser;
      let issuingId: string;
      const keys = {} as Record<Role, string>;
      const clock = new ManualClock(new Date());
      const certs: Record<string, { serial: string; pem: string }> = {};
      const dir = tempDir();

      const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
      const enroll = async (deviceId: string) => {
        await api.post('/v1/devices').set(auth('provisioner')).send({ id: deviceId }).expect(201);
        const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId }).expect(201)).body.token as string;
        const res = await api
          .post('/v1/enroll')
          .set({ Authorization: `Bearer ${tok}` })
          .send({ csr: p256Csr(deviceId).pem })
          .expect(201);
        certs[deviceId] = { serial: res.body.serial as string, pem: res.body.certificate as string };
      };

      before(async () => {
        ensureConsoleBuilt();
        const made = await makeApiService(target, { clock });
        ({ svc, api, issuingId } = made);
        Object.assign(keys, made.keys);
        web = await startConsoleBrowser(svc, keys, target.name);
        await enroll('rv-meter-1');
        await enroll('rv-meter-2');
        await svc.crls.all(); // every CA's CRL, as the broker bundle has them built
        await api
          .post(`/v1/certificates/${certs['rv-meter-1']!.serial}/revoke`)
          .set(auth('operator'))
          .send({ reason: 'keyCompromise' })
          .expect(200);
        // A broker asks OCSP about the revoked certificate: the page's counters have something to show.
        const files = await writeCaFiles(svc, issuingId, dir);
        const ocsp = await runAsync('openssl', [
          'ocsp',
          '-issuer',
          files.issuing,
          '-url',
          `${web.url}/pki/ocsp`,
          '-CAfile',
          files.root,
          '-verify_other',
          files.issuing,
          '-no_nonce',
          '-cert',
          writeTemp(dir, 'rv-meter-1.pem', certs['rv-meter-1']!.pem),
        ]);
        assert.match(ocsp.stdout, /: revoked/, ocsp.stderr);
      });
      after(async () => {
        await web?.close();
        await svc?.dispose();
      });

      it('shows a row per CA and partition, OCSP counters and latency; a revoked certificate looked up by an uploaded PEM shows revoked', async () => {
        const { ctx, page } = await web.open();
        await web.signIn(page, 'auditor');
        await page.getByRole('link', { name: 'Revocation' }).click();
        await page.getByRole('heading', { level: 1, name: 'Revocation health' }).waitFor();
        const issuingRow = page.locator(`table.crls tr[data-ca="${issuingId}"][data-shard="0"]`);
        await issuingRow.waitFor();
        assert.ok((await page.locator('table.crls tbody tr').count()) >= 2, 'the root and the issuing CA');
        assert.equal(await issuingRow.getAttribute('data-stale'), 'false');
        assert.match((await issuingRow.textContent()) ?? '', /Current/);
        assert.match((await page.getByTestId('stale-alarm').textContent()) ?? '', /No stale CRL/);
        assert.equal(await page.getByTestId('ocsp-revoked').textContent(), '1', 'the broker’s OCSP question in before()');
        assert.match((await page.getByTestId('latency').textContent()) ?? '', /Revocations\s*1/, 'the revocation made in before()');

        // Upload the revoked certificate's PEM as a file.
        await page.getByLabel('Certificate file').setInputFiles({
          name: 'rv-meter-1.pem',
          mimeType: 'application/x-pem-file',
          buffer: Buffer.from(certs['rv-meter-1']!.pem),
        });
        await page.getByRole('button', { name: 'Look up PEM' }).click();
        const result = page.getByTestId('lookup-result');
        await result.waitFor();
        assert.equal(await page.getByTestId('lookup-status').textContent(), 'revoked');
        assert.equal(await page.getByTestId('lookup-reason').textContent(), 'keyCompromise');
        assert.match((await page.getByTestId('lookup-matches').textContent()) ?? '', /byte for byte/);
        assert.match((await result.textContent()) ?? '', new RegExp(certs['rv-meter-1']!.serial));
        await web.shot(page, 'revocation');

        // Garbage pasted: the API's reason beside the field.
        await page.getByLabel('PEM certificate').fill('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----');
        await page.getByRole('button', { name: 'Look up PEM' }).click();
        await page.locator('#lk-pem-error').waitFor();
        assert.match((await page.locator('#lk-pem-error').textContent()) ?? '', /cannot be parsed/);
        assert.equal(await page.getByLabel('PEM certificate').getAttribute('aria-invalid'), 'true');

        // By serial: a bad one refused beside the field; the good one (as openssl prints it, with colons) found, and its device a link.
        await page.getByLabel('Serial', { exact: true }).fill('zz');
        await page.getByLabel('Serial', { exact: true }).press('Enter');
        await page.locator('#lk-serial-error').waitFor();
        const colons = certs['rv-meter-2']!.serial.toUpperCase().match(/../g)!.join(':');
        await page.getByLabel('Serial', { exact: true }).fill(colons);
        await page.getByLabel('Serial', { exact: true }).press('Enter');
        await page.getByTestId('lookup-status').filter({ hasText: 'issued' }).waitFor();
        assert.equal(await page.locator('#lk-serial-error').count(), 0);
        await page.getByTestId('lookup-result').getByRole('link', { name: 'rv-meter-2' }).click();
        await page.getByRole('heading', { level: 1, name: /rv-meter-2/ }).waitFor();
        await ctx.close();
      });

      it('reads the report again every 10 s while shown and stops when the page is left', async () => {
        const { ctx, page } = await web.open();
        await web.signIn(page, 'operator');
        const reads: number[] = [];
        page.on('request', (r) => {
          if (new URL(r.url()).pathname === '/v1/revocation-health') reads.push(Date.now());
        });
        await page.getByRole('link', { name: 'Revocation' }).click();
        await page.locator('table.crls').waitFor();
        await page.waitForRequest((r) => new URL(r.url()).pathname === '/v1/revocation-health', { timeout: POLL_MS + 5000 });
        assert.ok(reads.length >= 2, `read again while shown (${reads.length})`);
        await page.getByRole('link', { name: 'Fleet' }).click();
        await page.getByRole('heading', { level: 1, name: 'Fleet' }).waitFor();
        const left = reads.length;
        await page.waitForTimeout(POLL_MS + 1500);
        assert.equal(reads.length, left, 'no read once the page is left');
        await ctx.close();
      });

      it('is not offered to a provisioner, and the API refuses it', async () => {
        const { ctx, page } = await web.open();
        await web.signIn(page, 'provisioner');
        assert.equal(await page.getByRole('link', { name: 'Revocation' }).count(), 0);
        await page.goto(`${web.url}/console/revocation`);
        await page.getByRole('alert').filter({ hasText: 'The provisioner role does not read this page.' }).waitFor();
        const status = await page.evaluate(async () => (await fetch('/v1/revocation-health')).status);
        assert.equal(status, 403);
        await ctx.close();
      });

      it('marks a stale CRL with an alarm in words, and has no serious or critical accessibility violations', async () => {
        // Past the default 48 h CRL's refresh point (36 h before its nextUpdate), nothing rebuilt it.
        clock.advance(13 * 3_600_000);
        const { ctx, page } = await web.open({ bypassCSP: true });
        await web.signIn(page, 'admin');
        await page.goto(`${web.url}/console/revocation`);
        const alarm = page.getByTestId('stale-alarm');
        await alarm.filter({ hasText: 'Alarm' }).waitFor();
        assert.match((await alarm.textContent()) ?? '', /stale \(due and not replaced\)/);
        const issuingRow = page.locator(`table.crls tr[data-ca="${issuingId}"][data-shard="0"]`);
        assert.equal(await issuingRow.getAttribute('data-stale'), 'true');
        assert.match((await issuingRow.textContent()) ?? '', /Stale/);
        await page.getByLabel('PEM certificate').fill(certs['rv-meter-1']!.pem);
        await page.getByRole('button', { name: 'Look up PEM' }).click();
        await page.getByTestId('lookup-result').waitFor();
        await web.shot(page, 'revocation-stale');
        await web.axe(page, 'revocation');
        await ctx.close();
        assert.deepEqual(web.pageErrors, [], 'no script error or CSP violation');
        assert.deepEqual(web.dialogs, []);
      });
    },
  );
}
