import type { Command } from 'commander';
import { action, type Ctx } from '../run.js';
import { table, when } from '../table.js';
import type { ApiPosture } from '../types.js';

const FUNCTIONS = ['identify', 'protect', 'detect', 'respond', 'recover'];

async function posture(ctx: Ctx): Promise<void> {
  const p = (await ctx.api.get<ApiPosture>('/v1/posture')).body;
  if (ctx.json) return ctx.printJson(p);
  const rows = FUNCTIONS.filter((f) => p.current[f]).map((f) => ({ f, c: p.current[f]!, target: p.target[f] }));
  ctx.out(`posture at ${when(p.generatedAt)}`);
  ctx.out(
    table(rows, [
      { header: 'FUNCTION', value: (r) => r.f },
      { header: 'CURRENT', value: (r) => `${r.c.tier} ${r.c.name}` },
      { header: 'TARGET', value: (r) => r.target },
      { header: 'MET', value: (r) => r.c.met },
      { header: 'PARTIAL', value: (r) => r.c.partial },
      { header: 'UNMET', value: (r) => r.c.unmet },
      { header: '', value: (r) => (r.target !== undefined && r.c.tier < r.target ? 'below target' : ''), raw: true },
    ]),
  );
  if (p.gaps.length) {
    ctx.out(`\ngaps (${p.gaps.length}, widest first):`);
    ctx.out(
      table(p.gaps, [
        { header: 'SUBCATEGORY', value: (g) => g.subcategory },
        { header: 'STATUS', value: (g) => g.status },
        { header: 'REMEDY', value: (g) => g.remedy },
      ]),
    );
  }
}

export function registerPosture(program: Command, addOptions: (c: Command) => Command): Command {
  return addOptions(
    program.command('posture').description('the deployment against the target profile, per function, and its gaps (API: /v1/posture)'),
  ).action(action((ctx) => posture(ctx))) as Command;
}
