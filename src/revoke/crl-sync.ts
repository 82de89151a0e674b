import { execFile } from 'node:child_process';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { summarizeCrlBundle, type CrlSummary } from '../ca/x509/inspect.js';

const run = promisify(execFile);

export interface CrlSyncOptions {
  /** The bundle URL, e.g. https://ca.example/pki/crl/bundle.pem. */
  url: string;
  /** Where the broker reads it (Mosquitto's crlfile). */
  out: string;
  /** A shell command run after the file changed, e.g. `kill -HUP $(cat /run/mosquitto/mosquitto.pid)`. */
  reload?: string | undefined;
  /** PEM CA certificates: every CRL must be signed by one of them (a CRL travels over plain HTTP). */
  trustedPem?: string | undefined;
  /** The file counts as stale once a CRL in it is this close to its nextUpdate. */
  minRemainingMs: number;
  now?: () => Date;
}

export type SyncOutcome =
  | { kind: 'unchanged' }
  | { kind: 'updated'; crls: CrlSummary[] }
  /** The server could not be read, but the file on disk is still fresh. */
  | { kind: 'kept'; reason: string };

/** The file could not be kept fresh: the caller says so and exits non-zero. */
export class CrlSyncError extends Error {}

const etagFile = (out: string) => `${out}.etag`;

function staleness(crls: CrlSummary[], now: Date, minRemainingMs: number): string | undefined {
  for (const c of crls) {
    if (!c.nextUpdate) return `the CRL of ${c.issuer} has no nextUpdate`;
    const left = c.nextUpdate.getTime() - now.getTime();
    if (left <= 0) return `the CRL of ${c.issuer} expired at ${c.nextUpdate.toISOString()}`;
    if (left < minRemainingMs)
      return `the CRL of ${c.issuer} expires at ${c.nextUpdate.toISOString()}, within the ${Math.round(minRemainingMs / 60_000)}-minute margin`;
  }
  return undefined;
}

async function current(out: string): Promise<{ pem: string; etag: string | undefined } | undefined> {
  try {
    const pem = await readFile(out, 'utf8');
    const etag = await readFile(etagFile(out), 'utf8').then(
      (s) => s.trim(),
      () => undefined,
    );
    return { pem, etag };
  } catch {
    return undefined;
  }
}

/**
 * One poll: a conditional GET of the bundle; a changed bundle is checked (every CRL parses and is
 * fresh), written atomically (a temporary file renamed over the old one, so the broker never reads
 * half a file) and the reload command run. When the server can't be reached the file on disk is
 * kept as long as it is fresh; when it is not, CrlSyncError says why.
 */
export async function syncCrlBundle(o: CrlSyncOptions): Promise<SyncOutcome> {
  const now = (o.now ?? (() => new Date()))();
  const have = await current(o.out);
  const keepOrFail = async (reason: string): Promise<SyncOutcome> => {
    if (!have) throw new CrlSyncError(`${reason}; and there is no CRL file at ${o.out} yet`);
    let crls: CrlSummary[];
    try {
      crls = await summarizeCrlBundle(have.pem, o.trustedPem);
    } catch (e) {
      throw new CrlSyncError(`${reason}; and ${o.out} cannot be read as CRLs (${(e as Error).message})`);
    }
    const stale = staleness(crls, now, o.minRemainingMs);
    if (stale) throw new CrlSyncError(`${reason}; and ${o.out} is stale: ${stale}. The broker will refuse clients once it expires`);
    return { kind: 'kept', reason };
  };

  let res: Response;
  try {
    res = await fetch(o.url, { headers: have?.etag ? { 'If-None-Match': have.etag } : {}, signal: AbortSignal.timeout(30_000) });
  } catch (e) {
    return keepOrFail(`cannot reach ${o.url}: ${(e as Error).message}`);
  }
  if (res.status === 304) {
    await res.body?.cancel();
    const kept = await keepOrFail('the bundle has not changed');
    return kept.kind === 'kept' ? { kind: 'unchanged' } : kept;
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    return keepOrFail(`${o.url} answered ${res.status}`);
  }
  const pem = await res.text();
  let crls: CrlSummary[];
  try {
    crls = await summarizeCrlBundle(pem, o.trustedPem);
  } catch (e) {
    return keepOrFail(`${o.url} sent no usable CRL bundle (${(e as Error).message})`);
  }
  const stale = staleness(crls, now, 0);
  if (stale) return keepOrFail(`${o.url} sent a stale bundle: ${stale}`);
  const tmp = `${o.out}.tmp-${process.pid}`;
  await writeFile(tmp, pem);
  await rename(tmp, o.out);
  const etag = res.headers.get('etag');
  if (etag) await writeFile(etagFile(o.out), etag);
  if (o.reload) {
    try {
      await run('sh', ['-c', o.reload], { timeout: 30_000 });
    } catch (e) {
      throw new CrlSyncError(`wrote ${o.out}, but the reload command failed: ${(e as Error).message}`);
    }
  }
  return { kind: 'updated', crls };
}
