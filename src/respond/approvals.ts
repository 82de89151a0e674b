import type { Knex } from 'knex';
import type { Role } from '../access/api-keys.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { ActorContext } from '../shared/actor.js';
import type { Clock } from '../shared/clock.js';
import { badRequest, conflict, DomainError, forbidden, isDomainError, notFound } from '../shared/errors.js';
import { identityKey } from '../shared/confusables.js';
import { newId } from '../shared/ids.js';
import { cursorText, encodeCursor as cursorOf, type Page } from '../shared/page.js';
import type { Db } from '../store/db.js';
import type { ApprovalCursor, ApprovalPartyRow, ApprovalRow, ApprovalStatus, ApprovalStore } from '../store/approval-store.js';

/**
 * A person acting through an API key: the audit actor (`api-key:<id>`) and request id, plus the key
 * and the name of its owner, so the second person can be told apart from the first.
 */
export interface ApprovalActor extends ActorContext {
  keyId: string;
  /** The API key's name: keys whose names are alike (identityKey: confusables, case, invisibles) belong to one person. */
  name: string;
  role: Role;
}

/** When a key was made and by which keys (nearest first): the ApiKeyService answers it. */
export interface KeyLineage {
  lineage(keyId: string): Promise<{ createdAt: Date; ancestors: string[] } | undefined>;
}

export interface ApprovalExecutor<P = unknown, R = unknown> {
  /** Roles allowed to propose this action, and to approve it unless `approvers` says otherwise (exactly these: admin is not implied). */
  roles: readonly Role[];
  /** Roles allowed to approve it, when not the proposers' (a reissue an operator proposes is approved by a provisioner or admin). */
  approvers?: readonly Role[];
  /** Validates params (throws DomainError) and says what it would touch: shown to the approver. */
  describe(params: P): Promise<{ summary: string; targets?: unknown }>;
  /**
   * Runs the action once approved; its result is stored on the proposal. `params` are the proposal's
   * params as stored (JSON: what JSON.parse(JSON.stringify(params)) gives). A throw records the
   * proposal as failed with the error (a DomainError's message; any other error as an internal one).
   */
  execute(params: P, ctx: ExecutionContext): Promise<R>;
}

export interface ExecutionContext {
  proposedBy: ApprovalActor;
  approvedBy: ApprovalActor;
  proposalId: string;
  /** Hands secrets (a reissue's enrollment tokens) to the approver in the approval's answer, once: never stored. */
  handOver(secrets: Record<string, unknown>): void;
}

export const APPROVAL_STATUSES: readonly ApprovalStatus[] = ['pending', 'approved', 'executed', 'failed', 'rejected', 'expired'];

export interface ApprovalParty {
  keyId: string;
  name: string;
  role: string;
}

/** A proposal as the API shows it. Times are UTC ISO-8601. */
export interface ApprovalView {
  id: string;
  action: string;
  status: ApprovalStatus;
  summary: string;
  targets: unknown;
  /** Left out of lists (it may be large). */
  params?: unknown;
  note: string | null;
  proposedBy: ApprovalParty;
  proposedAt: string;
  expiresAt: string;
  decidedBy: ApprovalParty | null;
  decidedAt: string | null;
  /** The rejection's reason. */
  reason: string | null;
  finishedAt: string | null;
  result: unknown;
  error: { kind: string; message: string } | null;
}

export interface ApprovalListQuery {
  status?: ApprovalStatus | undefined;
  action?: string | undefined;
  cursor?: string | undefined;
  /** 1..500 */
  limit: number;
}

export const APPROVAL_LIST_MAX_LIMIT = 500;
const SYSTEM_ACTOR = 'system:approvals';
const NOTE_MAX = 1000;

