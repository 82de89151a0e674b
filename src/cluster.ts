import cluster, { type Worker } from 'node:cluster';

/** Set in each process `serve` forks: its slot, 0 to n-1 (a replacement takes the slot of the one that died). */
const SLOT_ENV = 'MQTT_CA_SERVE_SLOT';

/** This process's slot when it is one of the processes of `serve` (node:cluster), else undefined. */
export function serveSlot(): number | undefined {
  return cluster.isWorker && process.env[SLOT_ENV] !== undefined ? Number(process.env[SLOT_ENV]) : undefined;
}

export const isServePrimary = () => cluster.isPrimary;

/** The envelope of a message one serve process sends to the process of slot 0 (the one that watches the bus); the primary passes it on. */
const FOR_SLOT_0 = 'mqttca:for-slot-0';

/** Sends `payload` to the serve process of slot 0 (through the primary); false when this process has no IPC channel or it is closed. */
export function sendToSlot0(payload: unknown): boolean {
  if (!process.send || !process.connected) return false;
  return process.send({ [FOR_SLOT_0]: payload }, undefined, undefined, () => undefined);
}

/** In the process of slot 0: what the other serve processes send it. */
export function onMessageForSlot0(handler: (payload: unknown) => void): void {
  process.on('message', (m: unknown) => {
    if (m && typeof m === 'object' && FOR_SLOT_0 in m) handler((m as Record<string, unknown>)[FOR_SLOT_0]);
  });
}

const forSlot0 = (m: unknown) => Boolean(m && typeof m === 'object' && FOR_SLOT_0 in m);

export interface SupervisorLog {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
}

/** A process that dies sooner than this after its start waits before it is replaced, doubling up to RESTART_MAX_MS. */
const QUICK_DEATH_MS = 10_000;
const RESTART_MIN_MS = 500;
const RESTART_MAX_MS = 30_000;
const STOP_GRACE_MS = 15_000;

/**
 * The primary of `serve` with several processes: forks `n` copies of this command (they share
 * the listening ports through node:cluster), replaces one that dies, and on SIGTERM/SIGINT passes
 * the signal on and exits once every process has. The primary opens no store and serves nothing,
 * so a replacement is never waiting on it.
 */
export function superviseServe(n: number, log: SupervisorLog): void {
  let stopping = false;
  const bySlot = new Map<number, Worker>();
  const delays = new Map<number, number>();

  const fork = (slot: number) => {
    const startedAt = Date.now();
    const w = cluster.fork({ [SLOT_ENV]: String(slot) });
    bySlot.set(slot, w);
    // Passed on as they come; while slot 0 is being replaced they are lost (its watch is down: a gap).
    w.on('message', (m: unknown) => {
      if (forSlot0(m)) bySlot.get(0)?.send(m as object);
    });
    w.once('exit', (code, signal) => {
      if (bySlot.get(slot) === w) bySlot.delete(slot);
      if (stopping) {
        if (bySlot.size === 0) process.exit(0);
        return;
      }
      const quick = Date.now() - startedAt < QUICK_DEATH_MS;
      const delay = quick ? Math.min((delays.get(slot) ?? RESTART_MIN_MS / 2) * 2, RESTART_MAX_MS) : RESTART_MIN_MS;
      delays.set(slot, delay);
      log.warn({ slot, pid: w.process.pid, code, signal, restartInMs: delay }, 'serve process exited: starting another');
      setTimeout(() => {
        if (!stopping) fork(slot);
      }, delay);
    });
  };

  for (let slot = 0; slot < n; slot++) fork(slot);
  log.info({ processes: n, pid: process.pid }, 'serve: supervising its processes');

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'serve: stopping its processes');
    if (bySlot.size === 0) process.exit(0);
    for (const w of bySlot.values()) w.process.kill(signal);
    setTimeout(() => {
      for (const w of bySlot.values()) w.process.kill('SIGKILL');
      process.exit(1);
    }, STOP_GRACE_MS).unref();
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}
