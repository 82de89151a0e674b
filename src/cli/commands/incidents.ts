import { InvalidArgumentError, type Command } from 'commander';
import { seg, UsageError } from '../api-client.js';
import { EXIT } from '../exit-codes.js';
import { action, collect, confirm, wholeNumber, type Ctx } from '../run.js';
import { fields, safe, table, when } from '../table.js';
import type { ApiIncident, ApiIncidentStep } from '../types.js';

const KINDS = ['device-compromise', 'lost-device', 'credential-leak', 'broker-compromise', 'ca-compromise'];

function incidentFields(i: ApiIncident): string {
  return fields([
    ['id', i.id],
    ['kind', i.kind],
    ['title', i.title],
    ['status', i.status],
    ['devices', i.targets.devices.join(', ') || null],
    ['lots', i.targets.lots.join(', ') || null],
    ['brokers', i.targets.brokers.join(', ') || null],
    ['ca', i.targets.caId],
    ['opened', `${when(i.openedAt)} by ${i.openedBy}`],
    ['closed', i.closedAt ? `${when(i.closedAt)} by ${i.closedBy}` : null],
    ['summary', i.summary],
  ]);
}

const stepColumns = [
  { header: 'SEQ', value: (s: ApiIncidentStep) => s.seq },
  { header: 'ACTION', value: (s: ApiIncidentStep) => `${s.action}${s.dryRun ? ' (dry run)' : ''}` },
  { header: 'STATUS', value: (s: ApiIncidentStep) => s.status },
  { header: 'TOUCHED', value: (s: ApiIncidentStep) => s.touchedCount },
  { header: 'STARTED', value: (s: ApiIncidentStep) => when(s.startedAt), raw: true },
  { header: 'ACTOR', value: (s: ApiIncidentStep) => s.actor },
  { header: 'STEP', value: (s: ApiIncidentStep) => s.id },
];

interface OpenOpts {
  kind: string;
  title: string;
  description?: string;
  device: string[];
  lot: string[];
  broker: string[];
  ca?: string;
}

async function open(ctx: Ctx, o: OpenOpts): Promise<void> {
  const targets = {
    ...(o.device.length ? { devices: o.device } : {}),
    ...(o.lot.length ? { lots: o.lot } : {}),
    ...(o.broker.length ? { brokers: o.broker } : {}),
    ...(o.ca ? { caId: o.ca } : {}),
  };
  const body = { kind: o.kind, title: o.title, ...(o.description ? { description: o.description } : {}), targets };
  const i = (await ctx.api.post<ApiIncident>('/v1/incidents', body)).body;
  if (ctx.json) return ctx.printJson(i);
  ctx.out(incidentFields(i));
}

async function show(ctx: Ctx, id: string): Promise<void> {
  const i = (await ctx.api.get<ApiIncident>(`/v1/incidents/${seg(id)}`)).body;
  if (ctx.json) return ctx.printJson(i);
  ctx.out(incidentFields(i));
  if (i.timeline?.length) ctx.out(`\ntimeline:\n${table(i.timeline, stepColumns)}`);
}

async function list(ctx: Ctx, o: { status?: string; kind?: string; limit?: number; all?: boolean }): Promise<void> {
  const page = await ctx.api.list<ApiIncident>('/v1/incidents', { status: o.status, kind: o.kind, limit: o.limit }, { all: o.all });
  if (ctx.json) return ctx.printJson(page);
  ctx.out(
    page.items.length
      ? table(page.items, [
          { header: 'ID', value: (i) => i.id },
          { header: 'KIND', value: (i) => i.kind },
          { header: 'STATUS', value: (i) => i.status },
          { header: 'OPENED', value: (i) => when(i.openedAt), raw: true },
          { header: 'TITLE', value: (i) => i.title },
        ])
      : 'no incidents',
  );
  if (page.nextCursor) ctx.note('more: --all');
}

