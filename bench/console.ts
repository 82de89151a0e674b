/**
 * The web console's page times (issue #25): every page loaded by its URL in Debian's headless
 * chromium (playwright-core, never a downloaded browser), on a store of 100,000 devices with their
 * certificates, timed from the navigation's start until the page's data is on screen; each against
 * the same run's `GET /v1/devices?limit=50` fetched from node. And the console's JavaScript,
 * gzipped, against its budget.
 */
import 'reflect-metadata';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { chromium, type Browser, type Page } from 'playwright-core';
import { defaultConsoleDir } from '../src/http/console-static.js';
import { listen, type Service } from '../src/main.js';
import { BULK_REVOKE } from '../src/respond/gated-actions.js';
import type { ApprovalActor } from '../src/respond/approvals.js';
import { benchService, freshDatabase, NO_RATE_LIMITS } from './db.js';
import { LOTS, seedFleet } from './fleet.js';
import { result, type BenchResult } from './lib.js';

/** BENCH_CONSOLE_DEVICES: a smaller fleet for a quick look; the page's figures are at 100,000. */
const DEVICES = Number(process.env.BENCH_CONSOLE_DEVICES ?? 100_000);
/** Loads of each page (and fetches of the baseline) that are counted, after one that is not. */
const COUNTED = Number(process.env.BENCH_CONSOLE_NAVIGATIONS ?? 20);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Issue #25's budgets: each page under 300 ms, the console's JavaScript under 300 KB gzipped. */
const PAGE_BUDGET_MS = 300;
const JS_BUDGET_KB = 300;
const INCIDENTS = 60;
const APPROVALS = 30;
const EVENTS = 3_000;
const BASELINE_PATH = '/v1/devices?limit=50';
const FULL_VERIFY_PATH = '/v1/audit/verification?full=true';
const FRESH_POSTURE_PATH = '/v1/posture?fresh=true';

const lot = (i: number) => `LOT-${String(i % LOTS).padStart(2, '0')}`;

/**
 * The console's pages as the benchmark loads them: the URL of the i-th load (some vary, so that
 * not every load asks the same rows), and the elements that appear only once the page's data is
 * rendered (every one of them must be there).
 */
interface PageSpec {
  name: string;
  /** The path as the docs show it. */
  shown: string;
  url(i: number, ids: string[]): string;
  rendered: string[];
}

const PAGES: PageSpec[] = [
  { name: 'Fleet', shown: '/console/', url: () => '/console/', rendered: ['table.devices tbody tr', 'nav.counts'] },
  {
    name: 'Fleet filtered',
    shown: '/console/?lot=LOT-nn&status=active',
    url: (i) => `/console/?lot=${lot(i)}&status=active`,
    rendered: ['table.devices tbody tr', 'nav.counts'],
  },
  {
    name: 'Device',
    shown: '/console/devices/{id}',
    url: (i, ids) => `/console/devices/${ids[i % ids.length]}`,
    rendered: ['[data-testid="device-status"]', 'table.certs tbody tr'],
  },
  {
    name: 'Provisioning',
    shown: '/console/provisioning?lot=LOT-nn',
    url: (i) => `/console/provisioning?lot=${lot(i)}`,
    rendered: ['[data-testid="lot-enrolled"]', '[data-testid="lot-tokens"]'],
  },
  { name: 'Incidents', shown: '/console/incidents', url: () => '/console/incidents', rendered: ['table.incidents tbody tr'] },
  { name: 'Approvals', shown: '/console/approvals', url: () => '/console/approvals', rendered: ['li[data-approval]'] },
  {
    name: 'Revocation health',
    shown: '/console/revocation',
    url: () => '/console/revocation',
    rendered: ['table.crls tbody tr', 'table.ocsp'],
  },
  { name: 'Posture', shown: '/console/posture', url: () => '/console/posture', rendered: ['[data-testid="tier-table"]'] },
  { name: 'Events', shown: '/console/events', url: () => '/console/events', rendered: ['table[data-testid="events"] tbody tr'] },
  {
    name: 'Audit',
    shown: '/console/audit',
    url: () => '/console/audit',
    rendered: ['table[data-testid="audit"] tbody tr', '[data-testid="audit-verification"][data-ok]'],
  },
];

