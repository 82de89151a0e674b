/**
 * The job runner port. Payloads carry ids only and processors re-read the database, so a job
 * that runs twice (a retry, a redelivery after a worker died, a duplicate enqueue) does its work
 * once: PostgreSQL is the truth, the queue only carries work.
 */
export type JobPayload = Record<string, unknown>;

export interface JobContext {
  id: string;
  /** 1 on the first try. */
  attempt: number;
}

export interface QueueDefinition {
  name: string;
  /** Jobs of this queue one worker runs at once. */
  concurrency: number;
  /** Tries before a job is failed for good (the dead-letter state). */
  attempts: number;
  /** First retry delay; it doubles each try. */
  backoffMs: number;
  /** Runs one job; a throw is a failed try. */
  process(name: string, payload: JobPayload, ctx: JobContext): Promise<unknown>;
  /** Repeatable jobs of this queue: one job per period across every worker. */
  schedules?: { name: string; everyMs: number }[];
}

export interface NewJob {
  name: string;
  payload: JobPayload;
  /** A job with the id of one still queued is not added again. */
  jobId?: string;
  delayMs?: number;
}

export type JobState = 'waiting' | 'active' | 'delayed' | 'completed' | 'failed';

export interface JobView {
  id: string;
  name: string;
  state: JobState;
  attempts: number;
  createdAt: string;
  finishedAt?: string;
  failedReason?: string;
}

export interface QueueView {
  name: string;
  counts: Record<JobState, number>;
  schedules: { name: string; everyMs: number }[];
  recent: JobView[];
  failed: JobView[];
}

export interface JobsOverview {
  backend: 'bullmq' | 'in-process';
  queues: QueueView[];
}

export interface JobRunner {
  readonly backend: JobsOverview['backend'];
  enqueue(queue: string, jobs: NewJob[]): Promise<void>;
  /** Starts this process's workers and the schedules. */
  start(): Promise<void>;
  overview(opts?: { limit?: number }): Promise<JobsOverview>;
  /** Resolves when no job is waiting, delayed or running in any queue (tests and benchmarks). */
  drained(queue: string): Promise<boolean>;
  close(): Promise<void>;
}

export const backoffDelay = (def: Pick<QueueDefinition, 'backoffMs'>, attempt: number) => def.backoffMs * 2 ** (attempt - 1);

export const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));