const iso = (d: Date | null) => (d === null ? null : d.toISOString());
const partyView = (p: ApprovalPartyRow): ApprovalParty => ({ keyId: p.keyId, name: p.name, role: p.role });
const partyRow = (a: ApprovalActor): ApprovalPartyRow => ({ actor: a.actor, keyId: a.keyId, name: a.name, role: a.role });
const sameOwner = (a: { keyId: string; name: string }, b: { keyId: string; name: string }) =>
  a.keyId === b.keyId || identityKey(a.name) === identityKey(b.name);

function view(r: ApprovalRow): ApprovalView {
  return {
    id: r.id,
    action: r.action,
    status: r.status,
    summary: r.summary,
    targets: r.targets ?? null,
    ...(r.params !== undefined ? { params: r.params } : {}),
    note: r.note,
    proposedBy: partyView(r.proposedBy),
    proposedAt: r.proposedAt.toISOString(),
    expiresAt: r.expiresAt.toISOString(),
    decidedBy: r.decidedBy ? partyView(r.decidedBy) : null,
    decidedAt: iso(r.decidedAt),
    reason: r.decisionReason,
    finishedAt: iso(r.finishedAt),
    result: r.result ?? null,
    error: r.error,
  };
}

/** An ApprovalActor rebuilt from a stored party (for execute()'s proposedBy). */
function actorOfRow(p: ApprovalPartyRow): ApprovalActor {
  return { actor: p.actor, keyId: p.keyId, name: p.name, role: p.role as Role };
}

const encodeCursor = (c: ApprovalCursor) => cursorOf(JSON.stringify([c.proposedAt.toISOString(), c.id]));

function decodeCursor(s: string): ApprovalCursor {
  try {
    const [at, id] = JSON.parse(cursorText(s)) as [unknown, unknown];
    const proposedAt = new Date(at as string);
    if (typeof at === 'string' && typeof id === 'string' && !Number.isNaN(proposedAt.getTime())) return { proposedAt, id };
  } catch {
    // falls through
  }
  throw badRequest('invalid cursor');
}

function checkNote(note: string | undefined, what: string): string | null {
  if (note === undefined || note === null) return null;
  if (typeof note !== 'string' || note.length > NOTE_MAX) throw badRequest(`${what} must be a string of at most ${NOTE_MAX} characters`);
  return note.trim() === '' ? null : note;
}

function toJson(params: unknown): unknown {
  const s = JSON.stringify(params);
  if (s === undefined) throw badRequest('params must be JSON');
  return JSON.parse(s) as unknown;
}

/**
 * The two-person rule. An action registered here is proposed by one operator and runs only when a
 * different one approves it: never the same API key, nor a key whose name is alike (identityKey),
 * nor a key in the proposer's key's lineage either way, nor one created after the proposal. Each step
 * commits with its audit entry (approval.proposed, .approved, .rejected, .expired, .executed, .failed,
 * naming both people). The decision is taken under a row lock, so of two concurrent approvals one
 * executes and the other gets a conflict; the action itself runs after the decision committed (it
 * opens its own transactions) and its outcome is recorded on the proposal.
 */
export class Approvals {
  private readonly executors = new Map<string, ApprovalExecutor<never, unknown>>();

  constructor(
    private readonly db: Db,
    private readonly store: ApprovalStore,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly opts: {
      /** How long a proposal waits for its second person (APPROVAL_TTL_HOURS). */
      ttlMs: number;
      /** Who made each API key: an approver the proposer made, or made after the proposal, is not a second person. */
      lineage: KeyLineage;
      /** Told of an executor's error that is not a DomainError (the proposal records it without detail). */
      onInternalError?: (e: unknown, proposalId: string) => void;
    },
  ) {}

  /** Makes `action` proposable. One executor per action name; registering a name twice is a programming error. */
  register<P, R>(action: string, ex: ApprovalExecutor<P, R>): void {
    if (!/^[a-z][a-z0-9.-]{0,63}$/.test(action)) throw new TypeError(`approval action names are lowercase dotted words: ${action}`);
    if (this.executors.has(action)) throw new TypeError(`an approval executor for ${action} is registered already`);
    this.executors.set(action, ex as unknown as ApprovalExecutor<never, unknown>);
  }

