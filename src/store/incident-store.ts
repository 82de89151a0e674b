import type { IncidentKind } from '../shared/security-terms.js';
import type { Executor } from './db.js';

export type StepStatus = 'running' | 'succeeded' | 'unconfirmed' | 'failed' | 'proposed' | 'rejected';

export interface IncidentTargets {
  devices: string[];
  lots: string[];
  brokers: string[];
  caId: string | null;
}

export interface IncidentRow {
  id: string;
  kind: IncidentKind;
  title: string;
  description: string | null;
  status: 'open' | 'closed';
  targets: IncidentTargets;
  steps: number;
  openedBy: string;
  openedAt: Date;
  closedBy: string | null;
  closedAt: Date | null;
  summary: string | null;
}

export interface Touched {
  type: string;
  id: string;
}

export interface StepRow {
  id: string;
  incidentId: string;
  seq: number;
  action: string;
  params: Record<string, unknown>;
  dryRun: boolean;
  status: StepStatus;
  actor: string;
  startedAt: Date;
  finishedAt: Date | null;
  touchedCount: number;
  touched: Touched[];
  result: Record<string, unknown> | null;
  error: string | null;
  retryOf: string | null;
  approvalId: string | null;
}

const INCIDENT_COLUMNS = [
  'id',
  'kind',
  'title',
  'description',
  'status',
  'targets',
  'steps',
  'opened_by',
  'opened_at',
  'closed_by',
  'closed_at',
  'summary',
];
const STEP_COLUMNS = [
  'id',
  'incident_id',
  'seq',
  'action',
  'params',
  'dry_run',
  'status',
  'actor',
  'started_at',
  'finished_at',
  'touched_count',
  'touched',
  'result',
  'error',
  'retry_of',
  'approval_id',
];

/** A device as an incident's targets see it. */
export interface TargetDeviceRow {
  id: string;
  kind: string;
  status: string;
  lot: string | null;
  currentSerial: Buffer | null;
}

const TARGET_COLUMNS = ['id', 'kind', 'status', 'lot', 'current_serial'];

function targetFrom(r: {
  id: string;
  kind: string;
  status: string;
  lot: string | null;
  current_serial: Uint8Array | null;
}): TargetDeviceRow {
  return { id: r.id, kind: r.kind, status: r.status, lot: r.lot, currentSerial: r.current_serial ? Buffer.from(r.current_serial) : null };
}

const json = <T>(v: unknown): T => (typeof v === 'string' ? (JSON.parse(v) as T) : (v as T));
const dateOrNull = (v: unknown): Date | null => (v == null ? null : new Date(v as string));

function incidentFrom(r: Record<string, unknown>): IncidentRow {
  return {
    id: r.id as string,
    kind: r.kind as IncidentKind,
    title: r.title as string,
    description: (r.description as string | null) ?? null,
    status: r.status as IncidentRow['status'],
    targets: json<IncidentTargets>(r.targets),
    steps: Number(r.steps),
    openedBy: r.opened_by as string,
    openedAt: new Date(r.opened_at as string),
    closedBy: (r.closed_by as string | null) ?? null,
    closedAt: dateOrNull(r.closed_at),
    summary: (r.summary as string | null) ?? null,
  };
}

function stepFrom(r: Record<string, unknown>): StepRow {
  return {
    id: r.id as string,
    incidentId: r.incident_id as string,
    seq: Number(r.seq),
    action: r.action as string,
    params: json<Record<string, unknown>>(r.params),
    dryRun: Boolean(r.dry_run),
    status: r.status as StepStatus,
    actor: r.actor as string,
    startedAt: new Date(r.started_at as string),
    finishedAt: dateOrNull(r.finished_at),
    touchedCount: Number(r.touched_count),
    touched: json<Touched[]>(r.touched),
    result: r.result == null ? null : json<Record<string, unknown>>(r.result),
    error: (r.error as string | null) ?? null,
    retryOf: (r.retry_of as string | null) ?? null,
    approvalId: (r.approval_id as string | null) ?? null,
  };
}

/** SQL for incidents and their timelines. */
export class IncidentStore {
  async insert(db: Executor, row: IncidentRow): Promise<void> {
    await db('incidents').insert({
      id: row.id,
      kind: row.kind,
      title: row.title,
      description: row.description,
      status: row.status,
      targets: JSON.stringify(row.targets),
      steps: row.steps,
      opened_by: row.openedBy,
      opened_at: row.openedAt,
    });
  }

  async get(db: Executor, id: string): Promise<IncidentRow | undefined> {
    const r = await db('incidents').select(INCIDENT_COLUMNS).where({ id }).first();
    return r ? incidentFrom(r) : undefined;
  }

  /** Reads and locks the incident: steps of one incident are numbered, and run, one at a time. */
  async getForUpdate(tx: Executor, id: string): Promise<IncidentRow | undefined> {
    const r = await tx('incidents').select(INCIDENT_COLUMNS).where({ id }).forUpdate().first();
    return r ? incidentFrom(r) : undefined;
  }