export const description =
  `The web console's pages (issue #25) on a fleet of ${DEVICES.toLocaleString('en-US')} devices with their certificates (seeded set-based ` +
  `as bench/fleet.ts does: ${LOTS} lots, 8% revoked, 3% suspended, 3% registered without a certificate), plus ${INCIDENTS} open incidents, ` +
  `${APPROVALS} pending bulk-revocation proposals, ${EVENTS.toLocaleString('en-US')} security events (each also an audit entry), a lot token ` +
  `per lot and a published CRL; PostgreSQL from DATABASE_URL, the service in this process on a loopback port, rate limits off. Debian's ` +
  `headless chromium (playwright-core), signed in once as an admin (the console's session cookie), loads each page by its URL ` +
  `(a full page load: index.html, the cached script, the session check, the page's API requests, the render): ` +
  PAGES.map((p) => `${p.name} \`${p.shown}\``).join(', ') +
  `. A page's time runs from the navigation's start (performance.timeOrigin) to the first animation frame after every element that ` +
  `only its data makes is in the document (a MutationObserver in the page: the device table's rows, the device's certificates, the lot's ` +
  `progress and tokens, the incidents' rows, a proposal, the CRL rows, the tier table, the events' rows, the audit rows and the chain's ` +
  `verification). The Audit page's verification is the one it asks on arrival: the service's incremental one (the entries appended ` +
  `since its last verification re-hashed (none here: loading the pages appends none), chained on the newest entry found intact (that entry checked ` +
  `unchanged); the whole chain was walked in the first, uncounted ` +
  `round, and is again at least every AUDIT_FULL_VERIFY_MINUTES, 60); a whole walk (\`GET ${FULL_VERIFY_PATH}\`, what Verify again ` +
  `asks) is timed from node once a round, as a figure of its own. The Posture page's fleet-wide figures (devices, renewal, key types: ` +
  `scans of every device and certificate) are reused by the service for POSTURE_FLEET_COUNTS_MAX_AGE_SECONDS (30, the default), so ` +
  `its loads reuse a count (the note says how many counted anew): the count made by the previous round's fresh request, since a round takes less than 30 s; a count anew (\`GET ${FRESH_POSTURE_PATH}\`, what ` +
  `Count the fleet again asks) is timed from node once a round, as a figure of its own. ${COUNTED + 1} rounds, the first uncounted; each round fetches ` +
  `the baseline once from node (\`fetch\`, keep-alive, an admin key, \`GET ${BASELINE_PATH}\` read to its JSON) and then loads every page ` +
  `once, so page and baseline share the machine's moments. p50 and p99 by nearest rank over the ${COUNTED} counted (p99 is the slowest of them); ratio = page / baseline at the same ` +
  `percentile. Issue #25's budget is ${PAGE_BUDGET_MS} ms a page: the notes say where a figure stands against it (reported, not asserted). ` +
  `Last, the console is built (scripts/build-console.mjs) and its JavaScript (every .js under dist/console/assets) gzipped by node:zlib ` +
  `(default level) against the ${JS_BUDGET_KB} KB budget (1 KB = 1,000 bytes).`;

