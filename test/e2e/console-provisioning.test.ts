import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type { Page } from 'playwright-core';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { ensureConsoleBuilt } from '../helpers/console.js';
import { startConsoleBrowser, type ConsoleBrowser } from '../helpers/console-browser.js';
import { p256Csr } from '../helpers/csr.js';
import { toolSkip } from '../helpers/tools.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

/**
 * The console's Provisioning page (and the Device page's tokens) in Debian's chromium, as
 * console-browser.test.ts drives it: a lot import checked by a dry run first (a bad manifest's
 * errors by row, nothing imported; a good one previewed, then imported), a token shown once and
 * copied, a lot's enrollment progress following an enrollment, and the roles that may not.
 */
const XSS = '<img src=x onerror=alert(1)>';

/** A CSV cell: quoted when it holds a comma, a quote or a line break. */
const cell = (v: string) => (/[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
const csv = (rows: string[][]) => rows.map((r) => r.map(cell).join(',')).join('\n') + '\n';

for (const target of dbTargets) {
  describe(`console provisioning in chromium on ${target.name}`, { skip: target.skip ?? toolSkip('chromium') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    let web: ConsoleBrowser;
    const keys = {} as Record<Role, string>;
    let lotToken = '';

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const deviceCount = async (lot: string) =>
      (await api.get('/v1/device-counts').query({ lot }).set(auth('auditor')).expect(200)).body.total as number;
    const enrollWith = async (token: string, deviceId: string) =>
      api
        .post('/v1/enroll')
        .set({ Authorization: `Bearer ${token}` })
        .send({ csr: p256Csr(deviceId).pem })
        .expect(201);

    before(async () => {
      ensureConsoleBuilt();
      const made = await makeApiService(target);
      ({ svc, api } = made);
      Object.assign(keys, made.keys);
      web = await startConsoleBrowser(svc, keys, `${target.name}-provisioning`);
      await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'taken-1', lot: 'LOT-OLD' }).expect(201);
    });
    after(async () => {
      await web?.close();
      await svc?.dispose();
    });

    const signIn = (page: Page, role: Role) => web.signIn(page, role, { mouse: true });
    const toProvisioning = async (page: Page) => {
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Provisioning' }).click();
      await page.getByRole('heading', { level: 1, name: 'Provisioning' }).waitFor();
    };

    it('shows a bad CSV its errors by row and imports nothing; previews a good one (hostile values as text), then imports it', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'provisioner');
      await toProvisioning(page);
      const importButton = page.getByRole('button', { name: /^Import \d+ device/ });
      assert.equal(await importButton.count(), 0, 'no Import before a clean preview');

      // A bad manifest: a duplicate, an id that exists, a bad id, a bad kind, a short row.
      const bad = csv([
        ['id', 'kind', 'model'],
        ['prov-1', 'client', XSS],
        ['prov-1', 'client', 'EM-3'],
        ['taken-1', '', ''],
        ['bad id', '', ''],
        ['prov-5', 'toaster', ''],
      ]);
      await page.getByLabel('Lot (for rows that name none)').fill('LOT-P');
      await page.getByLabel('Manifest (or paste it here)').fill(bad);
      await page.getByRole('button', { name: 'Check manifest' }).click();
      const alert = page.getByRole('alert').filter({ hasText: 'Not imported' });
      await alert.waitFor();
      assert.match((await alert.textContent()) ?? '', /error\(s\) on 4 row\(s\); nothing was imported/);
      const rows = page.locator('table.errors tbody tr');
      assert.deepEqual(await page.locator('table.errors tbody th').allTextContents(), ['2', '3', '4', '5']);
      assert.match((await rows.nth(0).textContent()) ?? '', /prov-1.*id.*also on row 1/);
      assert.match((await rows.nth(1).textContent()) ?? '', /taken-1.*exists/);
      assert.match((await rows.nth(3).textContent()) ?? '', /prov-5.*kind/);
      // Each refused row is shown as written beside its errors.
      assert.equal(await rows.nth(2).locator('td code').textContent(), 'bad id,,');
      assert.equal(await rows.nth(3).locator('td code').textContent(), 'prov-5,toaster,');
      assert.equal(await importButton.count(), 0, 'no Import after a refused preview');
      await web.shot(page, 'errors');
      assert.equal(await deviceCount('LOT-P'), 0, 'the dry run imported nothing');

      // Fixed (a hostile model and label stay): the preview shows every row as text, then Import.
      const good = csv([
        ['id', 'model', 'site', 'labels.note'],
        ['prov-1', XSS, 'north', XSS],
        ['prov-2', 'EM-3', 'north', ''],
        ['prov-3', 'EM-3', 'south', 'a,b'],
      ]);
      await page.getByLabel('Manifest (or paste it here)').fill(good);
      assert.equal(await page.locator('table.errors').count(), 0, 'an edit clears the old result');
      await page.getByRole('button', { name: 'Check manifest' }).click();
      await page.getByTestId('import-summary').waitFor();
      assert.match((await page.getByTestId('import-summary').textContent()) ?? '', /3 devices would be registered in lot LOT-P/);
      assert.deepEqual(await page.locator('table.preview tbody th').allTextContents(), ['prov-1', 'prov-2', 'prov-3']);
      const first = (await page.locator('table.preview tbody tr').first().textContent()) ?? '';
      assert.ok(first.includes(XSS), 'the model is shown as text');
      assert.ok(first.includes(`note=${XSS}`));
      assert.equal(await page.locator('img').count(), 0, 'no element was made from a value');
      assert.equal(await deviceCount('LOT-P'), 0, 'a clean preview imports nothing either');
      // Changing the lot voids the preview: Import is offered only for what was checked.
      await page.getByLabel('Lot (for rows that name none)').fill('LOT-P2');
      assert.equal(await importButton.count(), 0);
      await page.getByLabel('Lot (for rows that name none)').fill('LOT-P');
      await page.getByRole('button', { name: 'Check manifest' }).click();
      await web.shot(page, 'preview');
      await importButton.click();
      await page.getByRole('status').filter({ hasText: 'Imported 3 devices into lot LOT-P' }).waitFor();
      assert.equal(await importButton.count(), 0, 'gone once imported: a second click cannot import twice');
      assert.equal(await deviceCount('LOT-P'), 3);
      assert.equal((await api.get('/v1/devices/prov-1').set(auth('auditor')).expect(200)).body.model, XSS);
      // The notice leads to the lot's progress.
      await page.getByRole('link', { name: 'Watch its enrollment' }).click();
      await page.waitForURL(/\/console\/provisioning\?lot=LOT-P$/);
      await page.getByTestId('lot-enrolled').filter({ hasText: '0 of 3 devices enrolled' }).waitFor();
      assert.deepEqual(web.dialogs, []);
      await ctx.close();
    });

    it('imports a JSON file from the file picker after its preview', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'provisioner');
      await toProvisioning(page);
      const manifest = JSON.stringify({ lot: 'LOT-J', devices: [{ id: 'json-p1' }, { id: 'json-p2', kind: 'broker' }] });
      await page
        .getByLabel('Manifest file')
        .setInputFiles({ name: 'lot.json', mimeType: 'application/json', buffer: Buffer.from(manifest) });
      await page.waitForFunction("document.getElementById('imp-text').value.includes('json-p1')");
      assert.equal(await page.getByLabel('Format').inputValue(), 'json', 'the format follows the file');
      await page.getByRole('button', { name: 'Check manifest' }).click();
      await page.getByTestId('import-summary').filter({ hasText: '2 devices would be registered in lot LOT-J' }).waitFor();
      await page.getByRole('button', { name: 'Import 2 devices' }).click();
      await page.getByRole('status').filter({ hasText: 'Imported 2 devices into lot LOT-J' }).waitFor();
      assert.equal((await api.get('/v1/devices/json-p2').set(auth('auditor')).expect(200)).body.kind, 'broker');
      await ctx.close();
    });

    it('shows a lot token once, copies it, forgets it on navigation; the progress follows an enrollment and stops polling when left', async () => {
      const { ctx, page } = await web.open();
      await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: web.url });
      await signIn(page, 'provisioner');
      await toProvisioning(page);
      const tokens = page.getByRole('region', { name: 'Create an enrollment token' });
      await tokens.getByLabel('Lot', { exact: true }).fill('LOT-P');
      await tokens.getByLabel('Uses at most').fill('3');
      assert.equal(await tokens.getByLabel('Expires in').inputValue(), String(7 * 86400), 'a week unless chosen');
      await tokens.getByLabel('Expires in').selectOption({ label: '1 day' });
      await tokens.getByRole('button', { name: 'Create token' }).click();
      const secret = page.getByLabel('Enrollment token', { exact: true });
      await secret.waitFor();
      lotToken = await secret.inputValue();
      assert.ok(lotToken.length > 20, 'the field holds the token');
      assert.equal(await secret.getAttribute('readonly'), '', 'read-only');
      assert.equal(await page.locator('#tok-secret:focus').count(), 1, 'focus on the token');
      assert.match((await page.locator('.secret').textContent()) ?? '', /shown this once/);
      assert.equal(await tokens.getByLabel('Expires in').inputValue(), '86400', 'the form keeps its choices');
      const expires = (await api.get('/v1/enrollment-tokens').query({ lot: 'LOT-P' }).set(auth('auditor')).expect(200)).body.items[0];
      assert.equal(Date.parse(expires.expiresAt) - Date.parse(expires.createdAt), 86_400_000, 'the chosen expiry');
      assert.equal(expires.maxUses, 3);
      await page.getByRole('button', { name: 'Copy' }).click();
      await page.getByRole('status').filter({ hasText: 'Copied' }).waitFor();
      assert.equal(await page.evaluate('navigator.clipboard.readText()'), lotToken);
      await web.shot(page, 'token');
      // Nothing of it in the URL or storage.
      assert.ok(!page.url().includes(lotToken));
      assert.deepEqual(await page.evaluate('[localStorage.length, sessionStorage.length]'), [0, 0]);

      // Navigating (even within the page) forgets it.
      await page.getByLabel('Lot to watch').fill('LOT-P');
      await page.getByRole('button', { name: 'Watch' }).click();
      await page.waitForURL(/lot=LOT-P/);
      assert.equal(await page.getByLabel('Enrollment token', { exact: true }).count(), 0, 'gone after navigation');
      assert.ok(!((await page.content()) ?? '').includes(lotToken));

      // Progress: 0 of 3, the token outstanding; a device enrolls with it and the page follows.
      const enrolled = page.getByTestId('lot-enrolled');
      await enrolled.filter({ hasText: '0 of 3 devices enrolled' }).waitFor();
      assert.match((await page.getByTestId('lot-tokens').textContent()) ?? '', /1 token outstanding \(3 uses left\)/);
      await enrollWith(lotToken, 'prov-2');
      await enrolled.filter({ hasText: '1 of 3 devices enrolled (33%)' }).waitFor({ timeout: 15_000 });
      await page.getByTestId('lot-tokens').filter({ hasText: '(2 uses left)' }).waitFor({ timeout: 15_000 });
      assert.match((await page.locator('ul.by-status').textContent()) ?? '', /active\s*1/);
      await web.shot(page, 'progress');

      // Leaving the page stops the polling.
      let polled = 0;
      page.on('request', (r) => {
        if (r.url().includes('/v1/device-counts?lot=LOT-P')) polled++;
      });
      await page.getByRole('link', { name: "The lot's devices in the fleet" }).click();
      await page.getByRole('heading', { level: 1, name: 'Fleet' }).waitFor();
      await page.getByRole('link', { name: 'prov-2' }).click();
      await page.getByRole('heading', { level: 1, name: /Device prov-2/ }).waitFor();
      polled = 0;
      await page.waitForTimeout(6_000);
      assert.equal(polled, 0, 'no progress request after leaving the page');
      await ctx.close();
    });

    it("lists a device's tokens on its page (metadata only) and creates one from there", async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'provisioner');
      await page.goto(`${web.url}/console/devices/prov-3`);
      await page.getByRole('heading', { name: 'Enrollment tokens' }).waitFor();
      assert.match((await page.locator('main').textContent()) ?? '', /No token names this device \(a token of lot LOT-P may enroll it\)/);
      await page.getByRole('link', { name: 'Create a token for this device…' }).click();
      await page.getByRole('heading', { level: 1, name: 'Provisioning' }).waitFor();
      assert.equal(await page.getByLabel('Device id').inputValue(), 'prov-3', 'the device is filled in');
      await page.getByLabel('Name (optional)').fill(`line-7 ${XSS}`);
      await page.getByRole('button', { name: 'Create token' }).click();
      const token = await page.getByLabel('Enrollment token', { exact: true }).inputValue();
      assert.match((await page.locator('#secret-title').textContent()) ?? '', /device prov-3/);
      // A device that cannot have a token: the API's reason next to the field.
      await page.getByRole('button', { name: 'Done' }).click();
      assert.equal(await page.getByLabel('Enrollment token', { exact: true }).count(), 0);
      await page.getByLabel('Device id').fill('nobody-here');
      await page.getByRole('button', { name: 'Create token' }).click();
      await page.locator('#tok-deviceId-error').waitFor();
      assert.match((await page.locator('#tok-deviceId-error').textContent()) ?? '', /nobody-here/);
      assert.equal(await page.getByLabel('Device id').getAttribute('aria-invalid'), 'true');

      await page.goto(`${web.url}/console/devices/prov-3`);
      const table = page.locator('table.tokens');
      await table.waitFor();
      const text = (await table.textContent()) ?? '';
      assert.match(text, /line-7 <img src=x onerror=alert\(1\)>/, 'the name as text');
      assert.match(text, /device/);
      assert.match(text, /active/);
      assert.match(text, /0 \/ 1/);
      assert.ok(!((await page.content()) ?? '').includes(token), 'never the secret');
      assert.equal(await page.locator('img').count(), 0);
      await ctx.close();
    });

    it('offers an auditor the progress but no import or token, and the API refuses them from the page', async () => {
      const { ctx, page } = await web.open();
      await signIn(page, 'auditor');
      await toProvisioning(page);
      await page.getByRole('heading', { name: 'Enrollment progress' }).waitFor();
      assert.equal(await page.getByRole('heading', { name: 'Import a lot' }).count(), 0);
      assert.equal(await page.getByRole('heading', { name: 'Create an enrollment token' }).count(), 0);
      assert.equal(await page.getByRole('button', { name: /Check manifest|Create token|Import/ }).count(), 0);
      await page.getByLabel('Lot to watch').fill('LOT-P');
      await page.getByRole('button', { name: 'Watch' }).click();
      await page.getByTestId('lot-enrolled').filter({ hasText: 'of 3 devices enrolled' }).waitFor();
      await page.goto(`${web.url}/console/devices/prov-1`);
      await page.getByRole('heading', { name: 'Enrollment tokens' }).waitFor();
      assert.equal(await page.getByRole('link', { name: /Create a token/ }).count(), 0);
      const statuses = await page.evaluate(async () => {
        const s = (await (await fetch('/v1/console/session')).json()) as { csrfToken: string };
        const headers = { 'X-CSRF-Token': s.csrfToken, 'Content-Type': 'application/json' };
        const dry = await fetch('/v1/devices/import?dryRun=true', { method: 'POST', headers, body: '[{"id":"aud-1"}]' });
        const tok = await fetch('/v1/enrollment-tokens', { method: 'POST', headers, body: '{"lot":"LOT-P"}' });
        return [dry.status, tok.status];
      });
      assert.deepEqual(statuses, [403, 403]);
      await ctx.close();
    });

    it('has no serious or critical accessibility violations (axe-core) on the page, its errors, preview and token', async () => {
      const ctx = await web.browser.newContext({ bypassCSP: true });
      const page = await ctx.newPage();
      await signIn(page, 'provisioner');
      await page.goto(`${web.url}/console/provisioning?lot=LOT-P`);
      await page.getByTestId('lot-enrolled').waitFor();
      await web.axe(page, 'provisioning with progress');
      await page.getByLabel('Manifest (or paste it here)').fill('id,model\nprov-1,x\nax-2\n');
      await page.getByRole('button', { name: 'Check manifest' }).click();
      await page.locator('table.errors').waitFor();
      await web.axe(page, 'manifest errors');
      await page.getByLabel('Manifest (or paste it here)').fill('id\nax-1\n');
      await page.getByRole('button', { name: 'Check manifest' }).click();
      await page.locator('table.preview').waitFor();
      await web.axe(page, 'preview');
      await page.getByRole('region', { name: 'Create an enrollment token' }).getByLabel('Lot', { exact: true }).fill('LOT-AX');
      await page.getByRole('button', { name: 'Create token' }).click();
      await page.getByLabel('Enrollment token', { exact: true }).waitFor();
      await web.axe(page, 'token shown');
      await page.goto(`${web.url}/console/devices/prov-3`);
      await page.locator('table.tokens').waitFor();
      await web.axe(page, 'device tokens');
      await ctx.close();
      assert.deepEqual(web.pageErrors, [], 'no script error or CSP violation on any page');
      assert.deepEqual(web.dialogs, []);
    });
  });
}