  /** Newest first, keyset over (opened_at, id). */
  async list(
    db: Executor,
    q: { status?: string | undefined; kind?: string | undefined; before?: { openedAt: Date; id: string } | undefined; limit: number },
  ): Promise<IncidentRow[]> {
    const query = db('incidents').select(INCIDENT_COLUMNS);
    if (q.status) query.where('status', q.status);
    if (q.kind) query.where('kind', q.kind);
    if (q.before) query.whereRaw('(opened_at, id) < (?::timestamptz, ?::text)', [q.before.openedAt, q.before.id]);
    const rows = await query
      .orderBy([
        { column: 'opened_at', order: 'desc' },
        { column: 'id', order: 'desc' },
      ])
      .limit(q.limit);
    return rows.map(incidentFrom);
  }

  /** Takes the next step number of a locked incident. */
  async nextSeq(tx: Executor, id: string): Promise<number> {
    const [r] = await tx('incidents').where({ id }).increment('steps', 1).returning(['steps']);
    return Number((r as { steps: number }).steps);
  }

  async close(tx: Executor, id: string, by: string, at: Date, summary: string): Promise<boolean> {
    const n = await tx('incidents').where({ id, status: 'open' }).update({ status: 'closed', closed_by: by, closed_at: at, summary });
    return n > 0;
  }

  async insertStep(db: Executor, s: StepRow): Promise<void> {
    await db('incident_steps').insert({
      id: s.id,
      incident_id: s.incidentId,
      seq: s.seq,
      action: s.action,
      params: JSON.stringify(s.params),
      dry_run: s.dryRun,
      status: s.status,
      actor: s.actor,
      started_at: s.startedAt,
      finished_at: s.finishedAt,
      touched_count: s.touchedCount,
      touched: JSON.stringify(s.touched),
      result: s.result === null ? null : JSON.stringify(s.result),
      error: s.error,
      retry_of: s.retryOf,
      approval_id: s.approvalId,
    });
  }

  /** Ends a running (or proposed) step. */
  async finishStep(
    db: Executor,
    id: string,
    f: {
      status: StepStatus;
      finishedAt: Date;
      touchedCount: number;
      touched: Touched[];
      result: Record<string, unknown> | null;
      error: string | null;
    },
  ): Promise<StepRow> {
    const [r] = await db('incident_steps')
      .where({ id })
      .whereIn('status', ['running', 'proposed'])
      .update({
        status: f.status,
        finished_at: f.finishedAt,
        touched_count: f.touchedCount,
        touched: JSON.stringify(f.touched),
        result: f.result === null ? null : JSON.stringify(f.result),
        error: f.error,
      })
      .returning(STEP_COLUMNS);
    if (!r) throw new Error(`step ${id} is not running`);
    return stepFrom(r);
  }

  async setApproval(db: Executor, id: string, approvalId: string): Promise<void> {
    await db('incident_steps').where({ id }).update({ approval_id: approvalId });
  }

  async step(db: Executor, incidentId: string, stepId: string): Promise<StepRow | undefined> {
    const r = await db('incident_steps').select(STEP_COLUMNS).where({ id: stepId, incident_id: incidentId }).first();
    return r ? stepFrom(r) : undefined;
  }

  async steps(db: Executor, incidentId: string): Promise<StepRow[]> {
    const rows = await db('incident_steps').select(STEP_COLUMNS).where({ incident_id: incidentId }).orderBy('seq');
    return rows.map(stepFrom);
  }

  // ---- target resolution ------------------------------------------------------------------

  /** The named devices that exist, with their kind and status. */
  async devices(db: Executor, ids: string[]): Promise<TargetDeviceRow[]> {
    if (ids.length === 0) return [];
    return (await db('devices').select(TARGET_COLUMNS).whereRaw('id = any(?::text[])', [ids]).orderBy('id')).map(targetFrom);
  }

  /** Every device of these lots. */
  async devicesInLots(db: Executor, lots: string[]): Promise<TargetDeviceRow[]> {
    if (lots.length === 0) return [];
    return (await db('devices').select(TARGET_COLUMNS).whereRaw('lot = any(?::text[])', [lots]).orderBy('id')).map(targetFrom);
  }

  /** Lots that have at least one device. */
  async existingLots(db: Executor, lots: string[]): Promise<string[]> {
    if (lots.length === 0) return [];
    const rows = await db('devices').distinct('lot').whereRaw('lot = any(?::text[])', [lots]);
    return rows.map((r: { lot: string }) => r.lot);
  }

  /**
   * Certificates of these devices that are still valid (issued, not expired) although the
   * device's current certificate is a newer one: what a reissue left behind.
   */
  async replacedCertificates(db: Executor, deviceIds: string[], now: Date): Promise<Buffer[]> {
    if (deviceIds.length === 0) return [];
    const rows = await db('certificates as c')
      .join('devices as d', 'd.id', 'c.device_id')
      .join('certificates as cur', 'cur.serial', 'd.current_serial')
      .select('c.serial')
      .whereRaw('c.device_id = any(?::text[])', [deviceIds])
      .where('c.status', 'issued')
      .where('c.not_after', '>', now)
      .whereRaw('c.serial <> d.current_serial')
      .whereRaw('cur.issued_at > c.issued_at')
      .orderBy('c.serial');
    return rows.map((r: { serial: Uint8Array }) => Buffer.from(r.serial));
  }
}
