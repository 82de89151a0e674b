import { execFile } from 'node:child_process';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { summarizeCrlBundle, type CrlSummary } from '../ca/x509/inspect.js';
import { opensslNameHash } from '../ca/x509/name-hash.js';
import { toPem } from '../ca/x509/pem.js';

const run = promisify(execFile);

export interface CrlSyncOptions {
  /** The bundle URL, e.g. https://ca.example/pki/crl/bundle.pem. */
  url: string;
  /** Where the broker reads it (Mosquitto's crlfile); with only hashDir, a copy kept in it (`.mqtt-ca-bundle.pem`). */
  out: string;
  /**
   * A hashed directory to keep as well: each CRL as `<issuer name hash>.r<N>`, as `openssl rehash`
   * names them (OpenSSL's CApath, Erlang's ssl_crl_hash_dir).
   */
  hashDir?: string | undefined;
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

/** The bundle's copy when only a hashed directory is kept. */
export const hashDirBundle = (dir: string) => join(dir, '.mqtt-ca-bundle.pem');
/** The CRL files crl-sync wrote in a hashed directory, one name a line: the only ones it removes. */
const MANIFEST = '.mqtt-ca-crls';
const HASHED_CRL = /^[0-9a-f]{8}\.r\d+$/;

async function writeAtomically(path: string, content: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, content, { mode: 0o644 });
  await rename(tmp, path);
}

/**
 * Writes each CRL as `<issuer hash>.r<N>`: a CRL per file, numbered from 0 without gaps per issuer
 * hash in the bundle's order (Erlang's ssl_crl_hash_dir reads .r0, .r1 ... up to the first missing
 * number; OpenSSL's by_dir does the same), each file written atomically. Then removes the files it
 * wrote before that no longer belong (a shard gone, an issuer retired), never anyone else's.
 * Returns the file names.
 */
export async function writeCrlHashDir(dir: string, crls: Pick<CrlSummary, 'issuerDer' | 'der'>[]): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const next = new Map<string, number>();
  const names: string[] = [];
  for (const c of crls) {
    const hash = opensslNameHash(c.issuerDer);
    const n = next.get(hash) ?? 0;
    next.set(hash, n + 1);
    const name = `${hash}.r${n}`;
    await writeAtomically(join(dir, name), toPem(c.der, 'X509 CRL'));
    names.push(name);
  }
  const before = await readFile(join(dir, MANIFEST), 'utf8').then(
    (s) => s.split('\n').filter((l) => HASHED_CRL.test(l)),
    () => [] as string[],
  );
  const keep = new Set(names);
  await writeAtomically(join(dir, MANIFEST), names.join('\n') + '\n');
  for (const old of before.filter((f) => !keep.has(f)))
    await unlink(join(dir, old)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  return names;
}

async function hashDirWritten(dir: string): Promise<boolean> {
  return readFile(join(dir, MANIFEST), 'utf8').then(
    () => true,
    () => false,
  );
}

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
    // A hashed directory named for the first time (or emptied by hand) is written from the copy on disk.
    if (o.hashDir && have && !(await hashDirWritten(o.hashDir)))
      await writeCrlHashDir(o.hashDir, await summarizeCrlBundle(have.pem, o.trustedPem));
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
  // The hashed directory first: the bundle's copy (and its ETag) says what was written in full.
  if (o.hashDir) await writeCrlHashDir(o.hashDir, crls);
  const tmp = `${o.out}.tmp-${process.pid}`;
  await writeFile(tmp, pem);
  await rename(tmp, o.out);
  const etag = res.headers.get('etag');
  if (etag) await writeFile(etagFile(o.out), etag);
  if (o.reload) {
    try {
      await run('sh', ['-c', o.reload], { timeout: 30_000 });
    } catch (e) {
      throw new CrlSyncError(`wrote ${o.hashDir ?? o.out}, but the reload command failed: ${(e as Error).message}`);
    }
  }
  return { kind: 'updated', crls };
}