/** The value at percentile `p` (0..100) of `xs` by nearest rank. */
function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * Evaluated in the page (a string, so nothing the bench's compiler adds travels with it; CDP
 * evaluation is not subject to the console's CSP): resolves with performance.now(), milliseconds
 * since the navigation started, at the first animation frame after every selector matches.
 */
const renderedAt = (selectors: string[]) => `new Promise((resolve, reject) => {
  const selectors = ${JSON.stringify(selectors)};
  const ready = () => selectors.every((s) => document.querySelector(s) !== null);
  let observer;
  const timer = setTimeout(() => {
    if (observer) observer.disconnect();
    reject(new Error('not rendered within 60 s: ' + selectors.filter((s) => document.querySelector(s) === null).join(', ')));
  }, 60000);
  const done = () => {
    clearTimeout(timer);
    requestAnimationFrame(() => resolve(performance.now()));
  };
  if (ready()) return done();
  observer = new MutationObserver(() => {
    if (!ready()) return;
    observer.disconnect();
    done();
  });
  observer.observe(document, { childList: true, subtree: true, attributes: true });
})`;

/** One load of `url`: milliseconds from its navigation's start until `rendered` all appear. */
async function load(page: Page, url: string, rendered: string[]): Promise<number> {
  await page.goto(url, { waitUntil: 'commit' });
  for (let attempt = 0; ; attempt++) {
    try {
      return (await page.evaluate(renderedAt(rendered))) as number;
    } catch (e) {
      // Evaluated in the document being replaced, just as the new one commits: once more, in the new one.
      if (attempt > 0 || !/context was destroyed|navigat/i.test(String(e))) throw e;
    }
  }
}

/** The built console's JavaScript, each file gzipped as scripts/build-console.mjs measures it. */
function consoleJs(): { files: number; raw: number; gzipped: number; cssGzipped: number } {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const build = spawnSync(process.execPath, [join(root, 'scripts', 'build-console.mjs')], { encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`the console build failed:\n${build.stdout}\n${build.stderr}`);
  const assets = join(defaultConsoleDir(), 'assets');
  const out = { files: 0, raw: 0, gzipped: 0, cssGzipped: 0 };
  for (const name of readdirSync(assets)) {
    const bytes = readFileSync(join(assets, name));
    if (name.endsWith('.js')) {
      out.files++;
      out.raw += bytes.length;
      out.gzipped += gzipSync(bytes).length;
    } else if (name.endsWith('.css')) out.cssGzipped += gzipSync(bytes).length;
  }
  if (out.files === 0) throw new Error(`no JavaScript in ${assets}`);
  return out;
}

export async function run(): Promise<BenchResult[]> {
  // Built first: the pages below are served from this build, and its size is one of the figures.
  const js = consoleJs();
  const store = await freshDatabase(16);
  const dir = mkdtempSync(join(tmpdir(), 'mqttca-bench-console-'));
  let svc: Service | undefined;
  let server: Awaited<ReturnType<typeof listen>> | undefined;
  let browser: Browser | undefined;
  try {
    const started = await benchService(store.db, { dataDir: dir, env: { PORT: '0', ...NO_RATE_LIMITS } });
    svc = started.svc;
    const s = started.svc;
    const issuingId = started.issuingId;
    const ctx = { actor: 'bench' };
    const admin = await s.apiKeys.create({ name: 'console bench admin', role: 'admin' }, ctx);
    const operator = await s.apiKeys.create({ name: 'console bench operator', role: 'operator' }, ctx);

    // ---- the store: the fleet, then what the other pages show -------------------------------------
    let t = performance.now();
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    const der = (await s.issuance.issue({ profile: 'device', deviceId: 'fleet-sample', subjectPublicKeyInfo: spki }, ctx)).der;
    await store.db.raw('create sequence fleet_revocation_seq');
    const base = new Date(Math.floor(Date.now() / 1000) * 1000 - 30 * 86_400_000);
    await seedFleet(store.db, issuingId, der, base, 1, DEVICES);
    const ids = (
      (await store.db.raw(`select id from devices where current_serial is not null order by random() limit ?`, [COUNTED + 1])).rows as {
        id: string;
      }[]
    ).map((r) => r.id);
    for (let i = 0; i < LOTS; i++) await s.tokens.create({ lot: lot(i), maxUses: 1_000 }, ctx);
    for (let i = 0; i < INCIDENTS; i++)
      await s.incidents.open(
        {
          kind: i % 2 ? 'lost-device' : 'device-compromise',
          title: `Meter ${ids[i % ids.length]} reported ${i % 2 ? 'lost' : 'tampered with'}`,
          targets: { devices: [ids[i % ids.length]!] },
        },
        ctx,
      );
    const proposer: ApprovalActor = { actor: `api-key:${operator.id}`, keyId: operator.id, name: operator.name, role: 'operator' };
    for (let i = 0; i < APPROVALS; i++) {
      const deviceIds = Array.from({ length: 5 }, (_, k) => `meter-${String(1 + (((i * 5 + k) * 97) % DEVICES)).padStart(7, '0')}`);
      await s.approvals.propose(
        BULK_REVOKE,
        { selector: { deviceIds }, reason: 'keyCompromise', issuedUpTo: new Date().toISOString() },
        proposer,
        `bench proposal ${i + 1}`,
      );
    }
    const kinds = ['auth.failed', 'enrollment.refused', 'ocsp.revoked-queried'];
    for (let i = 0; i < EVENTS; i += 500) {
      const batch = Array.from({ length: Math.min(500, EVENTS - i) }, (_, k) => ({
        kind: kinds[(i + k) % kinds.length]!,
        severity: (i + k) % 10 === 0 ? ('critical' as const) : ('warning' as const),
        source: `10.0.${(i + k) % 200}.${(i + k) % 250}`,
        subject: ids[(i + k) % ids.length],
        details: { attempt: i + k },
      }));
      // Recorded without announcing them: no automatic response (a blocked source, an incident) follows.
      await store.db.transaction((tx) => s.securityEvents.recordIn(tx, batch));
    }
    await s.crls.publish(issuingId);
    await store.db.raw('analyze');
    const seedS = (performance.now() - t) / 1000;

    server = await listen(s);
    const origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

    // ---- chromium, signed in once ------------------------------------------------------------------
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
    const page = await (await browser.newContext()).newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    await page.goto(`${origin}/`);
    await page.waitForSelector('#api-key');
    await page.fill('#api-key', admin.key);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { level: 1, name: 'Fleet' }).waitFor();

    // ---- rounds: the baseline once, then every page once --------------------------------------------
    const api: number[] = [];
    const fullVerify: number[] = [];
    const freshPosture: number[] = [];
    let postureCountedAnew = 0;
    let auditEntries = 0;
    const times = new Map<string, number[]>(PAGES.map((p) => [p.name, []]));
    t = performance.now();
    for (let round = 0; round <= COUNTED; round++) {
      const t0 = performance.now();
      const res = await fetch(`${origin}${BASELINE_PATH}`, { headers: { Authorization: `Bearer ${admin.key}` } });
      const body = (await res.json()) as { items?: unknown[] };
      const apiMs = performance.now() - t0;
      if (res.status !== 200 || body.items?.length !== 50)
        throw new Error(`GET ${BASELINE_PATH}: HTTP ${res.status}, ${body.items?.length} items`);
      if (round > 0) api.push(apiMs);
      for (const p of PAGES) {
        const ms = await load(page, `${origin}${p.url(round, ids)}`, p.rendered);
        if (round > 0) times.get(p.name)!.push(ms);
        if (round > 0 && p.name === 'Posture')
          postureCountedAnew += (await page.getAttribute('[data-testid="fleet-counted"]', 'data-counted-anew')) === 'true' ? 1 : 0;
      }
      const t1 = performance.now();
      const full = await fetch(`${origin}${FULL_VERIFY_PATH}`, { headers: { Authorization: `Bearer ${admin.key}` } });
      const v = (await full.json()) as { ok?: boolean; chain?: { mode?: string; checked?: number } };
      if (full.status !== 200 || v.ok !== true || v.chain?.mode !== 'full')
        throw new Error(`GET ${FULL_VERIFY_PATH}: HTTP ${full.status}, ${JSON.stringify(v).slice(0, 300)}`);
      if (round > 0) fullVerify.push(performance.now() - t1);
      auditEntries = v.chain.checked ?? 0;
      const t2 = performance.now();
      const posture = await fetch(`${origin}${FRESH_POSTURE_PATH}`, { headers: { Authorization: `Bearer ${admin.key}` } });
      const r = (await posture.json()) as { fleetCountedAt?: string; generatedAt?: string };
      if (posture.status !== 200 || !r.fleetCountedAt || Date.parse(r.fleetCountedAt) < Date.parse(r.generatedAt!))
        throw new Error(`GET ${FRESH_POSTURE_PATH}: HTTP ${posture.status}, ${JSON.stringify(r).slice(0, 300)}`);
      if (round > 0) freshPosture.push(performance.now() - t2);
    }
    const measureS = (performance.now() - t) / 1000;
    if (pageErrors.length > 0) throw new Error(`script errors in the console: ${pageErrors.join('; ')}`);

    // ---- results --------------------------------------------------------------------------------------
    const n = (x: number) => x.toLocaleString('en-US');
    const at = `${n(DEVICES)} devices`;
    const apiP50 = percentile(api, 50);
    const apiP99 = percentile(api, 99);
    const budget = (ms: number) =>
      `budget ${PAGE_BUDGET_MS} ms: ${ms < PAGE_BUDGET_MS ? 'under' : 'over'} (${Math.round((ms / PAGE_BUDGET_MS) * 100)}%)`;
    const out: BenchResult[] = [
      result(
        `GET ${BASELINE_PATH} from node, p50, ${at}`,
        'ms',
        apiP50,
        { name: `GET ${BASELINE_PATH} from node, p50, ${at}`, value: apiP50 },
        `p99 ${apiP99.toFixed(1)} ms; ${COUNTED} fetches after 1 uncounted, one a round`,
      ),
    ];
    for (const p of PAGES) {
      const xs = times.get(p.name)!;
      const p50 = percentile(xs, 50);
      const p99 = percentile(xs, 99);
      out.push(
        result(
          `${p.name} page (${p.shown}), p50, ${at}`,
          'ms',
          p50,
          { name: `GET ${BASELINE_PATH} from node, p50`, value: apiP50 },
          `${budget(p50)}; ${COUNTED} loads after 1 uncounted${p.name === 'Posture' ? `, ${postureCountedAnew} of them counted the fleet anew` : ''}`,
        ),
        result(
          `${p.name} page (${p.shown}), p99, ${at}`,
          'ms',
          p99,
          { name: `GET ${BASELINE_PATH} from node, p99`, value: apiP99 },
          `${budget(p99)}; the slowest of ${COUNTED}`,
        ),
      );
    }
    out.push(
      result(
        `GET ${FULL_VERIFY_PATH} from node (a whole walk of the audit chain), p50, ${n(auditEntries)} entries`,
        'ms',
        percentile(fullVerify, 50),
        { name: `GET ${BASELINE_PATH} from node, p50`, value: apiP50 },
        `p99 ${percentile(fullVerify, 99).toFixed(1)} ms; ${COUNTED} after 1 uncounted, one a round; grows with the log (the Audit page asks the incremental one)`,
      ),
      result(
        `GET ${FRESH_POSTURE_PATH} from node (the fleet counted anew), p50, ${at}`,
        'ms',
        percentile(freshPosture, 50),
        { name: `GET ${BASELINE_PATH} from node, p50`, value: apiP50 },
        `p99 ${percentile(freshPosture, 99).toFixed(1)} ms; ${COUNTED} after 1 uncounted, one a round; grows with the fleet (the Posture page reuses a count up to 30 s old)`,
      ),
    );
    const kb = js.gzipped / 1000;
    out.push(
      result(
        'console JavaScript, gzipped',
        'KB',
        kb,
        { name: `issue #25's budget`, value: JS_BUDGET_KB },
        `${n(js.gzipped)} bytes in ${js.files} file${js.files === 1 ? '' : 's'} (${n(js.raw)} bytes minified); CSS ${n(js.cssGzipped)} bytes gzipped, not counted`,
      ),
      result(
        `seeding ${n(DEVICES)} devices, their certificates and the pages' data`,
        's',
        seedS,
        { name: 'measuring every page', value: measureS },
        `${store.label}; ${COUNTED + 1} rounds of ${PAGES.length} pages and the baseline`,
      ),
    );
    return out;
  } finally {
    await browser?.close();
    if (server) {
      server.close();
      server.closeAllConnections();
    }
    await svc?.close();
    await store.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await run())
    console.log(
      `${r.name}: ${r.value.toFixed(1)} ${r.unit} (ratio ${r.ratio.toFixed(3)} to ${r.baselineName})${r.note ? ` — ${r.note}` : ''}`,
    );
}
