import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Page } from 'playwright-core';
import type request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { listenOnLoopback } from '../helpers/http.js';
import { ensureConsoleBuilt } from '../helpers/console.js';
import { startConsoleBrowser, type ConsoleBrowser } from '../helpers/console-browser.js';
import { p256Csr } from '../helpers/csr.js';
import { toolSkip } from '../helpers/tools.js';
import { ManualClock } from '../../src/shared/clock.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

/**
 * The console's Incidents and Approvals pages in Debian's chromium (playwright-core), against the
 * real HTTP handler: an incident opened with targets, a dry run's plan before Run, the timeline
 * followed live, a failed step retried, a two-person approval across two browsers, roles, escaping.
 */
const XSS = '<img src=x onerror=alert(1)>';

for (const target of dbTargets) {
  describe(`console incidents and approvals in chromium on ${target.name}`, { skip: target.skip ?? toolSkip('chromium') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: ReturnType<typeof request>;
    let web: ConsoleBrowser;
    let hook: { url: string; close(): Promise<void> };
    const keys = {} as Record<Role, string>;
    const clock = new ManualClock(new Date());
    const serials: Record<string, string> = {};
    /** The broker webhook receiver: down (503) or up (every effect applied and confirmed). */
    const broker = { up: true, calls: 0 };

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const enroll = async (deviceId: string) => {
      const tok = (await api.post('/v1/enrollment-tokens').set(auth('admin')).send({ deviceId }).expect(201)).body.token as string;
      const res = await api
        .post('/v1/enroll')
        .set({ Authorization: `Bearer ${tok}` })
        .send({ csr: p256Csr(deviceId).pem })
        .expect(201);
      serials[deviceId] = res.body.serial as string;
    };
    const certStatus = async (deviceId: string) =>
      (await api.get(`/v1/certificates/${serials[deviceId]}`).set(auth('auditor')).expect(200)).body.status as string;
    const openIncident = async (title: string, targets: Record<string, unknown>) =>
      (await api.post('/v1/incidents').set(auth('operator')).send({ kind: 'device-compromise', title, targets }).expect(201)).body
        .id as string;

    before(async () => {
      ensureConsoleBuilt();
      hook = await listenOnLoopback((req: IncomingMessage, res: ServerResponse) => {
        let body = '';
        req.on('data', (c: Buffer) => (body += c.toString()));
        req.on('end', () => {
          broker.calls++;
          if (!broker.up) {
            res.writeHead(503).end();
            return;
          }
          const { clientIds } = JSON.parse(body) as { clientIds: string[] };
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ effects: clientIds.map((clientId) => ({ clientId, applied: true, confirmed: true })) }));
        });
      });
      const made = await makeApiService(target, {
        clock,
        env: {
          // Above two certificates a revocation waits for a second person.
          BULK_REVOKE_APPROVAL_THRESHOLD: '2',
          BROKER_WEBHOOK_URL: `${hook.url}/broker`,
          BROKER_WEBHOOK_SECRET: 'w'.repeat(40),
        },
      });
      ({ svc, api } = made);
      Object.assign(keys, made.keys);
      web = await startConsoleBrowser(svc, keys, target.name);
      await api
        .post('/v1/devices/import')
        .set(auth('provisioner'))
        .send({
          lot: 'LOT-B',
          devices: ['bulk-1', 'bulk-2', 'bulk-3'].map((id) => ({ id, model: 'EM-3' })),
        })
        .expect(201);
      for (const id of ['meter-1', 'meter-hook'])
        await api.post('/v1/devices').set(auth('provisioner')).send({ id, lot: 'LOT-S' }).expect(201);
      for (const id of ['meter-1', 'bulk-1', 'bulk-2', 'bulk-3']) await enroll(id);
    });
    after(async () => {
      await web?.close();
      await svc?.dispose();
      await hook?.close();
    });

    const gotoIncident = async (page: Page, id: string) => {
      await page.goto(`${web.url}/console/incidents/${id}`);
      await page.getByRole('heading', { level: 2, name: 'Timeline' }).waitFor();
    };
    const step = (page: Page, seq: number, status?: string) =>
      page.locator(`table.timeline tr[data-step="${seq}"]${status ? `[data-status="${status}"]` : ''}`);
    /** Dry run, then Run through the confirmation that names the incident and the count. */
    const dryRunThenRun = async (page: Page, incidentId: string, action: string, count: number) => {
      await page.getByLabel('Action', { exact: true }).selectOption(action);
      await page.getByRole('button', { name: 'Dry run' }).click();
      await page
        .getByTestId('plan')
        .getByRole('heading', { name: `Dry run: ${action} would touch ${count}` })
        .waitFor();
      await page.getByRole('button', { name: 'Run…' }).click();
      const dialog = page.getByRole('dialog', { name: new RegExp(`Run ${action} in incident`) });
      await dialog.waitFor();
      assert.match((await dialog.textContent()) ?? '', new RegExp(`${incidentId} touches ${count}`));
      const confirm = dialog.getByRole('button', { name: 'Run', exact: true });
      assert.ok(await confirm.isDisabled(), 'not before the incident id is typed');
      await dialog.getByLabel(/Type the incident id/).fill(incidentId);
      await confirm.click();
      await dialog.waitFor({ state: 'hidden' });
    };

    it('opens an incident (the API reason beside the field), dry runs, runs only what was dry-run, follows the timeline live, closes', async () => {
      const { ctx, page } = await web.open();
      // The Idempotency-Key of every state-changing request the page sends (docs/api.md#idempotency-keys).
      const sent: { path: string; key: string | undefined; dryRun: boolean }[] = [];
      page.on('request', (r) => {
        if (r.method() === 'POST' && r.url().includes('/v1/incidents'))
          sent.push({
            path: new URL(r.url()).pathname,
            key: r.headers()['idempotency-key'],
            dryRun: /"dryRun":true/.test(r.postData() ?? ''),
          });
      });
      await web.signIn(page, 'operator');
      await page.getByRole('link', { name: 'Incidents' }).click();
      await page.getByRole('heading', { level: 1, name: 'Incidents' }).waitFor();
      await page.getByText('Open incident', { exact: true }).first().click();
      await page.getByLabel('Kind').selectOption('device-compromise');
      await page.getByLabel('Title').fill('meter-1 tampered');
      await page.getByLabel('Devices').fill('meter-1, ghost-9');
      await page.getByRole('button', { name: 'Open incident' }).click();
      const err = page.locator('#oi-devices-error');
      await err.waitFor();
      assert.match((await err.textContent()) ?? '', /unknown targets: ghost-9/);
      assert.equal(await page.getByLabel('Devices').getAttribute('aria-invalid'), 'true');
      await page.getByLabel('Devices').fill('meter-1');
      await page.getByRole('button', { name: 'Open incident' }).click();
      await page.getByRole('heading', { level: 2, name: 'Timeline' }).waitFor();
      const id = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
      assert.match(id, /^inc_/);
      assert.equal(await page.getByTestId('incident-status').textContent(), 'open');

      // Run is not offered before a dry run of the same parameters.
      const run = page.getByRole('button', { name: 'Run…' });
      assert.ok(await run.isDisabled());
      await page.getByRole('button', { name: 'Dry run' }).click();
      const plan = page.getByTestId('plan');
      await plan.getByRole('heading', { name: 'Dry run: revoke-certificates would touch 1' }).waitFor();
      assert.match((await plan.textContent()) ?? '', new RegExp(`certificate ${serials['meter-1']}`));
      assert.ok(await run.isEnabled());
      await page.getByLabel('Reason').selectOption('superseded');
      assert.ok(await run.isDisabled(), 'other parameters than the dry run’s');
      await page.getByLabel('Reason').selectOption('keyCompromise');
      assert.ok(await run.isEnabled(), 'the dry-run parameters again');
      assert.equal(await certStatus('meter-1'), 'issued', 'a dry run changes nothing');
      await step(page, 1).waitFor();
      await web.shot(page, 'incident-plan');

      await run.click();
      const dialog = page.getByRole('dialog', { name: /Run revoke-certificates in incident meter-1 tampered/ });
      await dialog.getByLabel(/Type the incident id/).fill(id);
      await web.shot(page, 'incident-confirm');
      // A double click sends the action once.
      await dialog.getByRole('button', { name: 'Run', exact: true }).dblclick();
      await page.getByRole('status').filter({ hasText: 'revoke-certificates (step #2) succeeded: touched 1' }).waitFor();
      await step(page, 2, 'succeeded').waitFor();
      assert.equal(await certStatus('meter-1'), 'revoked');
      const timeline = (await api.get(`/v1/incidents/${id}`).set(auth('auditor')).expect(200)).body as { timeline: unknown[] };
      assert.equal(timeline.timeline.length, 2, 'one dry run and one run: the double click ran nothing twice');
      // One intent, one key: the incident's opening refused for ghost-9 and sent again corrected kept its key (a refusal is
      // not kept, so the corrected request ran); the dry run had its own, the confirmed run the confirmation's.
      const opens = sent.filter((x) => x.path === '/v1/incidents');
      assert.equal(opens.length, 2);
      assert.ok(opens[0]!.key && /^[0-9a-f-]{36}$/.test(opens[0]!.key), JSON.stringify(sent));
      assert.equal(opens[1]!.key, opens[0]!.key);
      const acts = sent.filter((x) => x.path.endsWith('/actions'));
      const runs = acts.filter((x) => !x.dryRun);
      assert.ok(runs.length >= 1 && runs.every((x) => x.key === runs[0]!.key), JSON.stringify(acts));
      assert.ok(acts.filter((x) => x.dryRun).every((x) => x.key && x.key !== runs[0]!.key));

      // Live: a step someone else takes appears without a reload.
      await api.post(`/v1/incidents/${id}/actions`).set(auth('admin')).send({ action: 'suspend', dryRun: true }).expect(201);
      await step(page, 3, 'succeeded').waitFor({ timeout: 10_000 });
      assert.match((await step(page, 3).textContent()) ?? '', /suspend \(dry run\)/);

      // Closed with a hostile summary, which shows as text.
      await page.getByLabel('Summary').fill(XSS);
      await page.getByRole('button', { name: 'Close incident' }).click();
      await page
        .getByTestId('incident-status')
        .filter({ hasText: /^closed$/ })
        .waitFor();
      assert.equal(await page.getByTestId('incident-summary').textContent(), XSS);
      assert.equal(await page.locator('main img').count(), 0, 'no element was made from the summary');
      assert.equal(await page.getByRole('heading', { name: 'Run an action' }).count(), 0, 'a closed incident takes no action');
      await web.shot(page, 'incident-closed');
      await page.goto(`${web.url}/console/incidents?status=closed`);
      await page.getByRole('link', { name: id }).waitFor();
      await web.shot(page, 'incidents');
      assert.deepEqual(web.dialogs, [], 'no dialog fired');
      await ctx.close();
    });

    it('shows a failed step with its error and retries it as a new step', async () => {
      const id = await openIncident('broker kick', { devices: ['meter-hook'] });
      const { ctx, page } = await web.open();
      await web.signIn(page, 'operator');
      await gotoIncident(page, id);
      broker.up = false;
      await dryRunThenRun(page, id, 'disconnect', 1);
      await step(page, 2, 'failed').waitFor();
      assert.match((await step(page, 2).textContent()) ?? '', /503/);
      await page.getByRole('status').filter({ hasText: 'failed' }).waitFor();
      // Not closed while the failure stands.
      await page.getByLabel('Summary').fill('kicked');
      await page.getByRole('button', { name: 'Close incident' }).click();
      await page
        .getByRole('alert')
        .filter({ hasText: /failed steps not retried/ })
        .waitFor();
      await web.shot(page, 'incident-failed');

      broker.up = true;
      const calls = broker.calls;
      await page.getByRole('button', { name: 'Retry step 2' }).click();
      await step(page, 3, 'succeeded').waitFor();
      assert.equal(broker.calls, calls + 1);
      assert.match((await step(page, 3).textContent()) ?? '', /disconnect retry/);
      assert.equal(await page.getByRole('button', { name: 'Retry step 2' }).count(), 0, 'a retried step is not offered again');
      const retried = (await api.get(`/v1/incidents/${id}`).set(auth('auditor')).expect(200)).body as {
        timeline: { id: string; retryOf: string | null }[];
      };
      assert.equal(retried.timeline[2]!.retryOf, retried.timeline[1]!.id);
      await page.getByRole('button', { name: 'Close incident' }).click();
      await page
        .getByTestId('incident-status')
        .filter({ hasText: /^closed$/ })
        .waitFor();
      await ctx.close();
    });

    it('two browsers: the proposer is offered no approval of its own, a second person approves, the proposer sees the step done', async () => {
      const id = await openIncident('lot B keys leaked', { lots: ['LOT-B'] });
      const a = await web.open(); // the operator
      const b = await web.open(); // an admin, another person
      await web.signIn(a.page, 'operator');
      await web.signIn(b.page, 'admin');
      await gotoIncident(a.page, id);
      await dryRunThenRun(a.page, id, 'revoke-certificates', 3);
      await a.page.getByRole('status').filter({ hasText: 'waits for a second person' }).waitFor();
      await step(a.page, 2, 'proposed').waitFor();
      assert.equal(await certStatus('bulk-1'), 'issued', 'nothing revoked before the approval');
      const approvalId = (
        (await api.get(`/v1/incidents/${id}`).set(auth('auditor')).expect(200)).body as { timeline: { approvalId: string | null }[] }
      ).timeline[1]!.approvalId!;

      // The proposer's own proposal: shown, with no approve or reject; the API refuses it from the page too.
      const own = await a.ctx.newPage();
      own.on('pageerror', (e) => web.pageErrors.push(String(e)));
      await own.goto(`${web.url}/console/approvals`);
      const mine = own.locator(`li[data-approval="${approvalId}"]`);
      await mine.waitFor();
      assert.match((await mine.textContent()) ?? '', /Your proposal/);
      assert.equal(await mine.getByRole('button').count(), 0, 'no Approve or Reject on one’s own proposal');
      const refused = await own.evaluate(async (apId) => {
        const s = (await (await fetch('/v1/console/session')).json()) as { csrfToken: string };
        const approve = await fetch(`/v1/approvals/${apId}/approve`, { method: 'POST', headers: { 'X-CSRF-Token': s.csrfToken } });
        return { status: approve.status, body: (await approve.json()) as { detail: string } };
      }, approvalId);
      assert.equal(refused.status, 403, refused.body.detail);
      await web.shot(own, 'approvals-own');
      await own.close();

      // The second person, in the other browser.
      await b.page.getByRole('link', { name: 'Approvals' }).click();
      const theirs = b.page.locator(`li[data-approval="${approvalId}"]`);
      await theirs.waitFor();
      assert.match((await theirs.textContent()) ?? '', /touching 3/);
      await web.shot(b.page, 'approvals');
      await theirs.getByRole('button', { name: 'Approve…' }).click();
      const dialog = b.page.getByRole('dialog', { name: 'Approve incident.action' });
      await dialog.getByLabel(/Type the proposal id/).fill(approvalId);
      await dialog.getByRole('button', { name: 'Approve and run' }).click();
      await b.page.getByRole('status').filter({ hasText: 'Approved: incident.action ran' }).waitFor();

      // The proposer's page follows: the step is done, without a reload.
      await step(a.page, 2, 'succeeded').waitFor({ timeout: 10_000 });
      for (const d of ['bulk-1', 'bulk-2', 'bulk-3']) assert.equal(await certStatus(d), 'revoked');
      await web.shot(a.page, 'incident-approved');
      await a.ctx.close();
      await b.ctx.close();
    });

    it('offers an auditor no action, retry, close, open or approval, and the API refuses them from the page', async () => {
      const id = await openIncident('auditor looks', { devices: ['meter-hook'] });
      await api.post(`/v1/incidents/${id}/actions`).set(auth('operator')).send({ action: 'disconnect', dryRun: true }).expect(201);
      const { ctx, page } = await web.open();
      await web.signIn(page, 'auditor');
      await page.getByRole('link', { name: 'Incidents' }).click();
      await page.getByRole('link', { name: id }).waitFor();
      assert.equal(await page.getByText('Open incident', { exact: true }).count(), 0);
      await gotoIncident(page, id);
      await step(page, 1).waitFor();
      assert.equal(await page.getByRole('heading', { name: 'Run an action' }).count(), 0);
      assert.equal(await page.getByRole('heading', { name: 'Close the incident' }).count(), 0);
      assert.equal(
        await page
          .getByRole('button')
          .filter({ hasText: /Dry run|Run|Retry|Close/ })
          .count(),
        0,
      );
      await page.getByRole('link', { name: 'Approvals' }).click();
      await page.getByRole('heading', { level: 1, name: 'Approvals' }).waitFor();
      await page.getByRole('button', { name: 'Show approvals' }).waitFor();
      assert.equal(await page.getByRole('button', { name: /Approve|Reject/ }).count(), 0);
      const status = await page.evaluate(async (incidentId) => {
        const s = (await (await fetch('/v1/console/session')).json()) as { csrfToken: string };
        const r = await fetch(`/v1/incidents/${incidentId}/actions`, {
          method: 'POST',
          headers: { 'X-CSRF-Token': s.csrfToken, 'Content-Type': 'application/json' },
          body: JSON.stringify({ action: 'disconnect' }),
        });
        return r.status;
      }, id);
      assert.equal(status, 403);
      await ctx.close();
    });

    it('has no serious or critical accessibility violations on Incidents, an incident with its plan, its confirmation, and Approvals', async () => {
      const id = await openIncident('a11y', { devices: ['meter-hook'] });
      const ctx = await web.browser.newContext({ bypassCSP: true });
      const page = await ctx.newPage();
      await web.signIn(page, 'operator');
      await page.goto(`${web.url}/console/incidents?status=any`);
      await page.getByRole('link', { name: id }).waitFor();
      await page.getByText('Open incident', { exact: true }).first().click();
      await web.axe(page, 'incidents');
      await gotoIncident(page, id);
      await page.getByLabel('Action', { exact: true }).selectOption('disconnect');
      await page.getByRole('button', { name: 'Dry run' }).click();
      await page.getByTestId('plan').waitFor();
      await web.axe(page, 'incident');
      await page.getByRole('button', { name: 'Run…' }).click();
      await page.getByRole('dialog').waitFor();
      await web.axe(page, 'run confirmation');
      await page.keyboard.press('Escape');
      await page.goto(`${web.url}/console/approvals?status=any`);
      await page.locator('li[data-approval]').first().waitFor();
      await web.axe(page, 'approvals');
      await ctx.close();
      assert.deepEqual(web.pageErrors, [], 'no script error or CSP violation on any page');
      assert.deepEqual(web.dialogs, []);
    });
  });
}