  /** The actions registered. */
  actions(): string[] {
    return [...this.executors.keys()].sort();
  }

  /** Records a proposal after the executor validated and described it. Nothing runs until someone else approves. */
  async propose(action: string, params: unknown, ctx: ApprovalActor, note?: string): Promise<ApprovalView> {
    const ex = this.executor(action);
    this.checkRole(ex, action, ctx, 'propose');
    const stored = toJson(params);
    const n = checkNote(note, 'note');
    const described = await ex.describe(stored as never);
    const now = this.clock.now();
    const row: ApprovalRow & { params: unknown } = {
      id: newId('apr'),
      action,
      params: stored,
      summary: described.summary,
      targets: described.targets === undefined ? null : toJson(described.targets),
      note: n,
      status: 'pending',
      proposedBy: partyRow(ctx),
      proposedAt: now,
      expiresAt: new Date(now.getTime() + this.opts.ttlMs),
      decidedBy: null,
      decidedAt: null,
      decisionReason: null,
      finishedAt: null,
      result: null,
      error: null,
    };
    await this.db.transaction(async (tx) => {
      await this.store.insert(tx, row);
      await this.audit.append(tx, [
        {
          actor: ctx.actor,
          requestId: ctx.requestId,
          action: 'approval.proposed',
          targetType: 'approval',
          targetId: row.id,
          details: {
            action,
            summary: row.summary,
            proposedBy: partyView(row.proposedBy),
            expiresAt: row.expiresAt.toISOString(),
            ...(n ? { note: n } : {}),
          },
        },
      ]);
    });
    return view(row);
  }

