import type { Command } from 'commander';
import { UsageError } from '../api-client.js';
import { action, collect, wholeNumber, type Ctx } from '../run.js';
import { fields, when } from '../table.js';
import type { ApiToken } from '../types.js';

interface CreateOpts {
  device?: string;
  lot?: string;
  profile?: string;
  name?: string;
  expiresIn?: number;
  maxUses?: number;
  dnsName: string[];
  ip: string[];
}

async function create(ctx: Ctx, o: CreateOpts): Promise<void> {
  if (!o.device === !o.lot) throw new UsageError('tokens create: give --device ID or --lot LOT (one of them)');
  const body = {
    ...(o.device ? { deviceId: o.device } : {}),
    ...(o.lot ? { lot: o.lot } : {}),
    ...(o.profile ? { profile: o.profile } : {}),
    ...(o.name ? { name: o.name } : {}),
    ...(o.expiresIn !== undefined ? { expiresInSeconds: o.expiresIn } : {}),
    ...(o.maxUses !== undefined ? { maxUses: o.maxUses } : {}),
    ...(o.dnsName.length ? { dnsNames: o.dnsName } : {}),
    ...(o.ip.length ? { ipAddresses: o.ip } : {}),
  };
  const t = (await ctx.api.post<ApiToken>('/v1/enrollment-tokens', body)).body;
  if (ctx.json) return ctx.printJson(t);
  ctx.out(
    fields([
      ['id', t.id],
      ['for', t.deviceId ? `device ${t.deviceId}` : `lot ${t.lot}`],
      ['profile', t.profile],
      ['uses', `${t.uses} of ${t.maxUses}`],
      ['expires', when(t.expiresAt)],
      ['token', t.token],
    ]),
  );
  ctx.note('(the token is shown once: it is stored hashed)');
}

export function registerTokens(program: Command, addOptions: (c: Command) => Command): Command {
  const tokens = program.command('tokens').description('enrollment tokens (API: /v1/enrollment-tokens)');
  addOptions(
    tokens
      .command('create')
      .description('an enrollment token for one device or a whole lot; the token is printed once')
      .option('--device <deviceId>', 'for this device')
      .option('--lot <lot>', "for any of this lot's devices")
      .option('--profile <profile>', 'device (default) or broker')
      .option('--name <name>', 'what it is for')
      .option('--expires-in <seconds>', 'lifetime in seconds (60 to 7776000)', wholeNumber('--expires-in', 60, 7_776_000))
      .option('--max-uses <n>', 'how many enrollments it allows', wholeNumber('--max-uses', 1, 10_000_000))
      .option('--dns-name <name>', 'broker tokens: a DNS name (repeatable)', collect, [])
      .option('--ip <address>', 'broker tokens: an IP address (repeatable)', collect, []),
  ).action(action((ctx, o: CreateOpts) => create(ctx, o)));
  return tokens;
}
