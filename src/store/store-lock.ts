import { randomBytes } from 'node:crypto';
import { linkSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * The embedded store's lock, like PostgreSQL's postmaster.pid: one process at a time opens the
 * PGlite files (two would each cache pages and overwrite the other's writes). The file names the
 * holder; a holder that is gone (its pid dead, reused by another process, or from before a reboot)
 * leaves a stale lock that the next process takes over.
 */
export interface LockHolder {
  pid: number;
  /** The holder's start time in clock ticks since boot (/proc/PID/stat), so a reused pid is told apart. */
  startTicks?: string | undefined;
  /** /proc/sys/kernel/random/boot_id: a lock from before a reboot is stale whatever its pid. */
  bootId?: string | undefined;
  host: string;
  command: string;
  since: string;
}

export class StoreLockedError extends Error {
  override name = 'StoreLockedError';
  constructor(
    readonly lockFile: string,
    readonly holder: LockHolder | undefined,
  ) {
    super(
      holder
        ? `in use by pid ${holder.pid} (${holder.command}, since ${holder.since}${holder.host === hostname() ? '' : `, on host ${holder.host}`}); lock file ${lockFile}`
        : `in use: the lock file ${lockFile} is unreadable; if no mqtt-ca process runs on this store, remove it`,
    );
  }
}

export interface StoreLock {
  readonly lockFile: string;
  /** Removes the lock file if it is still this process's; safe to call twice. */
  release(): void;
}

export function lockFileFor(storeDir: string): string {
  return `${storeDir}.pid`;
}

/** Takes the lock or throws StoreLockedError naming the live holder. */
export function acquireStoreLock(lockFile: string, command = describeCommand()): StoreLock {
  const me: LockHolder = { pid: process.pid, ...processIdentity(process.pid), host: hostname(), command, since: new Date().toISOString() };
  const content = JSON.stringify(me) + '\n';
  // Written in full beside the lock, then linked into place: link() fails if the lock exists
  // (like O_EXCL), and nobody ever reads a half-written lock file.
  const tmp = `${lockFile}.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(tmp, content, { mode: 0o600, flag: 'wx' });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(tmp, lockFile);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const found = readLock(lockFile);
      if (found === 'unreadable' || (found !== 'gone' && holderIsAlive(found)) || attempt >= 5)
        throw new StoreLockedError(lockFile, typeof found === 'string' ? undefined : found);
      if (found === 'gone') continue;
      // Stale. Two processes that both find it stale can race here, as with postmaster.pid;
      // starting two at the same instant after a crash is the operator's to avoid.
      removeIfUnchanged(lockFile, found);
    }
  } finally {
    unlinkSync(tmp);
  }
  const onExit = () => release();
  process.on('exit', onExit);
  const release = () => {
    process.off('exit', onExit);
    try {
      if (readFileSync(lockFile, 'utf8') === content) unlinkSync(lockFile);
    } catch {
      // already gone
    }
  };
  return { lockFile, release };
}

function readLock(lockFile: string): LockHolder | 'gone' | 'unreadable' {
  let text: string;
  try {
    text = readFileSync(lockFile, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw e;
  }
  try {
    const v = JSON.parse(text) as LockHolder;
    return Number.isInteger(v.pid) && v.pid > 0 ? v : 'unreadable';
  } catch {
    return 'unreadable';
  }
}

function removeIfUnchanged(lockFile: string, judged: LockHolder): void {
  const now = readLock(lockFile);
  if (now === 'gone' || now === 'unreadable' || now.pid !== judged.pid || now.since !== judged.since) return;
  try {
    unlinkSync(lockFile);
  } catch {
    // another process removed it first
  }
}

/** Whether the process that wrote the lock still runs (a lock from another host is taken as live). */
export function holderIsAlive(h: LockHolder): boolean {
  if (h.host !== hostname()) return true;
  const now = processIdentity(h.pid);
  if (h.bootId && now.bootId && h.bootId !== now.bootId) return false;
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  // The pid runs; it is the holder only if it started when the holder did (else the pid was reused).
  return !(h.startTicks && now.startTicks && h.startTicks !== now.startTicks);
}

/** Where /proc exists (Linux): the process's start time and the boot it belongs to. */
export function processIdentity(pid: number): { startTicks?: string; bootId?: string } {
  const out: { startTicks?: string; bootId?: string } = {};
  try {
    out.bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // no /proc
  }
  try {
    // Field 22; the command name (field 2) may hold spaces and parentheses, so count from the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    out.startTicks = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    // no such process, or no /proc
  }
  return out;
}

function describeCommand(): string {
  const args = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  return args.length ? `mqtt-ca ${args.slice(0, 2).join(' ')}` : (process.argv[1] ?? 'node');
}