  /**
   * The second person's yes: refused (403) for the proposer (the same key, or a key whose owner's
   * name is the proposer's under identityKey: Unicode look-alikes, invisible characters and case
   * do not make another person), for a key the proposer created (directly or through keys it
   * created) or one created after the proposal, and for a role the action does not admit; 409 for
   * a proposal decided already or expired. Then the action runs once; its result or error is on
   * the returned proposal (executed or failed), and what it handed over (secrets) only in this answer.
   */
  async approve(id: string, ctx: ApprovalActor): Promise<ApprovalView & { secrets?: Record<string, unknown> }> {
    // Lineage is read first (a key's maker and creation time never change): never a second query inside the transaction.
    const approver = await this.opts.lineage.lineage(ctx.keyId);
    const proposedWith = (await this.store.get(this.db, id))?.proposedBy.keyId;
    const proposer = proposedWith === undefined ? undefined : await this.opts.lineage.lineage(proposedWith);
    const decided = await this.db.transaction(async (tx) => {
      const row = await this.store.getForUpdate(tx, id);
      if (!row) throw notFound(`no approval ${id}`);
      const ex = this.executorOf(row);
      this.checkRole(ex, row.action, ctx, 'approve', ex.approvers ?? ex.roles);
      if (sameOwner(row.proposedBy, ctx)) {
        throw forbidden(
          `cannot approve one's own proposal: ${row.id} was proposed by ${row.proposedBy.name} (${row.proposedBy.keyId}); another person must approve it`,
        );
      }
      if (!approver) throw forbidden(`the approving key ${ctx.keyId} is not on record`);
      // The maker of a key saw its secret: a key and the keys made from it, directly or not, are one hand.
      if (approver.ancestors.includes(row.proposedBy.keyId)) {
        throw forbidden(
          `cannot approve with a key the proposer's key made: ${ctx.keyId} descends from ${row.proposedBy.keyId}; another person must approve it`,
        );
      }
      if (proposer?.ancestors.includes(ctx.keyId)) {
        throw forbidden(
          `cannot approve a proposal made with a key one's own key made: ${row.proposedBy.keyId} descends from ${ctx.keyId}; another person must approve it`,
        );
      }
      if (approver.createdAt > row.proposedAt) {
        throw forbidden(
          `cannot approve with a key created after the proposal: ${ctx.keyId} was created at ${approver.createdAt.toISOString()}, ${row.id} proposed at ${row.proposedAt.toISOString()}`,
        );
      }
      if (row.status !== 'pending') throw conflict(`approval ${id} is ${row.status} already`);
      const now = this.clock.now();
      if (row.expiresAt <= now) {
        await this.expireIn(tx, [row], now);
        return { expired: row, approved: undefined };
      }
      if (!(await this.store.decide(tx, id, 'approved', { by: partyRow(ctx), at: now })))
        throw conflict(`approval ${id} was decided meanwhile`);
      await this.audit.append(tx, [
        {
          actor: ctx.actor,
          requestId: ctx.requestId,
          action: 'approval.approved',
          targetType: 'approval',
          targetId: id,
          details: {
            action: row.action,
            summary: row.summary,
            proposedBy: partyView(row.proposedBy),
            approvedBy: partyView(partyRow(ctx)),
          },
        },
      ]);
      return { approved: row, ex };
    });
    if (!decided.approved) throw conflict(`approval ${id} expired at ${decided.expired.expiresAt.toISOString()}: propose it again`);
    const { approved: row, ex } = decided;

    let outcome: { result: unknown } | { error: { kind: string; message: string } };
    let secrets: Record<string, unknown> | undefined;
    const handOver = (s: Record<string, unknown>) => {
      secrets = { ...secrets, ...s };
    };
    try {
      const result = await ex.execute(row.params as never, {
        proposedBy: actorOfRow(row.proposedBy),
        approvedBy: ctx,
        proposalId: id,
        handOver,
      });
      outcome = { result: result === undefined ? null : toJson(result) };
    } catch (e) {
      if (isDomainError(e)) outcome = { error: { kind: e.kind, message: e.message } };
      else {
        this.opts.onInternalError?.(e, id);
        outcome = { error: { kind: 'Internal', message: 'the action failed with an internal error (see the service log)' } };
      }
    }
    const status = 'result' in outcome ? 'executed' : 'failed';
    await this.db.transaction(async (tx) => {
      await this.store.finish(tx, id, status, { at: this.clock.now(), ...outcome });
      await this.audit.append(tx, [
        {
          actor: ctx.actor,
          requestId: ctx.requestId,
          action: `approval.${status}`,
          targetType: 'approval',
          targetId: id,
          details: {
            action: row.action,
            proposedBy: partyView(row.proposedBy),
            approvedBy: partyView(partyRow(ctx)),
            ...('error' in outcome ? { error: outcome.error } : {}),
          },
        },
      ]);
    });
    const finished = await this.get(id);
    return secrets ? { ...finished, secrets } : finished;
  }

  /**
   * A no: by anyone whose role the action admits, the proposer included (withdrawing it). 409 when
   * it was decided already or has expired.
   */
  async reject(id: string, ctx: ApprovalActor, reason?: string): Promise<ApprovalView> {
    const r = checkNote(reason, 'reason');
    const out = await this.db.transaction(async (tx) => {
      const row = await this.store.getForUpdate(tx, id);
      if (!row) throw notFound(`no approval ${id}`);
      const ex = this.executorOf(row);
      this.checkRole(ex, row.action, ctx, 'reject', [...ex.roles, ...(ex.approvers ?? [])]);
      if (row.status !== 'pending') throw conflict(`approval ${id} is ${row.status} already`);
      const now = this.clock.now();
      if (row.expiresAt <= now) {
        await this.expireIn(tx, [row], now);
        return { expired: row as ApprovalRow | undefined };
      }
      await this.store.decide(tx, id, 'rejected', { by: partyRow(ctx), at: now, reason: r });
      await this.audit.append(tx, [
        {
          actor: ctx.actor,
          requestId: ctx.requestId,
          action: 'approval.rejected',
          targetType: 'approval',
          targetId: id,
          details: {
            action: row.action,
            proposedBy: partyView(row.proposedBy),
            rejectedBy: partyView(partyRow(ctx)),
            withdrawn: sameOwner(row.proposedBy, ctx),
            ...(r ? { reason: r } : {}),
          },
        },
      ]);
      return { expired: undefined };
    });
    if (out.expired) throw conflict(`approval ${id} expired at ${out.expired.expiresAt.toISOString()}`);
    return this.get(id);
  }

