import { InvalidArgumentError, type Command } from 'commander';
import { seg } from '../api-client.js';
import { action, confirm, type Ctx } from '../run.js';
import { fields, when } from '../table.js';
import type { ApiCertificate } from '../types.js';

const REASONS = [
  'unspecified',
  'keyCompromise',
  'cACompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
  'privilegeWithdrawn',
];

const serialArg = (v: string): string => v.toLowerCase().replace(/:/g, '');

function certFields(c: ApiCertificate): string {
  return fields([
    ['serial', c.serial],
    ['status', c.status],
    ['revocation', c.revocation ? `${c.revocation.reason} at ${when(c.revocation.revokedAt)}` : null],
    ['invalidity date', c.revocation?.invalidityDate ? when(c.revocation.invalidityDate) : null],
    ['subject', c.subject],
    ['device', c.deviceId],
    ['profile', c.profile],
    ['ca', c.caId],
    ['not before', when(c.notBefore)],
    ['not after', when(c.notAfter)],
    ['renewed from', c.renewedFrom],
  ]);
}

async function show(ctx: Ctx, serial: string, o: { pem?: boolean }): Promise<void> {
  const c = (await ctx.api.get<ApiCertificate & { certificate: string | null }>(`/v1/certificates/${seg(serialArg(serial))}`)).body;
  if (ctx.json) return ctx.printJson(c);
  if (o.pem) {
    if (c.certificate) ctx.out(c.certificate);
    return;
  }
  ctx.out(certFields(c));
}

interface RevokeOpts {
  reason: string;
  invalidityDate?: string;
  yes?: boolean;
}

/** Revoke (or hold): the certificate is looked up first, named in the question, and typed back. */
async function revoke(ctx: Ctx, serial: string, o: RevokeOpts, hold: boolean): Promise<void> {
  const s = serialArg(serial);
  const c = (await ctx.api.get<ApiCertificate>(`/v1/certificates/${seg(s)}`)).body;
  const verb = hold ? 'Put on hold' : `Revoke (${o.reason})`;
  const effect = hold ? 'its device is suspended until released' : 'this cannot be undone';
  await confirm(
    `${verb} certificate ${c.serial} of ${c.deviceId ? `device ${c.deviceId}` : `subject ${c.subject}`} (${c.status}); ${effect}.`,
    [c.serial, ...(c.deviceId ? [c.deviceId] : [])],
    o.yes,
  );
  const r = await ctx.api.post<ApiCertificate>(`/v1/certificates/${seg(s)}/revoke`, {
    reason: hold ? 'certificateHold' : o.reason,
    ...(o.invalidityDate ? { invalidityDate: o.invalidityDate } : {}),
  });
  if (ctx.json) return ctx.printJson(r.body);
  const also = Number(r.headers.get('also-revoked') ?? '0');
  const changed = r.headers.get('revocation-changed') !== 'false';
  ctx.out(certFields(r.body));
  if (!changed) ctx.note('(it was revoked already: nothing changed)');
  if (also > 0) ctx.note(`also revoked: ${also} more certificates of the device and its lineage (keyCompromise)`);
}

async function release(ctx: Ctx, serial: string): Promise<void> {
  const r = await ctx.api.post<ApiCertificate>(`/v1/certificates/${seg(serialArg(serial))}/release`);
  if (ctx.json) return ctx.printJson(r.body);
  ctx.out(certFields(r.body));
  if (r.headers.get('revocation-changed') === 'false') ctx.note('(it was not on hold: nothing changed)');
}

export function registerCerts(program: Command, addOptions: (c: Command) => Command): Command {
  const certs = program.command('certs').description('certificates (API: /v1/certificates)');
  addOptions(certs.command('show <serial>').description('one certificate by serial (hex)').option('--pem', 'print the PEM only')).action(
    action((ctx, serial: string, o: { pem?: boolean }) => show(ctx, serial, o)),
  );
  addOptions(
    certs
      .command('revoke <serial>')
      .description('revoke a certificate for good; asks to type the serial or device id (or --yes)')
      .requiredOption('--reason <reason>', REASONS.join(', '), (v: string) => {
        if (!REASONS.includes(v)) throw new InvalidArgumentError(`one of ${REASONS.join(', ')} (certificateHold: certs hold)`);
        return v;
      })
      .option('--invalidity-date <date-time>', 'when the key is known or suspected compromised (ISO 8601)')
      .option('--yes', 'do not ask (needed without a terminal)'),
  ).action(action((ctx, serial: string, o: RevokeOpts) => revoke(ctx, serial, o, false)));
  addOptions(
    certs
      .command('hold <serial>')
      .description('put a certificate on hold (certificateHold; its device is suspended); asks to confirm (or --yes)')
      .option('--yes', 'do not ask (needed without a terminal)'),
  ).action(action((ctx, serial: string, o: { yes?: boolean }) => revoke(ctx, serial, { reason: 'certificateHold', yes: o.yes }, true)));
  addOptions(certs.command('release <serial>').description('take a certificate off hold; its device is active again')).action(
    action((ctx, serial: string) => release(ctx, serial)),
  );
  return certs;
}
