import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { listenOnLoopback } from './http.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

/**
 * The web console in a real browser: Debian's chromium driven by playwright-core (never a
 * downloaded browser), against the service's real HTTP handler on a loopback port (every /v1
 * response checked against openapi.yaml). A test skips on `toolSkip('chromium')`, so in CI a
 * missing chromium fails the launch instead. Build the console (ensureConsoleBuilt) before the service.
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const ARTIFACTS = join(process.env.TEST_ARTIFACTS_DIR ?? '.tmp/artifacts', 'console');

export interface ConsoleBrowser {
  /** The service's HTTP handler: http://127.0.0.1:<port> */
  url: string;
  browser: Browser;
  /** Every alert, confirm or prompt a page of `open()` raised (dismissed). */
  dialogs: string[];
  /** Every script error and CSP violation on a page of `open()`. */
  pageErrors: string[];
  /** A fresh browser context (own cookies) whose page records dialogs and page errors. */
  open(opts?: { bypassCSP?: boolean }): Promise<{ ctx: BrowserContext; page: Page }>;
  /**
   * Signs in with the role's API key: by keyboard (type the key, Enter), or with `mouse` by the
   * labelled field and the Sign in button. `onForm` runs once the form shows, before the key is
   * typed (keyboard only). Waits for the Fleet.
   */
  signIn(page: Page, role: Role, opts?: { mouse?: boolean; onForm?: (page: Page) => Promise<void> }): Promise<void>;
  /** A full-page screenshot in the artifacts folder, named `<prefix>-<name>.png`. */
  shot(page: Page, name: string): Promise<Buffer>;
  /** Fails on any serious or critical axe-core violation on the page as it is (needs a context with bypassCSP). */
  axe(page: Page, what: string): Promise<void>;
  close(): Promise<void>;
}

/** Serves `svc` on a loopback port and launches chromium; `prefix` names the screenshots (the database target). */
export async function startConsoleBrowser(svc: Service, keys: Record<Role, string>, prefix: string): Promise<ConsoleBrowser> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const server = await listenOnLoopback(createHttpHandler(svc, { validateResponses: true }));
  let browser: Browser;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  } catch (e) {
    await server.close();
    throw e;
  }
  const dialogs: string[] = [];
  const pageErrors: string[] = [];
  return {
    url: server.url,
    browser,
    dialogs,
    pageErrors,
    async open(opts = {}) {
      const ctx = await browser.newContext(opts);
      const page = await ctx.newPage();
      page.on('dialog', (d) => {
        dialogs.push(d.message());
        void d.dismiss();
      });
      page.on('pageerror', (e) => pageErrors.push(String(e)));
      page.on('console', (m) => {
        if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) pageErrors.push(m.text());
      });
      return { ctx, page };
    },
    async signIn(page, role, opts = {}) {
      await page.goto(`${server.url}/`);
      if (opts.mouse) {
        await page.getByLabel('API key').fill(keys[role]);
        await page.getByRole('button', { name: 'Sign in' }).click();
      } else {
        await page.waitForSelector('#api-key');
        await opts.onForm?.(page);
        await page.keyboard.type(keys[role]);
        await page.keyboard.press('Enter');
      }
      await page.getByRole('heading', { level: 1, name: 'Fleet' }).waitFor();
    },
    shot: (page, name) => page.screenshot({ path: join(ARTIFACTS, `${prefix}-${name}.png`), fullPage: true }),
    async axe(page, what) {
      await page.addScriptTag({ content: AXE });
      const result = (await page.evaluate('axe.run(document, { resultTypes: ["violations"] })')) as {
        violations: { id: string; impact: string | null; nodes: { target: string[] }[] }[];
      };
      const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
      assert.deepEqual(
        bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
        [],
        `${what}: accessibility violations`,
      );
    },
    async close() {
      await browser.close();
      await server.close();
    },
  };
}
