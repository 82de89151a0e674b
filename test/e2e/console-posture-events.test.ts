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
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

/**
 * The console's Posture, Events and Audit pages in Debian's chromium (playwright-core), against the
 * real HTTP handler: the tier chart and its table against GET /v1/posture, the target set by an
 * admin (and not offered to an operator), events arriving live over the stream, pause and resume,
 * hostile values as text, the audit chain's verification.
 */
const XSS = '<img src=x onerror=alert(1)>';
/** The page's document, as the functions run in the browser by waitForFunction see it (string predicates would need eval, which the CSP refuses). */
declare const document: { querySelectorAll(selector: string): ArrayLike<{ getAttribute(name: string): string | null }> };
const FUNCTIONS = ['identify', 'protect', 'detect', 'respond', 'recover'] as const;

interface Report {
  current: Record<string, { tier: number; met: number; partial: number; unmet: number }>;
  target: Record<string, number>;
  outcomes: { subcategory: string; evidence: string; remedy: string; status: string }[];
  gaps: { subcategory: string }[];
}

for (const target of dbTargets) {
  describe(`console posture, events and audit in chromium on ${target.name}`, { skip: target.skip ?? toolSkip('chromium') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    let web: ConsoleBrowser;
    const keys = {} as Record<Role, string>;

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const posture = async () => (await api.get('/v1/posture').set(auth('auditor')).expect(200)).body as Report;

    before(async () => {
      ensureConsoleBuilt();
      const made = await makeApiService(target);
      ({ svc, api } = made);
      Object.assign(keys, made.keys);
      web = await startConsoleBrowser(svc, keys, target.name);
      // Enough audit entries for more than one page of 50.
      for (let i = 1; i <= 40; i++)
        await api
          .post('/v1/devices')
          .set(auth('provisioner'))
          .send({ id: `pe-${i}` })
          .expect(201);
      await svc.securityEvents.record({ kind: 'test.before', severity: 'warning', subject: 'device:pe-1', details: { note: 'older' } });
    });
    after(async () => {
      await web?.close();
      await svc?.dispose();
    });

    const gotoPosture = async (page: Page) => {
      await page.getByRole('link', { name: 'Posture' }).click();
      await page.getByRole('heading', { level: 1, name: 'Posture' }).waitFor();
      await page.getByTestId('tier-table').waitFor();
    };
    /** What the chart and its table show per function. */
    const shown = async (page: Page) => {
      const out: Record<string, { bar: number; width: number; marker: number; cell: number; targetCell: number; text: string }> = {};
      for (const f of FUNCTIONS) {
        const g = page.getByTestId('tier-chart').locator(`g[data-function="${f}"]`);
        const row = page.getByTestId('tier-table').locator(`tr[data-function="${f}"]`);
        out[f] = {
          bar: Number(await g.locator('rect').getAttribute('data-current')),
          width: Number(await g.locator('rect').getAttribute('width')),
          marker: Number(await g.locator('path.target').getAttribute('data-target')),
          cell: Number(await row.locator('td[data-current]').getAttribute('data-current')),
          targetCell: Number(await row.locator('td[data-target]').getAttribute('data-target')),
          text: (await row.textContent()) ?? '',
        };
      }
      return out;
    };

    it('draws current against target per function as the API measures it, with gaps, evidence, and an admin setting the target', async () => {
      const { ctx, page } = await web.open();
      await web.signIn(page, 'admin');
      await gotoPosture(page);
      const report = await posture();
      const before = await shown(page);
      for (const f of FUNCTIONS) {
        const c = report.current[f]!;
        assert.equal(before[f]!.bar, c.tier, `${f} bar`);
        assert.equal(before[f]!.width, c.tier * 120, `${f} bar length`);
        assert.equal(before[f]!.cell, c.tier, `${f} table`);
        assert.equal(before[f]!.marker, report.target[f], `${f} marker`);
        assert.equal(before[f]!.targetCell, report.target[f], `${f} target cell`);
        assert.match(before[f]!.text, new RegExp(`${c.met}\\s*${c.partial}\\s*${c.unmet}$`), `${f} met/partial/unmet`);
      }
      // The chart's text alternative names every value too.
      const desc = (await page.locator('#tier-chart-desc').textContent()) ?? '';
      for (const f of FUNCTIONS)
        assert.ok(desc.toLowerCase().includes(`${f}: current tier ${report.current[f]!.tier}, target ${report.target[f]}`));
      // Gaps with remedies, in the API's order; each outcome's evidence behind its disclosure.
      assert.ok(report.gaps.length > 0, 'a fresh deployment has gaps');
      const gapRows = page.getByTestId('gaps').locator('tbody tr');
      assert.equal(await gapRows.count(), report.gaps.length);
      assert.equal(await gapRows.first().getAttribute('data-subcategory'), report.gaps[0]!.subcategory);
      const o = report.outcomes[0]!;
      const item = page.locator(`li[data-subcategory="${o.subcategory}"]`);
      assert.ok(!(await item.getByText(o.evidence, { exact: true }).isVisible()), 'evidence is collapsed');
      await item.locator('summary').click();
      await item.getByText(o.evidence, { exact: true }).waitFor();
      await web.shot(page, 'posture');

      // A tier out of range: the API's reason beside the field.
      const identify = page.locator('#tp-identify');
      await identify.fill('5');
      await page.getByRole('button', { name: 'Set target' }).click();
      const err = page.locator('#tp-identify-error');
      await err.waitFor();
      assert.match((await err.textContent()) ?? '', /4|maximum/);
      assert.equal(await identify.getAttribute('aria-invalid'), 'true');
      assert.equal((await posture()).target.identify, report.target.identify, 'refused, nothing set');
      // A valid target: set, and shown in the chart and the table.
      const next = report.target.identify === 4 ? 1 : 4;
      await identify.fill(String(next));
      await page.getByRole('button', { name: 'Set target' }).click();
      await page.getByRole('status').filter({ hasText: 'Target profile set.' }).waitFor();
      await page.locator(`[data-testid="tier-table"] tr[data-function="identify"] td[data-target="${next}"]`).waitFor();
      assert.equal((await shown(page)).identify!.marker, next);
      assert.equal((await posture()).target.identify, next);
      assert.equal((await shown(page)).protect!.targetCell, report.target.protect, 'the others unchanged');
      await ctx.close();
    });

    it('offers an operator no target form, and the API refuses the operator from the page', async () => {
      const { ctx, page } = await web.open();
      await web.signIn(page, 'operator');
      await gotoPosture(page);
      assert.equal(await page.getByRole('heading', { name: 'Target profile', exact: true }).count(), 0);
      assert.equal(await page.getByRole('button', { name: 'Set target' }).count(), 0);
      assert.equal(await page.locator('#tp-identify').count(), 0);
      // Operators read events but not the audit log: no Audit link, and the page says so.
      assert.equal(await page.getByRole('link', { name: 'Audit' }).count(), 0);
      assert.equal(await page.getByRole('link', { name: 'Events' }).count(), 1);
      const status = await page.evaluate(async () => {
        const s = (await (await fetch('/v1/console/session')).json()) as { csrfToken: string };
        const r = await fetch('/v1/posture/target', {
          method: 'PUT',
          headers: { 'X-CSRF-Token': s.csrfToken, 'Content-Type': 'application/json' },
          body: JSON.stringify({ identify: 1 }),
        });
        return r.status;
      });
      assert.equal(status, 403);
      await page.goto(`${web.url}/console/audit`);
      await page.getByRole('alert').filter({ hasText: 'The operator role does not read this page.' }).waitFor();
      await ctx.close();
    });

    it('shows security events live, prepended without a reload and capped at 500; pause holds them back and resume fetches those missed; hostile values are text', async () => {
      const { ctx, page } = await web.open();
      await web.signIn(page, 'auditor');
      await page.getByRole('link', { name: 'Events' }).click();
      await page.getByRole('heading', { level: 1, name: 'Security events' }).waitFor();
      const rows = page.getByTestId('events').locator('tbody tr');
      await rows.filter({ hasText: 'test.before' }).waitFor();
      await page.locator('[data-testid="live-state"][data-state="live"]').waitFor();
      const marker = await page.evaluate('window.marker = 42');

      await svc.securityEvents.record({ kind: 'test.live', severity: 'critical', subject: `device:${XSS}`, details: { note: XSS } });
      const live = rows.filter({ hasText: 'test.live' });
      await live.waitFor({ timeout: 10_000 });
      assert.equal(await rows.first().getAttribute('data-event'), await live.getAttribute('data-event'), 'prepended');
      assert.ok(((await live.textContent()) ?? '').includes(XSS), 'the subject and details shown as text');
      assert.equal(await page.getByTestId('events').locator('img').count(), 0, 'no element made from an event');
      assert.equal(await page.evaluate('window.marker'), marker, 'no reload');

      await page.getByRole('button', { name: 'Pause live updates' }).click();
      await page.locator('[data-testid="live-state"][data-state="paused"]').waitFor();
      await svc.securityEvents.record({ kind: 'test.while-paused', subject: 'device:pe-2', details: {} });
      await page.waitForTimeout(2500);
      assert.equal(await rows.filter({ hasText: 'test.while-paused' }).count(), 0, 'held back while paused');
      await page.getByRole('button', { name: 'Resume live updates' }).click();
      await rows.filter({ hasText: 'test.while-paused' }).waitFor({ timeout: 10_000 });
      assert.equal(await rows.filter({ hasText: 'test.live' }).count(), 1, 'each event once');
      await web.shot(page, 'events');

      // Filters in the URL; one the API refuses is explained beside its field.
      await page.getByLabel('Since', { exact: true }).fill('yesterday');
      await page.getByRole('button', { name: 'Show events' }).click();
      await page.locator('#ev-since-error').waitFor();
      await page.getByLabel('Since', { exact: true }).fill('');
      await page.getByLabel('Kind', { exact: true }).fill('test.before');
      await page.getByRole('button', { name: 'Show events' }).click();
      await page.waitForURL(/kind=test.before/);
      await page.locator('[data-testid="live-state"][data-state="live"]').waitFor();
      assert.equal(await rows.count(), 1);
      await svc.securityEvents.record({ kind: 'test.other', subject: 'device:pe-2', details: {} });
      await svc.securityEvents.record({ kind: 'test.before', subject: 'device:pe-2', details: { again: true } });
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="events"] tbody tr').length === 2, undefined, {
        timeout: 10_000,
      });
      assert.equal(await rows.filter({ hasText: 'test.other' }).count(), 0, 'the stream is filtered as the list');
      // Live events are capped in memory: the newest 500 are kept.
      const flood = await svc.db.transaction((tx) =>
        svc.securityEvents.recordIn(
          tx,
          Array.from({ length: 520 }, (_, n) => ({ kind: 'test.before', subject: `device:flood-${n}`, details: {} })),
        ),
      );
      await svc.securityEvents.announce(flood);
      await page.getByTestId('events').getByText('(the newest 500 kept)').waitFor({ timeout: 20_000 });
      assert.equal(await rows.count(), 500);
      assert.match((await rows.first().textContent()) ?? '', /device:flood-519/);
      // Leaving the page closes the stream.
      const closed = page.waitForEvent('requestfailed', { predicate: (r) => r.url().includes('/v1/events/stream'), timeout: 5000 });
      await page.getByRole('link', { name: 'Fleet' }).click();
      await page.getByRole('heading', { level: 1, name: 'Fleet' }).waitFor();
      assert.match((await closed).failure()?.errorText ?? '', /ABORTED/);
      await ctx.close();
      assert.deepEqual(web.dialogs, []);
    });

    it('pages the audit log with filters, shows hostile details as text, and the chain verified', async () => {
      const { ctx, page } = await web.open();
      await web.signIn(page, 'auditor');
      await page.getByRole('link', { name: 'Audit' }).click();
      await page.getByRole('heading', { level: 1, name: 'Audit log' }).waitFor();
      const verification = page.getByTestId('audit-verification');
      await verification.getByText('Chain intact').waitFor();
      const v = (await api.get('/v1/audit/verification').set(auth('auditor')).expect(200)).body as {
        ok: boolean;
        chain: { checked: number };
      };
      assert.equal(v.ok, true, JSON.stringify(v));
      assert.equal(await verification.getAttribute('data-ok'), 'true');
      assert.match((await verification.textContent()) ?? '', /\d+ entries checked/);
      // Once the service has walked the chain, a page arriving shows its incremental verification, and says so;
      // Verify again walks the whole chain.
      await page.reload();
      const scope = verification.getByTestId('verify-scope');
      await verification.locator('[data-testid="verify-scope"][data-mode="incremental"]').waitFor();
      assert.match((await scope.textContent()) ?? '', /Entries after seq \d+ were walked now; the whole chain was last walked/);
      await verification.getByRole('button', { name: 'Verify again' }).click();
      await verification.locator('[data-testid="verify-scope"][data-mode="full"]').waitFor();
      assert.match((await scope.textContent()) ?? '', /The whole chain was walked/);

      const rows = page.getByTestId('audit').locator('tbody tr');
      await rows.first().waitFor();
      assert.equal(await rows.count(), 50);
      const newest = Number(await rows.first().getAttribute('data-seq'));
      await page.getByRole('link', { name: 'Older entries' }).click();
      await page.waitForURL(/cursor=/);
      await page.waitForFunction(
        (n) => Number(document.querySelectorAll('[data-testid="audit"] tbody tr')[0]?.getAttribute('data-seq')) === n,
        newest - 50,
      );
      await page.getByRole('link', { name: 'Newest entries' }).click();
      await page.waitForFunction(
        (n) => Number(document.querySelectorAll('[data-testid="audit"] tbody tr')[0]?.getAttribute('data-seq')) === n,
        newest,
      );

      await svc.securityEvents.record({ kind: 'test.audited', subject: 'device:pe-1', details: { note: XSS } });
      await page.getByLabel('Action', { exact: true }).fill('security.test.audited');
      await page.getByRole('button', { name: 'Show entries' }).click();
      await page.waitForURL(/action=security.test.audited/);
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="audit"] tbody tr').length === 1);
      assert.ok(((await rows.first().textContent()) ?? '').includes(XSS));
      assert.equal(await page.getByTestId('audit').locator('img').count(), 0);
      await web.shot(page, 'audit');
      await ctx.close();
      assert.deepEqual(web.dialogs, []);
    });

    it('has no serious or critical accessibility violations on Posture (with the target form and an outcome open), Events and Audit', async () => {
      const { ctx, page } = await web.open({ bypassCSP: true });
      await web.signIn(page, 'admin');
      await gotoPosture(page);
      await page.locator('.outcomes summary').first().click();
      await web.axe(page, 'posture');
      await page.goto(`${web.url}/console/events`);
      await page.locator('[data-testid="live-state"][data-state="live"]').waitFor();
      await web.axe(page, 'events');
      await page.goto(`${web.url}/console/audit`);
      await page.getByTestId('audit-verification').getByText('Chain intact').waitFor();
      await page.getByTestId('audit').waitFor();
      await web.axe(page, 'audit');
      await ctx.close();
      assert.deepEqual(web.pageErrors, [], 'no script error or CSP violation on any page');
      assert.deepEqual(web.dialogs, []);
    });
  });
}
