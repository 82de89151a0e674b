import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { seg, UsageError } from '../api-client.js';
import { action, confirm, wholeNumber, type Ctx } from '../run.js';
import { fields, table, when } from '../table.js';
import type { ApiCertificate } from '../types.js';
import type { DeviceView } from '../../shared/api-views.js';

interface ListOpts {
  status?: string;
  kind?: string;
  lot?: string;
  model?: string;
  firmware?: string;
  site?: string;
  expiringBefore?: string;
  limit?: number;
  cursor?: string;
  all?: boolean;
}

export const deviceColumns = [
  { header: 'ID', value: (d: DeviceView) => d.id },
  { header: 'KIND', value: (d: DeviceView) => d.kind },
  { header: 'STATUS', value: (d: DeviceView) => d.status },
  { header: 'LOT', value: (d: DeviceView) => d.lot },
  { header: 'MODEL', value: (d: DeviceView) => d.model },
  { header: 'FIRMWARE', value: (d: DeviceView) => d.firmwareVersion },
  { header: 'SITE', value: (d: DeviceView) => d.site },
  { header: 'CERT EXPIRES', value: (d: DeviceView) => when(d.currentNotAfter), raw: true },
];

async function list(ctx: Ctx, o: ListOpts): Promise<void> {
  if (o.all && o.cursor) throw new UsageError('--all starts from the first page: give --cursor or --all, not both');
  const query = {
    status: o.status,
    kind: o.kind,
    lot: o.lot,
    model: o.model,
    firmwareVersion: o.firmware,
    site: o.site,
    expiringBefore: o.expiringBefore,
    limit: o.limit ?? (o.all ? 500 : undefined),
    cursor: o.cursor,
  };
  const page = await ctx.api.list<DeviceView>('/v1/devices', query, { all: o.all });
  if (ctx.json) return ctx.printJson(page);
  ctx.out(page.items.length ? table(page.items, deviceColumns) : 'no devices');
  if (page.nextCursor) ctx.note(`more: --cursor ${page.nextCursor} (or --all)`);
}