  async get(id: string): Promise<ApprovalView> {
    const row = await this.store.get(this.db, id);
    if (!row) throw notFound(`no approval ${id}`);
    return view(row);
  }

  /** Newest first; `nextCursor` is null on the last page. Items leave out params. */
  async list(q: ApprovalListQuery): Promise<Page<ApprovalView>> {
    if (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > APPROVAL_LIST_MAX_LIMIT)
      throw badRequest(`limit must be an integer from 1 to ${APPROVAL_LIST_MAX_LIMIT}`);
    if (q.status !== undefined && !APPROVAL_STATUSES.includes(q.status))
      throw badRequest(`status must be one of ${APPROVAL_STATUSES.join(', ')}`);
    const rows = await this.store.list(
      this.db,
      { status: q.status, action: q.action },
      { cursor: q.cursor === undefined ? undefined : decodeCursor(q.cursor), limit: q.limit + 1 },
    );
    const more = rows.length > q.limit;
    const page = more ? rows.slice(0, q.limit) : rows;
    const last = page[page.length - 1];
    return { items: page.map(view), nextCursor: more && last ? encodeCursor({ proposedAt: last.proposedAt, id: last.id }) : null };
  }

  /** Housekeeping: pending proposals past their time become expired (each audited). */
  async expireDue(): Promise<{ expired: number }> {
    const now = this.clock.now();
    const n = await this.db.transaction(async (tx) => {
      const rows = await this.store.expireDue(tx, now);
      await this.appendExpired(tx, rows);
      return rows.length;
    });
    return { expired: n };
  }

  private async expireIn(tx: Knex.Transaction, rows: ApprovalRow[], now: Date): Promise<void> {
    const done: ApprovalRow[] = [];
    for (const r of rows) if (await this.store.decide(tx, r.id, 'expired', { by: null, at: now })) done.push(r);
    await this.appendExpired(tx, done);
  }

  private async appendExpired(tx: Knex.Transaction, rows: ApprovalRow[]): Promise<void> {
    await this.audit.append(
      tx,
      rows.map((r) => ({
        actor: SYSTEM_ACTOR,
        action: 'approval.expired',
        targetType: 'approval',
        targetId: r.id,
        details: { action: r.action, summary: r.summary, proposedBy: partyView(r.proposedBy), expiresAt: r.expiresAt.toISOString() },
      })),
    );
  }

  private executor(action: string): ApprovalExecutor<never, unknown> {
    const ex = this.executors.get(action);
    if (!ex) throw badRequest(`${action} is not an action that takes approval (known: ${this.actions().join(', ') || 'none'})`);
    return ex;
  }

  /** A stored proposal's executor; gone only when this service no longer registers the action. */
  private executorOf(row: ApprovalRow): ApprovalExecutor<never, unknown> {
    const ex = this.executors.get(row.action);
    if (!ex) throw new DomainError('Conflict', `approval ${row.id} is for ${row.action}, which this service does not run`);
    return ex;
  }

  private checkRole(
    ex: ApprovalExecutor<never, unknown>,
    action: string,
    ctx: ApprovalActor,
    what: string,
    roles: readonly Role[] = ex.roles,
  ): void {
    if (!roles.includes(ctx.role))
      throw forbidden(`the ${ctx.role} role may not ${what} ${action} (it takes ${[...new Set(roles)].join(' or ')})`);
  }
}
