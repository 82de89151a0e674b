import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireStoreLock, processIdentity, StoreLockedError, type LockHolder } from '../../src/store/store-lock.js';

describe('the embedded store lock', () => {
  let dir: string;
  let lockFile: string;
  let sleeper: ChildProcess;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mqttca-lock-'));
    lockFile = join(dir, 'pglite.pid');
    sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
  });
  after(() => {
    sleeper.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  /** A lock file as another process would have written it. */
  const forge = (h: Partial<LockHolder> & { pid: number }) =>
    writeFileSync(
      lockFile,
      JSON.stringify({ ...processIdentity(h.pid), host: hostname(), command: 'mqtt-ca serve', since: '2026-12-07T06:00:00.000Z', ...h }) +
        '\n',
    );
  const refusedBy = (pid: number | undefined) => (e: unknown) => e instanceof StoreLockedError && e.holder?.pid === pid;

  it('holds the pid, start time and command; a second taker is refused, naming the holder; release frees it', () => {
    const lock = acquireStoreLock(lockFile, 'mqtt-ca serve');
    const held = JSON.parse(readFileSync(lockFile, 'utf8')) as LockHolder;
    assert.equal(held.pid, process.pid);
    assert.equal(held.command, 'mqtt-ca serve');
    assert.equal(held.startTicks, processIdentity(process.pid).startTicks);
    assert.throws(
      () => acquireStoreLock(lockFile, 'mqtt-ca apikey create'),
      (e: unknown) => refusedBy(process.pid)(e) && /in use by pid \d+ \(mqtt-ca serve, since /.test((e as Error).message),
    );
    lock.release();
    assert.ok(!existsSync(lockFile));
    acquireStoreLock(lockFile).release();
  });

  it('refuses while another live process holds it, and takes it over once that process is gone', async () => {
    forge({ pid: sleeper.pid! });
    assert.throws(() => acquireStoreLock(lockFile), refusedBy(sleeper.pid));
    const dead = spawn('true');
    await new Promise((r) => dead.on('exit', r));
    forge({ pid: dead.pid! });
    const lock = acquireStoreLock(lockFile);
    assert.equal((JSON.parse(readFileSync(lockFile, 'utf8')) as LockHolder).pid, process.pid);
    lock.release();
  });

  it('takes over a lock whose pid now belongs to another process (started later) or that is from before a reboot', () => {
    forge({ pid: sleeper.pid!, startTicks: '1' });
    acquireStoreLock(lockFile).release();
    forge({ pid: sleeper.pid!, bootId: 'an-earlier-boot' });
    acquireStoreLock(lockFile).release();
  });

  it('treats a lock from another host as held, and an unreadable one as held, naming the file', () => {
    forge({ pid: sleeper.pid!, host: 'other-host' });
    assert.throws(
      () => acquireStoreLock(lockFile),
      (e: unknown) => refusedBy(sleeper.pid)(e) && /on host other-host/.test((e as Error).message),
    );
    writeFileSync(lockFile, 'not a lock');
    assert.throws(
      () => acquireStoreLock(lockFile),
      (e: unknown) => refusedBy(undefined)(e) && (e as Error).message.includes(`${lockFile} is unreadable`),
    );
    rmSync(lockFile);
  });

  it('release removes only its own lock', () => {
    const lock = acquireStoreLock(lockFile);
    forge({ pid: sleeper.pid! }); // someone else's now (e.g. after an operator removed ours)
    lock.release();
    assert.ok(existsSync(lockFile));
    rmSync(lockFile);
  });
});