function deviceFields(d: DeviceView): string {
  return fields([
    ['id', d.id],
    ['kind', d.kind],
    ['status', d.status],
    ['lot', d.lot],
    ['model', d.model],
    ['hardware', d.hardwareRevision],
    ['firmware', d.firmwareVersion],
    ['site', d.site],
    [
      'labels',
      Object.keys(d.labels).length
        ? Object.entries(d.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(', ')
        : null,
    ],
    ['current serial', d.currentSerial],
    ['cert expires', when(d.currentNotAfter)],
    ['created', when(d.createdAt)],
    ['activated', when(d.activatedAt)],
    ['suspended', when(d.suspendedAt)],
    ['revoked', when(d.revokedAt)],
    ['decommissioned', when(d.decommissionedAt)],
  ]);
}

async function show(ctx: Ctx, id: string): Promise<void> {
  const d = (await ctx.api.get<DeviceView>(`/v1/devices/${seg(id)}`)).body;
  if (ctx.json) return ctx.printJson(d);
  const certs = await ctx.api.list<ApiCertificate>('/v1/certificates', { deviceId: d.id, limit: 20 });
  ctx.out(deviceFields(d));
  if (certs.items.length) {
    ctx.out('\ncertificates (newest first):');
    ctx.out(
      table(certs.items, [
        { header: 'SERIAL', value: (c) => c.serial },
        { header: 'STATUS', value: (c) => (c.revocation ? `${c.status} (${c.revocation.reason})` : c.status) },
        { header: 'PROFILE', value: (c) => c.profile },
        { header: 'NOT AFTER', value: (c) => when(c.notAfter), raw: true },
        { header: 'RENEWED FROM', value: (c) => c.renewedFrom },
      ]),
    );
    if (certs.nextCursor) ctx.note('(the newest 20 certificates; `--json` and GET /v1/certificates?deviceId= for all)');
  }
}

/** A revoked device back to registered, so it can be given a new enrollment token (its earlier tokens are voided). */
async function readmit(ctx: Ctx, id: string): Promise<void> {
  const d = (await ctx.api.post<DeviceView>(`/v1/devices/${seg(id)}/readmit`)).body;
  if (ctx.json) return ctx.printJson(d);
  ctx.out(deviceFields(d));
  ctx.note('re-admitted: it may be given a new enrollment token (`tokens create --device`); its revoked certificates stay revoked');
}

/** Out of service for good: the device is looked up, named in the question, and its id typed back (or --yes). */
async function decommission(ctx: Ctx, id: string, o: { yes?: boolean }): Promise<void> {
  const before = (await ctx.api.get<DeviceView>(`/v1/devices/${seg(id)}`)).body;
  if (before.status !== 'decommissioned') {
    const cert = before.currentSerial ? `, current certificate ${before.currentSerial}` : '';
    await confirm(
      `Decommission device ${before.id} (${before.status}${cert}); its certificates are revoked (cessationOfOperation); this cannot be undone.`,
      [before.id],
      o.yes,
    );
  }
  const d = (await ctx.api.post<DeviceView>(`/v1/devices/${seg(id)}/decommission`)).body;
  if (ctx.json) return ctx.printJson(d);
  ctx.out(deviceFields(d));
  if (before.status === 'decommissioned') ctx.note('(it was decommissioned already: nothing changed)');
}

/** CSV or JSON: `--format`, else the file's extension, else whether it starts with `[` or `{`. */
function manifestType(file: string, text: string, format: string | undefined): 'csv' | 'json' {
  if (format) return format as 'csv' | 'json';
  const ext = extname(file).toLowerCase();
  if (ext === '.csv') return 'csv';
  if (ext === '.json') return 'json';
  return /^\s*[[{]/.test(text) ? 'json' : 'csv';
}

interface ImportPreview {
  dryRun: true;
  wouldImport: number;
  lot: string | null;
  preview: {
    row: number;
    id: string;
    kind: string;
    model: string | null;
    firmwareVersion: string | null;
    site: string | null;
    lot: string | null;
  }[];
}

async function importLot(ctx: Ctx, file: string, o: { lot?: string; format?: string; dryRun?: boolean }): Promise<void> {
  let text: string;
  try {
    text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const type = manifestType(file, text, o.format);
  let body: unknown = text;
  if (type === 'json') {
    try {
      body = JSON.parse(text);
    } catch (e) {
      throw new UsageError(`${file} is not JSON: ${(e as Error).message}`);
    }
  }
  const send = <T>(dryRun: boolean) =>
    ctx.api.post<T>('/v1/devices/import', body, {
      query: { lot: o.lot, ...(dryRun ? { dryRun: 'true' } : {}) },
      ...(type === 'csv' ? { contentType: 'text/csv' } : {}),
    });
  if (o.dryRun) {
    // The import's checks and errors, nothing written: the count, the lot and the first rows.
    const d = (await send<ImportPreview>(true)).body;
    if (ctx.json) return ctx.printJson(d);
    ctx.out(`would import ${d.wouldImport} devices${d.lot ? ` (lot ${d.lot})` : ''}; nothing was imported`);
    ctx.out(
      table(d.preview, [
        { header: 'ROW', value: (r) => r.row },
        { header: 'ID', value: (r) => r.id },
        { header: 'KIND', value: (r) => r.kind },
        { header: 'LOT', value: (r) => r.lot },
        { header: 'MODEL', value: (r) => r.model },
        { header: 'FIRMWARE', value: (r) => r.firmwareVersion },
        { header: 'SITE', value: (r) => r.site },
      ]),
    );
    return;
  }
  const r = await send<{ imported: number; lot: string | null }>(false);
  if (ctx.json) return ctx.printJson(r.body);
  ctx.out(`imported ${r.body.imported} devices${r.body.lot ? ` (lot ${r.body.lot})` : ''}`);
}

export function registerDevices(program: Command, addOptions: (c: Command) => Command): Command {
  const devices = program.command('devices').description('the device inventory (API: /v1/devices)');
  addOptions(
    devices
      .command('list')
      .description('list devices, newest first (one page; --all follows the cursor)')
      .option('--status <status>', 'registered, active, suspended, revoked or decommissioned')
      .option('--kind <kind>', 'client or broker')
      .option('--lot <lot>', 'production lot')
      .option('--model <model>')
      .option('--firmware <version>', 'firmware version')
      .option('--site <site>')
      .option('--expiring-before <date-time>', 'current certificate ends before (ISO 8601)')
      .option('--limit <n>', 'page size (1-500; default 100)', wholeNumber('--limit', 1, 500))
      .option('--cursor <cursor>', 'continue where a page stopped')
      .option('--all', 'every page'),
  ).action(action((ctx, o: ListOpts) => list(ctx, o)));
  addOptions(devices.command('show <deviceId>').description('one device, with its newest certificates')).action(
    action((ctx, id: string) => show(ctx, id)),
  );
  addOptions(
    devices.command('readmit <deviceId>').description('let a revoked device enroll again: back to registered, its earlier tokens voided'),
  ).action(action((ctx, id: string) => readmit(ctx, id)));
  addOptions(
    devices
      .command('decommission <deviceId>')
      .description('take a device out of service for good; asks to type its id (or --yes)')
      .option('--yes', 'do not ask (needed without a terminal)'),
  ).action(action((ctx, id: string, o: { yes?: boolean }) => decommission(ctx, id, o)));
  addOptions(
    devices
      .command('import <file>')
      .description('register a production lot from a CSV or JSON manifest, all or nothing; bad rows are listed (file - reads stdin)')
      .option('--lot <lot>', 'the lot of rows that name none')
      .option('--format <format>', 'csv or json (default: from the extension or the content)', (v: string) => {
        if (v !== 'csv' && v !== 'json') throw new InvalidArgumentError('csv or json');
        return v;
      })
      .option('--dry-run', 'check the manifest as the import does and show what it would register, writing nothing'),
  ).action(action((ctx, file: string, o: { lot?: string; format?: string; dryRun?: boolean }) => importLot(ctx, file, o)));
  return devices;
}