function stepText(s: ApiIncidentStep): string {
  const lines = [
    fields([
      ['step', s.id],
      ['action', `${s.action}${s.dryRun ? ' (dry run: nothing changed)' : ''}`],
      ['status', s.status],
      [s.dryRun ? 'would touch' : 'touched', s.touchedCount],
      ['approval', s.approvalId],
      ['error', s.error],
    ]),
  ];
  if (s.touched.length) {
    const shown = s.touched.slice(0, 50);
    lines.push(shown.map((t) => `  ${safe(t.type)} ${safe(t.id)}`).join('\n'));
    if (s.touchedCount > shown.length) lines.push(`  ... and ${s.touchedCount - shown.length} more (--json lists the first 500)`);
  }
  if (s.secrets) lines.push(`secrets (shown once):\n${JSON.stringify(s.secrets, null, 2)}`);
  return lines.join('\n');
}

interface ActOpts {
  dryRun?: boolean;
  reason?: string;
  invalidityDate?: string;
  device: string[];
  params?: string;
  yes?: boolean;
}

/** The exit code of a step: proposed waits for a second person (5), failed or unconfirmed is 1. */
function stepExit(s: ApiIncidentStep): number {
  if (s.status === 'proposed') return EXIT.needsApproval;
  if (s.status === 'failed' || s.status === 'unconfirmed') return EXIT.failure;
  return EXIT.ok;
}

async function act(ctx: Ctx, id: string, actionName: string, o: ActOpts): Promise<number> {
  let extra: Record<string, unknown> = {};
  if (o.params) {
    try {
      extra = JSON.parse(o.params) as Record<string, unknown>;
    } catch (e) {
      throw new UsageError(`--params: not JSON: ${(e as Error).message}`);
    }
    if (!extra || typeof extra !== 'object' || Array.isArray(extra)) throw new UsageError('--params: a JSON object');
  }
  const params = {
    ...extra,
    ...(o.reason ? { reason: o.reason } : {}),
    ...(o.invalidityDate ? { invalidityDate: o.invalidityDate } : {}),
    ...(o.device.length ? { devices: o.device } : {}),
  };
  const body = (dryRun: boolean) => ({ action: actionName, dryRun, ...(Object.keys(params).length ? { params } : {}) });
  const path = `/v1/incidents/${seg(id)}/actions`;
  if (!o.dryRun && !o.yes) {
    // The blast radius first: a dry run (recorded in the timeline, changing nothing), then the question.
    const plan = (await ctx.api.post<ApiIncidentStep>(path, body(true))).body;
    ctx.note(stepText(plan));
    await confirm(`Run ${actionName} for real in incident ${id}: it touches ${plan.touchedCount}.`, [id], false);
  }
  const step = (await ctx.api.post<ApiIncidentStep>(path, body(!!o.dryRun))).body;
  if (ctx.json) ctx.printJson(step);
  else ctx.out(stepText(step));
  if (step.status === 'proposed' && !ctx.json) ctx.note(`waits for a second person: mqtt-ca approvals approve ${step.approvalId}`);
  return stepExit(step);
}

/**
 * Runs a failed, unconfirmed or cut-short step's action again, with its parameters, as a new step.
 * Without --yes it names the step and what it touched and asks to type the incident id, as act does.
 */
async function retry(ctx: Ctx, id: string, stepId: string, o: { yes?: boolean }): Promise<number> {
  if (!o.yes) {
    const i = (await ctx.api.get<ApiIncident>(`/v1/incidents/${seg(id)}`)).body;
    const s = i.timeline?.find((t) => t.id === stepId);
    if (s)
      await confirm(
        `Retry step #${s.seq} of incident ${id}: ${s.action} ${s.status}${s.error ? ` (${s.error})` : ''}, touched ${s.touchedCount}; ` +
          'it runs again with the same parameters, as a new step.',
        [id],
        false,
      );
    // An unknown step: the API's 404 says so.
  }
  const step = (await ctx.api.post<ApiIncidentStep>(`/v1/incidents/${seg(id)}/steps/${seg(stepId)}/retry`)).body;
  if (ctx.json) ctx.printJson(step);
  else
    ctx.out(`${stepText(step)}
${fields([['retry of', step.retryOf ?? stepId]])}`);
  if (step.status === 'proposed' && !ctx.json) ctx.note(`waits for a second person: mqtt-ca approvals approve ${step.approvalId}`);
  return stepExit(step);
}

