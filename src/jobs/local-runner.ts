import { randomUUID } from 'node:crypto';
import { backoffDelay, errorText, type JobRunner, type JobsOverview, type JobView, type NewJob, type QueueDefinition } from './runner.js';

interface LocalJob {
  id: string;
  name: string;
  payload: Record<string, unknown>;
  attempts: number;
  createdAt: Date;
  runAt: number;
  state: JobView['state'];
  finishedAt?: Date;
  failedReason?: string;
}

const KEPT = 200;

/**
 * The embedded default (no REDIS_URL): the same processors, in this process, on timers. Retries
 * with exponential backoff and a failed list as BullMQ would; nothing survives a restart, which
 * is fine because every job finds its work in the database and the schedules find it again.
 */
export class LocalJobRunner implements JobRunner {
  readonly backend = 'in-process' as const;
  private readonly queues = new Map<
    string,
    { def: QueueDefinition; waiting: LocalJob[]; active: Set<LocalJob>; done: LocalJob[]; failed: LocalJob[]; timer?: NodeJS.Timeout }
  >();
  private readonly timers = new Set<NodeJS.Timeout>();
  private started = false;
  private closed = false;

  constructor(
    defs: QueueDefinition[],
    private readonly onError: (queue: string, job: JobView, e: unknown) => void = () => undefined,
  ) {
    for (const def of defs) this.queues.set(def.name, { def, waiting: [], active: new Set(), done: [], failed: [] });
  }

  async enqueue(queue: string, jobs: NewJob[]): Promise<void> {
    const q = this.queue(queue);
    const now = Date.now();
    for (const j of jobs) {
      if (j.jobId && (q.waiting.some((w) => w.id === j.jobId) || [...q.active].some((a) => a.id === j.jobId))) continue;
      q.waiting.push({
        id: j.jobId ?? randomUUID(),
        name: j.name,
        payload: j.payload,
        attempts: 0,
        createdAt: new Date(now),
        runAt: now + (j.delayMs ?? 0),
        state: j.delayMs ? 'delayed' : 'waiting',
      });
    }
    this.pump(queue);
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    for (const [name, q] of this.queues) {
      for (const s of q.def.schedules ?? []) {
        const t = setInterval(() => void this.enqueue(name, [{ name: s.name, payload: {}, jobId: `schedule:${s.name}` }]), s.everyMs);
        t.unref();
        this.timers.add(t);
        void this.enqueue(name, [{ name: s.name, payload: {}, jobId: `schedule:${s.name}` }]);
      }
      this.pump(name);
    }
  }

  async overview(opts: { limit?: number } = {}): Promise<JobsOverview> {
    const limit = opts.limit ?? 20;
    const now = Date.now();
    return {
      backend: this.backend,
      queues: [...this.queues.values()].map((q) => {
        const delayed = q.waiting.filter((j) => j.runAt > now).length;
        return {
          name: q.def.name,
          counts: {
            waiting: q.waiting.length - delayed,
            delayed,
            active: q.active.size,
            completed: q.done.length,
            failed: q.failed.length,
          },
          schedules: q.def.schedules ?? [],
          recent: [...q.active, ...q.done.slice(-limit).reverse()].slice(0, limit).map(view),
          failed: q.failed.slice(-limit).reverse().map(view),
        };
      }),
    };
  }

  async drained(queue: string): Promise<boolean> {
    const q = this.queue(queue);
    return q.waiting.length === 0 && q.active.size === 0;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    for (const q of this.queues.values()) if (q.timer) clearTimeout(q.timer);
    // Let running jobs finish: their effects are transactions that should not be cut.
    while ([...this.queues.values()].some((q) => q.active.size > 0)) await new Promise((r) => setTimeout(r, 10));
  }

  private queue(name: string) {
    const q = this.queues.get(name);
    if (!q) throw new Error(`no job queue ${name}`);
    return q;
  }

  private pump(name: string): void {
    if (!this.started || this.closed) return;
    const q = this.queue(name);
    if (q.timer) {
      clearTimeout(q.timer);
      q.timer = undefined;
    }
    const now = Date.now();
    while (q.active.size < q.def.concurrency) {
      const i = q.waiting.findIndex((j) => j.runAt <= now);
      if (i < 0) break;
      const [job] = q.waiting.splice(i, 1);
      void this.run(name, job!);
    }
    const next = Math.min(...q.waiting.map((j) => j.runAt));
    if (Number.isFinite(next) && q.active.size < q.def.concurrency) {
      q.timer = setTimeout(() => this.pump(name), Math.max(0, next - now));
      q.timer.unref();
    }
  }

  private async run(name: string, job: LocalJob): Promise<void> {
    const q = this.queue(name);
    q.active.add(job);
    job.state = 'active';
    job.attempts += 1;
    try {
      await q.def.process(job.name, job.payload, { id: job.id, attempt: job.attempts });
      job.state = 'completed';
      job.finishedAt = new Date();
      keep(q.done, job);
    } catch (e) {
      job.failedReason = errorText(e);
      this.onError(name, view(job), e);
      if (job.attempts < q.def.attempts && !this.closed) {
        job.state = 'delayed';
        job.runAt = Date.now() + backoffDelay(q.def, job.attempts);
        q.waiting.push(job);
      } else {
        job.state = 'failed';
        job.finishedAt = new Date();
        keep(q.failed, job);
      }
    } finally {
      q.active.delete(job);
      this.pump(name);
    }
  }
}

function keep(list: LocalJob[], job: LocalJob): void {
  list.push(job);
  if (list.length > KEPT) list.splice(0, list.length - KEPT);
}

function view(j: LocalJob): JobView {
  return {
    id: j.id,
    name: j.name,
    state: j.state,
    attempts: j.attempts,
    createdAt: j.createdAt.toISOString(),
    ...(j.finishedAt ? { finishedAt: j.finishedAt.toISOString() } : {}),
    ...(j.failedReason ? { failedReason: j.failedReason } : {}),
  };
}
