import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { DomainError } from '../shared/errors.js';
import { type JobRunner, type JobsOverview, type JobState, type JobView, type NewJob, type QueueDefinition } from './runner.js';

export interface BullMqOptions {
  redisUrl: string;
  /** Redis key prefix: instances (and test runs) sharing a Redis keep apart by it. */
  prefix: string;
  /** How long a worker holds a job before another may take it over (a worker that died). */
  lockMs: number;
  onError?: (where: string, e: unknown, job?: JobView) => void;
}

const OVERVIEW_TIMEOUT_MS = 3_000;
const STATES: JobState[] = ['waiting', 'active', 'delayed', 'completed', 'failed'];

/**
 * BullMQ on Redis: queues, one job per schedule period across every worker process, delayed
 * jobs, retries with exponential backoff, failed jobs kept with their reasons, and jobs of a
 * worker that died taken over once its lock lapses. While Redis is down, enqueue and overview
 * fail fast with Unavailable and workers reconnect on their own.
 */
export class BullMqJobRunner implements JobRunner {
  readonly backend = 'bullmq' as const;
  private built: { connection: Redis; queues: Map<string, { def: QueueDefinition; queue: Queue }> } | undefined;
  private readonly workers: Worker[] = [];

  /** Nothing touches Redis until the first enqueue, overview, start or dashboard: CLI commands that need no jobs never connect. */
  constructor(
    private readonly defs: QueueDefinition[],
    private readonly opts: BullMqOptions,
  ) {}

  private get live() {
    if (this.built) return this.built;
    const onError = (where: string) => (e: unknown) => this.opts.onError?.(where, e);
    // Commands wait for a reconnect instead of failing (BullMQ requires it of worker connections).
    const connection = new Redis(this.opts.redisUrl, { maxRetriesPerRequest: null });
    connection.on('error', onError('redis'));
    const queues = new Map<string, { def: QueueDefinition; queue: Queue }>();
    for (const def of this.defs) {
      const queue = new Queue(def.name, {
        connection,
        prefix: this.opts.prefix,
        defaultJobOptions: {
          attempts: def.attempts,
          backoff: { type: 'exponential', delay: def.backoffMs },
          removeOnComplete: { count: 1000, age: 86_400 },
          removeOnFail: { count: 5000 },
        },
      });
      queue.on('error', onError(`queue ${def.name}`));
      queues.set(def.name, { def, queue });
    }
    this.built = { connection, queues };
    return this.built;
  }

  private get connection(): Redis {
    return this.live.connection;
  }

  private get queues() {
    return this.live.queues;
  }

  /** The queues, for the dashboard. */
  bullQueues(): Queue[] {
    return [...this.queues.values()].map((q) => q.queue);
  }

  async enqueue(queue: string, jobs: NewJob[]): Promise<void> {
    if (jobs.length === 0) return;
    await this.requireConnected();
    await this.queue(queue).queue.addBulk(
      jobs.map((j) => ({
        name: j.name,
        data: j.payload,
        opts: { ...(j.jobId ? { jobId: j.jobId } : {}), ...(j.delayMs ? { delay: j.delayMs } : {}) },
      })),
    );
  }

  async start(): Promise<void> {
    if (this.workers.length > 0) return;
    await this.upsertSchedules();
    // A Redis that came back empty (restarted without persistence) lost the schedules: put them back.
    this.connection.on('ready', () => void this.upsertSchedules().catch((e: unknown) => this.opts.onError?.('schedules', e)));
    for (const { def } of this.queues.values()) {
      const worker = new Worker(
        def.name,
        (job: Job) => def.process(job.name, job.data as Record<string, unknown>, { id: job.id ?? '', attempt: job.attemptsMade + 1 }),
        {
          connection: this.connection,
          prefix: this.opts.prefix,
          concurrency: def.concurrency,
          lockDuration: this.opts.lockMs,
          stalledInterval: this.opts.lockMs,
          maxStalledCount: 2,
        },
      );
      worker.on('error', (e) => this.opts.onError?.(`worker ${def.name}`, e));
      worker.on('failed', (job, e) => this.opts.onError?.(`job ${def.name}`, e, job ? view(job, 'failed') : undefined));
      this.workers.push(worker);
    }
  }

  /** Idempotent: every process upserts the same schedulers; Redis holds one of each. */
  private async upsertSchedules(): Promise<void> {
    for (const { def, queue } of this.queues.values()) {
      for (const s of def.schedules ?? []) {
        await queue.upsertJobScheduler(`${def.name}:${s.name}`, { every: s.everyMs }, { name: s.name, data: {} });
      }
    }
  }

  async overview(opts: { limit?: number } = {}): Promise<JobsOverview> {
    const limit = opts.limit ?? 20;
    await this.requireConnected();
    const work = Promise.all(
      [...this.queues.values()].map(async ({ def, queue }) => {
        const [counts, recent, failed, schedulers] = await Promise.all([
          queue.getJobCounts(...STATES),
          queue.getJobs(['active', 'completed'], 0, limit - 1, false),
          queue.getJobs(['failed'], 0, limit - 1, false),
          queue.getJobSchedulers(0, -1, true),
        ]);
        const states = await Promise.all(recent.map((j) => j.getState()));
        return {
          name: def.name,
          counts: Object.fromEntries(STATES.map((s) => [s, counts[s] ?? 0])) as Record<JobState, number>,
          schedules: schedulers.map((s) => ({ name: s.name, everyMs: Number(s.every ?? 0) })),
          recent: recent.map((j, i) => view(j, states[i] === 'active' ? 'active' : 'completed')),
          failed: failed.map((j) => view(j, 'failed')),
        };
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DomainError('Unavailable', 'the job queue (Redis) does not answer')), OVERVIEW_TIMEOUT_MS);
    });
    try {
      return { backend: this.backend, queues: await Promise.race([work, timeout]) };
    } finally {
      clearTimeout(timer);
    }
  }

  async drained(queue: string): Promise<boolean> {
    const c = await this.queue(queue).queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'paused');
    return Object.values(c).every((n) => n === 0);
  }

  async close(): Promise<void> {
    if (!this.built) return;
    await Promise.all(this.workers.map((w) => w.close()));
    await Promise.all([...this.built.queues.values()].map((q) => q.queue.close()));
    this.built.connection.disconnect();
  }

  /** Fails fast while Redis is away (the caller answers 503 or retries later) instead of queueing commands. */
  private async requireConnected(): Promise<void> {
    const c = this.connection;
    if (['wait', 'connecting', 'connect'].includes(c.status)) {
      // A fresh connection (or one coming back): give it a moment to become ready.
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          c.off('ready', done).off('error', done);
          resolve();
        };
        const timer = setTimeout(done, 2000);
        c.once('ready', done).once('error', done);
      });
    }
    if (c.status !== 'ready') throw new DomainError('Unavailable', `the job queue (Redis) is not connected (${c.status})`);
  }

  private queue(name: string) {
    const q = this.queues.get(name);
    if (!q) throw new Error(`no job queue ${name}`);
    return q;
  }
}

function view(j: Job, state: JobState): JobView {
  return {
    id: j.id ?? '',
    name: j.name,
    state,
    attempts: j.attemptsMade,
    createdAt: new Date(j.timestamp).toISOString(),
    ...(j.finishedOn ? { finishedAt: new Date(j.finishedOn).toISOString() } : {}),
    ...(j.failedReason ? { failedReason: j.failedReason } : {}),
  };
}