async function close(ctx: Ctx, id: string, o: { summary: string; force?: boolean }): Promise<void> {
  const i = (await ctx.api.post<ApiIncident>(`/v1/incidents/${seg(id)}/close`, { summary: o.summary, ...(o.force ? { force: true } : {}) }))
    .body;
  if (ctx.json) return ctx.printJson(i);
  ctx.out(incidentFields(i));
}

export function registerIncidents(program: Command, addOptions: (c: Command) => Command): Command {
  const incidents = program.command('incidents').description('incidents and their actions (API: /v1/incidents)');
  addOptions(
    incidents
      .command('open')
      .description('open an incident with its targets')
      .requiredOption('--kind <kind>', KINDS.join(', '), (v: string) => {
        if (!KINDS.includes(v)) throw new InvalidArgumentError(`one of ${KINDS.join(', ')}`);
        return v;
      })
      .requiredOption('--title <title>')
      .option('--description <text>')
      .option('--device <deviceId>', 'a target device (repeatable)', collect, [])
      .option('--lot <lot>', 'a target lot (repeatable)', collect, [])
      .option('--broker <deviceId>', 'a target broker (repeatable)', collect, [])
      .option('--ca <caId>', 'the target CA (ca-compromise)'),
  ).action(action((ctx, o: OpenOpts) => open(ctx, o)));
  addOptions(
    incidents
      .command('list')
      .description('incidents, newest first')
      .option('--status <status>', 'open or closed')
      .option('--kind <kind>')
      .option('--limit <n>', 'page size (1-500)', wholeNumber('--limit', 1, 500))
      .option('--all', 'every page'),
  ).action(action((ctx, o: { status?: string; kind?: string; limit?: number; all?: boolean }) => list(ctx, o)));
  addOptions(incidents.command('show <incidentId>').description('one incident with its timeline')).action(
    action((ctx, id: string) => show(ctx, id)),
  );
  addOptions(
    incidents
      .command('act <incidentId> <action>')
      .description(
        'run an action (revoke-certificates, suspend, revoke-credentials, disconnect, block, unblock, readmit, reissue, ...); ' +
          'without --dry-run or --yes it shows the dry run and asks to type the incident id',
      )
      .option('--dry-run', 'list what it would touch; change nothing')
      .option('--reason <reason>', 'revoke-certificates: the revocation reason')
      .option('--invalidity-date <date-time>', 'revoke-certificates: when the key was compromised')
      .option('--device <deviceId>', "only this of the incident's devices (repeatable)", collect, [])
      .option('--params <json>', 'more action parameters as a JSON object (e.g. \'{"enrollmentTokens":true}\')')
      .option('--yes', 'do not ask (needed without a terminal)'),
  ).action(action((ctx, id: string, name: string, o: ActOpts) => act(ctx, id, name, o)));
  addOptions(
    incidents
      .command('retry <incidentId> <stepId>')
      .description(
        "run a failed, unconfirmed or cut-short step's action again as a new step; without --yes it names the step and asks to type the incident id",
      )
      .option('--yes', 'do not ask (needed without a terminal)'),
  ).action(action((ctx, id: string, stepId: string, o: { yes?: boolean }) => retry(ctx, id, stepId, o)));
  addOptions(
    incidents
      .command('close <incidentId>')
      .description('close an incident with a summary')
      .requiredOption('--summary <text>')
      .option('--force', 'close although a failed step was never retried'),
  ).action(action((ctx, id: string, o: { summary: string; force?: boolean }) => close(ctx, id, o)));
  return incidents;
}
