import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { ensureConsoleBuilt } from '../helpers/console.js';
import { startConsoleBrowser, type ConsoleBrowser } from '../helpers/console-browser.js';
import { toolSkip } from '../helpers/tools.js';
import { ManualClock } from '../../src/shared/clock.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import { enrollWithDeviceToken } from '../helpers/enroll.js';

/**
 * The web console in a real browser: Debian's chromium driven by playwright-core (never a
 * downloaded browser), against the service's real HTTP handler on a loopback port
 * (test/helpers/console-browser.ts). In CI a missing chromium fails the launch instead of skipping (toolSkip).
 */
const XSS = '<img src=x onerror=alert(1)>';

for (const target of dbTargets) {
  describe(`web console in chromium on ${target.name}`, { skip: target.skip ?? toolSkip('chromium') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    let web: ConsoleBrowser;
    const keys = {} as Record<Role, string>;
    const clock = new ManualClock(new Date());
    let serial = '';
    let heldSerial = '';

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const enroll = (deviceId: string): Promise<string> => enrollWithDeviceToken(api, keys.admin, deviceId);

    before(async () => {
      ensureConsoleBuilt();
      const made = await makeApiService(target, { clock });
      ({ svc, api } = made);
      Object.assign(keys, made.keys);
      web = await startConsoleBrowser(svc, keys, target.name);
      // A fleet: 120 devices of one lot (three pages of 50), a stolen meter with a certificate, and a hostile one.
      const devices = Array.from({ length: 120 }, (_, i) => ({ id: `meter-${String(i).padStart(3, '0')}`, model: 'EM-3', site: 'north' }));
      await api.post('/v1/devices/import').set(auth('provisioner')).send({ lot: 'LOT-A', devices }).expect(201);
      await api
        .post('/v1/devices')
        .set(auth('provisioner'))
        .send({ id: 'meter-stolen', lot: 'LOT-S', model: 'EM-3', site: 'depot' })
        .expect(201);
      serial = await enroll('meter-stolen');
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'meter-held', lot: 'LOT-S' }).expect(201);
      heldSerial = await enroll('meter-held');
      await api
        .post('/v1/devices')
        .set(auth('provisioner'))
        .send({ id: 'meter-xss', lot: 'LOT-X', model: XSS, site: XSS, labels: { note: XSS } })
        .expect(201);
    });
    after(async () => {
      await web?.close();
      await svc?.dispose();
    });

    /** Keyboard only: the key field has focus on arrival, Enter submits. */
    const signIn = (page: Page, role: Role) =>
      web.signIn(page, role, {
        onForm: async (p) => assert.equal(await p.locator(':focus').getAttribute('id'), 'api-key', 'the API key field has focus'),
      });

    /** The list shows the filtered answer: the unfiltered first page, still shown for a moment, also reads "Devices 1–50". */
    const onlyLotA = async (page: Page) => {
      const deadline = Date.now() + 15_000;
      const rows = page.locator('table.devices tbody tr');
      while ((await rows.count()) === 0 || (await rows.filter({ hasNotText: 'LOT-A' }).count()) > 0) {
        if (Date.now() > deadline) throw new Error('the fleet list never showed only LOT-A');
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    it('signs in with the keyboard only, filters the fleet, pages by cursor, keeps filters in the URL', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'operator');
      assert.equal(new URL(page.url()).pathname, '/console/');
      assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 1);
      await page.getByLabel('Lot').fill('LOT-A');
      await page.getByLabel('Status', { exact: true }).selectOption('registered');
      await page.getByRole('button', { name: 'Apply filters' }).click();
      await page.waitForURL(/lot=LOT-A/);
      assert.match(page.url(), /status=registered/);
      // The filtered answer, not the first unfiltered page still shown (it also reads "Devices 1–50").
      await page
        .getByRole('navigation', { name: 'Devices by status' })
        .filter({ hasText: /all\s*120/ })
        .waitFor();
      await page.getByText('Devices 1–50').waitFor();
      await onlyLotA(page);
      assert.equal(await page.locator('table.devices tbody tr').count(), 50);
      const counts = page.getByRole('navigation', { name: 'Devices by status' });
      assert.match((await counts.textContent()) ?? '', /all\s*120/);
      await web.shot(page, 'fleet');
      const firstPage = await page.locator('table.devices tbody th').allTextContents();
      await page.getByRole('button', { name: 'Next page' }).click();
      await page.getByText('Devices 51–100').waitFor();
      await onlyLotA(page);
      assert.match(page.url(), /cursor=/);
      const secondPage = await page.locator('table.devices tbody th').allTextContents();
      assert.equal(secondPage.length, 50);
      assert.ok(!secondPage.some((id) => firstPage.includes(id)), 'no device on both pages');
      await page.getByRole('button', { name: 'Next page' }).click();
      await page.getByText('Devices 101–120').waitFor();
      assert.ok(await page.getByRole('button', { name: 'Next page' }).isDisabled());
      await page.getByRole('button', { name: 'Previous page' }).click();
      await page.getByText('Devices 51–100').waitFor();
      assert.deepEqual(await page.locator('table.devices tbody th').allTextContents(), secondPage);
      // The URL alone brings the same view back (shared or reloaded).
      await page.reload();
      await page.getByRole('heading', { level: 1, name: 'Fleet' }).waitFor();
      assert.equal(await page.getByLabel('Lot').inputValue(), 'LOT-A');
      assert.equal(await page.getByLabel('Status', { exact: true }).inputValue(), 'registered');
      await page.waitForSelector('table.devices tbody tr');
      assert.deepEqual(await page.locator('table.devices tbody th').allTextContents(), secondPage);
      await ctx.close();
    });

    it('opens the stolen meter and revokes it behind a confirmation that wants its id typed', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'operator');
      await page.getByLabel('Lot').fill('LOT-S');
      await page.getByRole('button', { name: 'Apply filters' }).click();
      await page.getByRole('link', { name: 'meter-stolen' }).click();
      await page.getByRole('heading', { level: 1, name: /Device meter-stolen/ }).waitFor();
      assert.equal(await page.getByTestId('device-status').textContent(), 'active');
      assert.match((await page.locator('table.certs').textContent()) ?? '', new RegExp(serial));
      await page.getByRole('button', { name: 'Revoke certificate…' }).click();
      const dialog = page.getByRole('dialog', { name: /Revoke the certificate of meter-stolen/ });
      await dialog.waitFor();
      const confirm = dialog.getByRole('button', { name: 'Revoke' });
      assert.ok(await confirm.isDisabled(), 'not before the id is typed');
      await dialog.getByLabel(/Type the device id/).fill('meter-stole');
      assert.ok(await confirm.isDisabled());
      await dialog.getByLabel(/Type the device id/).fill('meter-stolen');
      await dialog.getByLabel('Reason').selectOption('keyCompromise');
      await web.shot(page, 'revoke-dialog');
      await confirm.click();
      await page.getByRole('status').filter({ hasText: 'revoked' }).waitFor();
      await page
        .getByTestId('device-status')
        .filter({ hasText: /^revoked$/ })
        .waitFor();
      const cert = (await api.get(`/v1/certificates/${serial}`).set(auth('auditor')).expect(200)).body;
      assert.equal(cert.status, 'revoked');
      assert.equal(cert.revocation.reason, 'keyCompromise');
      assert.equal(await page.getByRole('button', { name: 'Revoke certificate…' }).count(), 0, 'nothing left to revoke');
      await page.getByRole('button', { name: 'Re-admit…' }).waitFor();
      await page.getByRole('heading', { name: 'Security events' }).waitFor();
      assert.equal(await page.getByRole('heading', { name: 'Audit' }).count(), 0, 'an operator does not read the audit log');
      await web.shot(page, 'device');
      await ctx.close();
    });

    it('puts a certificate on hold and releases it, each confirmed, the device suspended and active again', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'operator');
      await page.goto(`${web.url}/console/devices/meter-held`);
      await page.getByRole('heading', { level: 1, name: /Device meter-held/ }).waitFor();
      await page.getByRole('button', { name: 'Put on hold…' }).click();
      let dialog = page.getByRole('dialog', { name: /on hold/ });
      await dialog.getByLabel(/Type the device id/).fill('meter-held');
      await dialog.getByRole('button', { name: 'Hold' }).click();
      await page
        .getByTestId('device-status')
        .filter({ hasText: /^suspended$/ })
        .waitFor();
      await page.getByRole('button', { name: 'Release hold…' }).click();
      dialog = page.getByRole('dialog', { name: /Release the hold/ });
      // Escape cancels: nothing happens. (Once the dialog is modal: focus is in its id field.)
      await page.locator('#confirm-id:focus').waitFor();
      await page.keyboard.press('Escape');
      await dialog.waitFor({ state: 'hidden' });
      assert.equal(await page.getByTestId('device-status').textContent(), 'suspended');
      await page.getByRole('button', { name: 'Release hold…' }).click();
      await dialog.getByLabel(/Type the device id/).fill('meter-held');
      await dialog.getByRole('button', { name: 'Release' }).click();
      await page
        .getByTestId('device-status')
        .filter({ hasText: /^active$/ })
        .waitFor();
      assert.equal((await api.get(`/v1/certificates/${heldSerial}`).set(auth('auditor')).expect(200)).body.status, 'issued');
      await ctx.close();
    });

    it('renders hostile field values as text, and shows the API reason next to a refused field', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'operator');
      await page.goto(`${web.url}/console/devices/meter-xss`);
      await page.getByRole('heading', { level: 1, name: /Device meter-xss/ }).waitFor();
      assert.equal(await page.getByLabel('Model').inputValue(), XSS);
      assert.match((await page.locator('dl.facts').textContent()) ?? '', /note=<img src=x onerror=alert\(1\)>/);
      assert.equal(await page.locator('img').count(), 0, 'no element was made from the value');
      await page.getByLabel('Site').fill('s'.repeat(129));
      await page.getByRole('button', { name: 'Save inventory' }).click();
      const err = page.locator('#inv-site-error');
      await err.waitFor();
      assert.match((await err.textContent()) ?? '', /128/);
      assert.equal(await page.getByLabel('Site').getAttribute('aria-invalid'), 'true');
      assert.deepEqual(web.dialogs, [], 'no dialog fired');
      await ctx.close();
    });

    it('shows where the bus watch saw the device, per broker, a hostile client id as text', async () => {
      svc.presence.observe({
        event: {
          kind: 'connect',
          broker: 'mosquitto',
          at: clock.now(),
          clientId: XSS,
          username: 'meter-xss',
          source: { host: '203.0.113.9', port: 40001 },
          protocol: 'mqtt5',
          cleanStart: true,
          keepAliveSeconds: 60,
        },
        identity: 'meter-xss',
      });
      await svc.presence.flush();
      const { ctx, page } = await web.open();
      await signIn(page, 'auditor');
      await page.goto(`${web.url}/console/devices/meter-xss`);
      const row = page.locator('[data-testid=presence] tr[data-broker=mosquitto]');
      await row.waitFor();
      const text = (await row.textContent()) ?? '';
      assert.match(text, /connected/);
      assert.match(text, /203\.0\.113\.9:40001/);
      assert.ok(text.includes(XSS), 'the client id as text');
      assert.equal(await page.locator('img').count(), 0, 'no element was made from the value');
      await page.goto(`${web.url}/console/devices/meter-000`);
      await page.getByText('Not seen on a watched broker.').waitFor();
      assert.deepEqual(web.dialogs, [], 'no dialog fired');
      await ctx.close();
    });

    it('has no serious or critical accessibility violations (axe-core) on sign-in, Fleet, Device and the confirmation', async () => {
      // axe is injected as a script, which the console's CSP forbids: this one context bypasses it.
      const ctx = await web.browser.newContext({ bypassCSP: true });
      const page = await ctx.newPage();
      await page.goto(`${web.url}/`);
      await page.waitForSelector('#api-key');
      await web.axe(page, 'sign-in');
      await page.getByLabel('API key').fill(keys.operator);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.waitForSelector('table.devices tbody tr');
      await web.axe(page, 'fleet');
      await page.goto(`${web.url}/console/devices/meter-000`);
      await page.getByRole('heading', { name: 'Certificates' }).waitFor();
      await web.axe(page, 'device');
      await page.goto(`${web.url}/console/devices/meter-xss`);
      await page.locator('[data-testid=presence]').waitFor();
      await web.axe(page, 'device on the bus');
      await page.goto(`${web.url}/console/devices/meter-000`);
      await page.getByRole('heading', { name: 'Certificates' }).waitFor();
      await page.getByRole('button', { name: 'Decommission…' }).click();
      await page.getByRole('dialog').waitFor();
      await web.axe(page, 'confirmation dialog');
      await ctx.close();
    });

    it('refuses a state change from the page without the CSRF token (403)', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'operator');
      const status = await page.evaluate(async () => {
        const r = await fetch('/v1/devices/meter-000', {
          method: 'PATCH',
          credentials: 'same-origin',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ site: 'forged' }),
        });
        return r.status;
      });
      assert.equal(status, 403);
      assert.equal((await api.get('/v1/devices/meter-000').set(auth('auditor')).expect(200)).body.site, 'north');
      await ctx.close();
    });

    it('offers an auditor no revoke, and the API refuses it from the same page', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'auditor');
      await page.goto(`${web.url}/console/devices/meter-000`);
      await page.getByRole('heading', { level: 1, name: /Device meter-000/ }).waitFor();
      await page.getByRole('heading', { name: 'Inventory' }).waitFor();
      assert.equal(await page.getByRole('button', { name: /Revoke|Decommission|Put on hold/ }).count(), 0);
      assert.equal(await page.getByRole('button', { name: 'Save inventory' }).count(), 0, 'no editing either');
      await page.getByRole('heading', { name: 'Audit' }).waitFor(); // an auditor reads the device's audit entries
      await page.getByRole('heading', { name: 'Security events' }).waitFor();
      assert.match((await page.locator('table.audit').textContent()) ?? '', /device\.registered/);
      const status = await page.evaluate(async () => {
        const s = (await (await fetch('/v1/console/session')).json()) as { csrfToken: string };
        const r = await fetch('/v1/devices/meter-000/decommission', { method: 'POST', headers: { 'X-CSRF-Token': s.csrfToken } });
        return r.status;
      });
      assert.equal(status, 403);
      await ctx.close();
    });

    it('sends an idle session back to sign-in, and signs out', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'operator');
      await page.waitForSelector('table.devices tbody tr'); // the page's own reads are done
      clock.advance(16 * 60_000);
      await page.getByLabel('Lot').fill('LOT-A');
      await page.getByRole('button', { name: 'Apply filters' }).click();
      await page.getByText('Your session has ended. Sign in again.').waitFor();
      assert.equal(await page.locator(':focus').getAttribute('id'), 'api-key');
      await signIn(page, 'operator');
      await page.getByRole('button', { name: 'Sign out' }).click();
      await page.getByText('You have signed out.').waitFor();
      const cookies = await ctx.cookies();
      assert.equal(cookies.filter((c) => c.name === 'mqca_session').length, 0, 'the cookie is gone');
      await ctx.close();
      assert.deepEqual(web.pageErrors, [], 'no script error or CSP violation on any page');
      assert.deepEqual(web.dialogs, []);
    });
  });
}
