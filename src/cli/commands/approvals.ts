import type { Command } from 'commander';
import { seg } from '../api-client.js';
import { EXIT } from '../exit-codes.js';
import { action, wholeNumber, type Ctx } from '../run.js';
import { fields, table, when } from '../table.js';
import type { ApiApproval } from '../types.js';

function approvalFields(a: ApiApproval): string {
  return fields([
    ['id', a.id],
    ['action', a.action],
    ['status', a.status],
    ['summary', a.summary],
    ['proposed', `${when(a.proposedAt)} by ${a.proposedBy.name} (${a.proposedBy.role})`],
    ['note', a.note],
    ['expires', when(a.expiresAt)],
    ['decided', a.decidedBy ? `${when(a.decidedAt)} by ${a.decidedBy.name} (${a.decidedBy.role})` : null],
    ['reason', a.reason],
    ['result', a.result ?? null],
    ['error', a.error ? `${a.error.kind}: ${a.error.message}` : null],
  ]);
}

async function list(ctx: Ctx, o: { status?: string; action?: string; limit?: number; all?: boolean }): Promise<void> {
  const page = await ctx.api.list<ApiApproval>(
    '/v1/approvals',
    { status: o.status ?? 'pending', action: o.action, limit: o.limit },
    { all: o.all },
  );
  if (ctx.json) return ctx.printJson(page);
  ctx.out(
    page.items.length
      ? table(page.items, [
          { header: 'ID', value: (a) => a.id },
          { header: 'ACTION', value: (a) => a.action },
          { header: 'STATUS', value: (a) => a.status },
          { header: 'PROPOSED BY', value: (a) => `${a.proposedBy.name} (${a.proposedBy.role})` },
          { header: 'EXPIRES', value: (a) => when(a.expiresAt), raw: true },
          { header: 'SUMMARY', value: (a) => a.summary },
        ])
      : `no ${o.status ?? 'pending'} approvals`,
  );
  if (page.nextCursor) ctx.note('more: --all');
}

async function approve(ctx: Ctx, id: string): Promise<number> {
  const a = (await ctx.api.post<ApiApproval>(`/v1/approvals/${seg(id)}/approve`)).body;
  if (ctx.json) ctx.printJson(a);
  else {
    ctx.out(approvalFields(a));
    if (a.secrets) ctx.out(`secrets (shown once):\n${JSON.stringify(a.secrets, null, 2)}`);
  }
  return a.status === 'failed' ? EXIT.failure : EXIT.ok;
}

async function reject(ctx: Ctx, id: string, o: { reason?: string }): Promise<void> {
  const a = (await ctx.api.post<ApiApproval>(`/v1/approvals/${seg(id)}/reject`, o.reason ? { reason: o.reason } : {})).body;
  if (ctx.json) return ctx.printJson(a);
  ctx.out(approvalFields(a));
}

export function registerApprovals(program: Command, addOptions: (c: Command) => Command): Command {
  const approvals = program
    .command('approvals')
    .description('the two-person rule: proposals waiting for a second person (API: /v1/approvals)');
  addOptions(
    approvals
      .command('list')
      .description('proposals, newest first (default: pending)')
      .option('--status <status>', 'pending, approved, executed, failed, rejected or expired')
      .option('--action <action>')
      .option('--limit <n>', 'page size (1-500)', wholeNumber('--limit', 1, 500))
      .option('--all', 'every page'),
  ).action(action((ctx, o: { status?: string; action?: string; limit?: number; all?: boolean }) => list(ctx, o)));
  addOptions(approvals.command('approve <approvalId>').description('approve (it runs at once); never your own')).action(
    action((ctx, id: string) => approve(ctx, id)),
  );
  addOptions(
    approvals.command('reject <approvalId>').description('reject (the proposer may withdraw their own)').option('--reason <text>'),
  ).action(action((ctx, id: string, o: { reason?: string }) => reject(ctx, id, o)));
  return approvals;
}
