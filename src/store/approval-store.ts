import type { Executor } from './db.js';

export type ApprovalStatus = 'pending' | 'approved' | 'executed' | 'failed' | 'rejected' | 'expired';

/** Who proposed or decided: the audit actor and the API key behind it. */
export interface ApprovalPartyRow {
  actor: string;
  keyId: string;
  name: string;
  role: string;
}

export interface ApprovalRow {
  id: string;
  action: string;
  /** Absent when a list left it out (it may be large: a bulk revocation's serials). */
  params?: unknown;
  summary: string;
  targets: unknown;
  note: string | null;
  status: ApprovalStatus;
  proposedBy: ApprovalPartyRow;
  proposedAt: Date;
  expiresAt: Date;
  decidedBy: ApprovalPartyRow | null;
  decidedAt: Date | null;
  decisionReason: string | null;
  finishedAt: Date | null;
  result: unknown;
  error: { kind: string; message: string } | null;
}

export interface ApprovalFilter {
  status?: ApprovalStatus | undefined;
  action?: string | undefined;
}

/** Keyset cursor over (proposed_at, id), newest first. */
export interface ApprovalCursor {
  proposedAt: Date;
  id: string;
}

const LIST_COLUMNS = [
  'id',
  'action',
  'summary',
  'targets',
  'note',
  'status',
  'proposed_by',
  'proposed_by_key',
  'proposed_by_name',
  'proposed_by_role',
  'proposed_at',
  'expires_at',
  'decided_by',
  'decided_by_key',
  'decided_by_name',
  'decided_by_role',
  'decided_at',
  'decision_reason',
  'finished_at',
  'result',
  'error',
];
const COLUMNS = [...LIST_COLUMNS, 'params'];

const date = (v: unknown) => (v == null ? null : new Date(v as string));
/** jsonb comes back parsed from pg and PGlite; a string is parsed here in case a driver does not. */
const json = (v: unknown): unknown => (typeof v === 'string' ? JSON.parse(v) : (v ?? null));

function fromRow(r: Record<string, unknown>): ApprovalRow {
  return {
    id: r.id as string,
    action: r.action as string,
    ...('params' in r ? { params: json(r.params) } : {}),
    summary: r.summary as string,
    targets: json(r.targets),
    note: (r.note as string | null) ?? null,
    status: r.status as ApprovalStatus,
    proposedBy: {
      actor: r.proposed_by as string,
      keyId: r.proposed_by_key as string,
      name: r.proposed_by_name as string,
      role: r.proposed_by_role as string,
    },
    proposedAt: new Date(r.proposed_at as string),
    expiresAt: new Date(r.expires_at as string),
    decidedBy:
      r.decided_by == null
        ? null
        : {
            actor: r.decided_by as string,
            keyId: r.decided_by_key as string,
            name: r.decided_by_name as string,
            role: r.decided_by_role as string,
          },
    decidedAt: date(r.decided_at),
    decisionReason: (r.decision_reason as string | null) ?? null,
    finishedAt: date(r.finished_at),
    result: json(r.result),
    error: json(r.error) as ApprovalRow['error'],
  };
}

const party = (p: ApprovalPartyRow) => ({ decided_by: p.actor, decided_by_key: p.keyId, decided_by_name: p.name, decided_by_role: p.role });

export class ApprovalStore {
  async insert(ex: Executor, r: ApprovalRow & { params: unknown }): Promise<void> {
    await ex('approvals').insert({
      id: r.id,
      action: r.action,
      params: JSON.stringify(r.params),
      summary: r.summary,
      targets: r.targets === undefined || r.targets === null ? null : JSON.stringify(r.targets),
      note: r.note,
      status: r.status,
      proposed_by: r.proposedBy.actor,
      proposed_by_key: r.proposedBy.keyId,
      proposed_by_name: r.proposedBy.name,
      proposed_by_role: r.proposedBy.role,
      proposed_at: r.proposedAt,
      expires_at: r.expiresAt,
    });
  }

  async get(ex: Executor, id: string): Promise<ApprovalRow | undefined> {
    const r = await ex('approvals').select(COLUMNS).where({ id }).first();
    return r ? fromRow(r) : undefined;
  }

  /** The row, locked until the transaction ends: two decisions on one proposal are serialized here. */
  async getForUpdate(ex: Executor, id: string): Promise<ApprovalRow | undefined> {
    const r = await ex('approvals').select(COLUMNS).where({ id }).forUpdate().first();
    return r ? fromRow(r) : undefined;
  }

  /** pending → approved | rejected | expired, only from pending; false when it was decided already. */
  async decide(
    ex: Executor,
    id: string,
    to: 'approved' | 'rejected' | 'expired',
    d: { by: ApprovalPartyRow | null; at: Date; reason?: string | null | undefined },
  ): Promise<boolean> {
    const n = await ex('approvals')
      .where({ id, status: 'pending' })
      .update({
        status: to,
        decided_at: d.at,
        decision_reason: d.reason ?? null,
        ...(d.by ? party(d.by) : {}),
        ...(to === 'approved' ? {} : { finished_at: d.at }),
      });
    return Number(n) > 0;
  }

  /** approved → executed | failed, with the result or the error; false when it was not approved (not executing). */
  async finish(
    ex: Executor,
    id: string,
    to: 'executed' | 'failed',
    v: { at: Date; result?: unknown; error?: { kind: string; message: string } },
  ): Promise<boolean> {
    const n = await ex('approvals')
      .where({ id, status: 'approved' })
      .update({
        status: to,
        finished_at: v.at,
        result: v.result === undefined ? null : JSON.stringify(v.result),
        error: v.error === undefined ? null : JSON.stringify(v.error),
      });
    return Number(n) > 0;
  }

  /** Every pending proposal whose time is up becomes expired, in one statement; returns them. */
  async expireDue(ex: Executor, now: Date): Promise<ApprovalRow[]> {
    const rows = await ex('approvals')
      .where({ status: 'pending' })
      .andWhere('expires_at', '<=', now)
      .update({ status: 'expired', decided_at: now, finished_at: now })
      .returning(LIST_COLUMNS);
    return (rows as Record<string, unknown>[]).map(fromRow);
  }

  /** Newest first, without params. */
  async list(ex: Executor, filter: ApprovalFilter, page: { cursor?: ApprovalCursor | undefined; limit: number }): Promise<ApprovalRow[]> {
    const q = ex('approvals').select(LIST_COLUMNS);
    if (filter.status) q.where({ status: filter.status });
    if (filter.action) q.where({ action: filter.action });
    if (page.cursor) {
      const c = page.cursor;
      q.where((w) =>
        w.where('proposed_at', '<', c.proposedAt).orWhere((x) => x.where('proposed_at', '=', c.proposedAt).andWhere('id', '<', c.id)),
      );
    }
    const rows = await q
      .orderBy([
        { column: 'proposed_at', order: 'desc' },
        { column: 'id', order: 'desc' },
      ])
      .limit(page.limit);
    return rows.map(fromRow);
  }
}
