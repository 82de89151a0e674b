import { chmodSync, lstatSync, readdirSync, statSync, type Stats } from 'node:fs';
import { join } from 'node:path';

/** DATA_DIR (or the store in it) is open to other local users: the service refuses to start on it. */
export class DataDirError extends Error {
  override name = 'DataDirError';
}

/**
 * Refuses a directory another local user could have written to (group or others may write, or
 * another user owns it): the store, the KEK and the admin key there may already have been
 * changed. Then makes everything under the first one private to the service user: directories
 * 0700, files 0600 (what an older version, or PGlite's initdb, left looser).
 */
export function securePrivateDirs(dataDir: string, inner: string[] = []): void {
  const uid = process.getuid?.();
  if (uid === undefined) return; // no POSIX owners (Windows)
  for (const dir of [dataDir, ...inner]) {
    const st = statIfExists(dir);
    if (!st) continue;
    if (st.uid !== uid) {
      throw new DataDirError(
        `${dir} is owned by uid ${st.uid}, not by the user running mqtt-ca (uid ${uid}): run mqtt-ca as its owner, or chown -R ${uid} ${dataDir} && chmod -R go-rwx ${dataDir}`,
      );
    }
    if (st.mode & 0o022) {
      throw new DataDirError(
        `${dir} can be written by users other than its owner (mode ${(st.mode & 0o777).toString(8)}): its keys and database may have been changed by someone else. ` +
          `Check them, then: chmod -R go-rwx ${dataDir}`,
      );
    }
  }
  if (statIfExists(dataDir)) makePrivate(dataDir);
}

/** chmod -R go-rwx (directories 0700, files 0600 at most); symbolic links are neither followed nor changed. */
export function makePrivate(dir: string): void {
  const walk = (path: string, st: Stats) => {
    if (st.isSymbolicLink()) return;
    if (st.mode & 0o077) {
      try {
        chmodSync(path, st.mode & 0o700);
      } catch (e) {
        throw new DataDirError(`cannot make ${path} private (${(e as NodeJS.ErrnoException).code}): chmod -R go-rwx ${dir} as its owner`);
      }
    }
    if (!st.isDirectory()) return;
    for (const name of readdirSync(path)) {
      const child = join(path, name);
      const cst = statIfExists(child, lstatSync);
      if (cst) walk(child, cst);
    }
  };
  const st = statIfExists(dir, lstatSync);
  if (st) walk(dir, st);
}

function statIfExists(path: string, stat: (p: string) => Stats = statSync): Stats | undefined {
  try {
    return stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
