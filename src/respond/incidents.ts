import type { AuditLog } from '../audit/audit-log.js';
import type { ApprovalActor, ApprovalExecutor, ApprovalView } from './approvals.js';
import type { Role } from '../access/api-keys.js';
import type { ActorContext } from '../shared/actor.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, badRequest, conflict, notFound } from '../shared/errors.js';
import { newId } from '../shared/ids.js';
import { readTimeIdCursor, timeIdCursor, type Page } from '../shared/page.js';
import { INCIDENT_KINDS, type IncidentKind } from '../shared/security-terms.js';
import type { Db } from '../store/db.js';
import {
  type IncidentRow,
  type IncidentStore,
  type IncidentTargets,
  type StepRow,
  type StepStatus,
  type TargetDeviceRow,
  type Touched,
} from '../store/incident-store.js';

/** A device an action is about, as the inventory has it when the action runs. */
export type TargetDevice = TargetDeviceRow;

/** What an action works on: the incident's targets, resolved now (optionally narrowed to `params.devices`). */
export interface IncidentScope {
  incident: IncidentRow;
  /** The incident's devices and brokers, plus every device of its lots. */
  devices: TargetDevice[];
  /** The incident's lots (a narrowed scope has none: its devices are named). */
  lots: string[];
  caId: string | null;
}

/** The parameters an action may take; openapi.yaml checks their types, the action which apply. */
export interface ActionParams {
  devices?: string[];
  reason?: string;
  invalidityDate?: string;
  enrollmentTokens?: boolean;
  sessionKeys?: boolean;
  apiKeyIds?: string[];
  channels?: string[];
  expiresInSeconds?: number;
  dnsNames?: string[];
  ipAddresses?: string[];
  waveSize?: number;
  waveIntervalSeconds?: number;
}

export interface ActionPlan {
  /** Everything the action would touch (the service keeps the first TOUCHED_KEPT in the timeline). */
  touched: Touched[];
  /** Set when `touched` is only a sample of more. */
  touchedCount?: number;
  result?: Record<string, unknown>;
}

export interface ActionOutcome extends ActionPlan {
  /** succeeded: done and confirmed; unconfirmed: done, but a broker could not confirm every effect; failed: see error. */
  status: Extract<StepStatus, 'succeeded' | 'unconfirmed' | 'failed'>;
  error?: string;
  /** Handed to the caller once, never stored: the enrollment tokens a reissue made. */
  secrets?: Record<string, unknown>;
}

/**
 * One Respond or Recover action. `plan` is the dry run (and validates the parameters);
 * `run` does it through the domain services, each of which audits its own changes.
 */
export interface IncidentAction {
  readonly name: string;
  /** The parameters it takes; any other is a 400. */
  readonly params: readonly (keyof ActionParams)[];
  /** Only in incidents of these kinds (absent: any kind). */
  readonly kinds?: readonly IncidentKind[];
  /** `ctx` is who asks: an action may refuse what that role could not do directly. */
  plan(scope: IncidentScope, params: ActionParams, ctx: IncidentActor): Promise<ActionPlan>;
  /** `ctx` is who runs it: the proposer, or the approver of a proposed step. */
  run(scope: IncidentScope, params: ActionParams, ctx: IncidentActor): Promise<ActionOutcome>;
  /**
   * The two-person rule: the approval action (see INCIDENT_APPROVALS) this run needs, judged from
   * its plan and who asks, or null when that person may run it alone.
   */
  approval?(plan: ActionPlan, ctx: IncidentActor): IncidentApproval | null;
}

/** A person acting in an incident: always through an API key, with its role. */
export type IncidentActor = ApprovalActor;

/**
 * The approvals an incident step may need, and who proposes and who approves each: a big
 * revocation takes a second admin or operator; CA recovery a second admin; a reissue asked by a
 * role that cannot make device credentials itself (operator) is approved by one that can, who
 * receives its tokens.
 */
export const INCIDENT_APPROVALS = {
  'incident.action': { propose: ['admin', 'operator'], approve: ['admin', 'operator'] },
  'incident.ca-recovery': { propose: ['admin'], approve: ['admin'] },
  'incident.reissue': { propose: ['admin', 'operator'], approve: ['admin', 'provisioner'] },
} as const satisfies Record<string, { propose: readonly Role[]; approve: readonly Role[] }>;
export type IncidentApproval = keyof typeof INCIDENT_APPROVALS;

/** What a proposal for an incident step carries; the step itself holds the parameters. */
export interface StepProposal {
  incidentId: string;
  stepId: string;
  action: string;
  summary: string;
}

/** The part of Approvals that incidents use. */
export interface ApprovalsPort {
  propose(action: string, params: StepProposal, ctx: ApprovalActor, note?: string): Promise<ApprovalView>;
  get(id: string): Promise<ApprovalView>;
}

/** The progress of a CA-compromise recovery (its rollover), shown in the incident. */
export interface RecoveryProgress {
  ofCa(caId: string): Promise<unknown>;
}

export interface IncidentInput {
  kind: IncidentKind;
  title: string;
  description?: string | undefined;
  targets?: Partial<IncidentTargets> | undefined;
}

export interface StepView {
  id: string;
  seq: number;
  action: string;
  params: Record<string, unknown>;
  dryRun: boolean;
  status: StepStatus;
  actor: string;
  startedAt: string;
  finishedAt: string | null;
  touchedCount: number;
  touched: Touched[];
  result: Record<string, unknown> | null;
  error: string | null;
  retryOf: string | null;
  approvalId: string | null;
}

export interface IncidentView {
  id: string;
  kind: IncidentKind;
  title: string;
  description: string | null;
  status: 'open' | 'closed';
  targets: IncidentTargets;
  openedBy: string;
  openedAt: string;
  closedBy: string | null;
  closedAt: string | null;
  summary: string | null;
}

/** The targets' existence, checked when an incident opens. */
export interface TargetDirectory {
  devices(ids: string[]): Promise<TargetDevice[]>;
  devicesInLots(lots: string[]): Promise<TargetDevice[]>;
  existingLots(lots: string[]): Promise<string[]>;
  caExists(caId: string): Promise<boolean>;
}

/** Things the timeline keeps per step; the count says how many there were. */
export const TOUCHED_KEPT = 500;
const MAX_TARGETS = 10_000;

/**
 * Incidents: an operator opens one with a kind and targets; actions run inside it, each first as
 * a dry run if wanted, and each becomes a step of the incident's timeline (who, when, what it
 * touched, how it ended). A step is recorded as running before the action starts, so an action
 * cut short by a crash stays visible, and a failed step can be retried. Closed incidents take no
 * more actions.
 */
export class Incidents {
  private readonly actions = new Map<string, IncidentAction>();

  constructor(
    private readonly db: Db,
    private readonly store: IncidentStore,
    private readonly targets: TargetDirectory,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    actions: IncidentAction[],
    private readonly approvals?: ApprovalsPort,
    private readonly recovery?: RecoveryProgress,
  ) {
    for (const a of actions) this.actions.set(a.name, a);
  }

  /** The executor Approvals runs once a second person approves a proposed step. */
  executor(approval: IncidentApproval): ApprovalExecutor<StepProposal, { status: string; touchedCount: number; error: string | null }> {
    return {
      roles: INCIDENT_APPROVALS[approval].propose,
      approvers: INCIDENT_APPROVALS[approval].approve,
      describe: async (p) => {
        const step = await this.store.step(this.db, p.incidentId, p.stepId);
        return {
          summary: p.summary,
          targets: {
            incidentId: p.incidentId,
            stepId: p.stepId,
            action: p.action,
            touchedCount: step?.touchedCount ?? null,
            touched: step?.touched.slice(0, 100) ?? [],
          },
        };
      },
      execute: async (p, ctx) => {
        const { secrets, ...outcome } = await this.runApproved(p.incidentId, p.stepId, ctx.approvedBy);
        if (secrets) ctx.handOver(secrets);
        return outcome;
      },
    };
  }

  actionNames(): string[] {
    return [...this.actions.keys()];
  }

  async open(input: IncidentInput, ctx: ActorContext): Promise<IncidentView> {
    if (!INCIDENT_KINDS.includes(input.kind)) throw badRequest(`kind must be one of ${INCIDENT_KINDS.join(', ')}`);
    const targets = await this.checkTargets(input.kind, input.targets ?? {});
    const now = this.clock.now();
    const row: IncidentRow = {
      id: newId('inc'),
      kind: input.kind,
      title: input.title,
      description: input.description ?? null,
      status: 'open',
      targets,
      steps: 0,
      openedBy: ctx.actor,
      openedAt: now,
      closedBy: null,
      closedAt: null,
      summary: null,
    };
    await this.db.transaction(async (tx) => {
      await this.store.insert(tx, row);
      await this.audit.append(tx, [
        {
          ...ctx,
          action: 'incident.opened',
          targetType: 'incident',
          targetId: row.id,
          details: { kind: row.kind, title: row.title, targets },
        },
      ]);
    });
    return view(row);
  }

  async get(id: string): Promise<IncidentView & { timeline: StepView[]; recovery?: unknown }> {
    const row = await this.store.get(this.db, id);
    if (!row) throw notFound(`no incident ${id}`);
    const timeline = await this.settleProposals(id);
    const recovery =
      row.kind === 'ca-compromise' && row.targets.caId && this.recovery
        ? await this.recovery.ofCa(row.targets.caId).catch(() => undefined)
        : undefined;
    return { ...view(row), timeline: timeline.map(stepView), ...(recovery ? { recovery } : {}) };
  }

  /** Proposed steps whose proposal was rejected, expired or failed end as such; returns the timeline as it is then. */
  private async settleProposals(id: string): Promise<StepRow[]> {
    const steps = await this.store.steps(this.db, id);
    let ended = false;
    for (const step of this.approvals ? steps.filter((s) => s.status === 'proposed' && s.approvalId) : []) {
      const proposal = await this.approvals!.get(step.approvalId!);
      if (proposal.status !== 'rejected' && proposal.status !== 'expired' && proposal.status !== 'failed') continue;
      const error =
        proposal.status === 'failed'
          ? `the approved action failed: ${proposal.error?.message ?? 'unknown error'}`
          : `proposal ${proposal.id} ${proposal.status}${proposal.reason ? `: ${proposal.reason}` : ''}`;
      await this.finish(
        id,
        step,
        { status: proposal.status === 'failed' ? 'failed' : 'rejected', touched: step.touched, touchedCount: step.touchedCount, error },
        { actor: 'system:approvals' },
      ).catch(() => undefined);
      ended = true;
    }
    return ended ? this.store.steps(this.db, id) : steps;
  }

  async list(q: {
    status?: string | undefined;
    kind?: string | undefined;
    cursor?: string | undefined;
    limit: number;
  }): Promise<Page<IncidentView>> {
    let before: { openedAt: Date; id: string } | undefined;
    if (q.cursor) {
      const { at, id } = readTimeIdCursor(q.cursor);
      before = { openedAt: at, id };
    }
    const rows = await this.store.list(this.db, { status: q.status, kind: q.kind, before, limit: q.limit });
    const last = rows.length === q.limit ? rows[rows.length - 1] : undefined;
    return { items: rows.map(view), nextCursor: last ? timeIdCursor(last.openedAt, last.id) : null };
  }

  /**
   * Closes an incident once no step is running or awaiting approval. A failed step that no later
   * step retried is unresolved: the close is refused unless `force`, and the audit entry lists it.
   */
  async close(id: string, summary: string, ctx: ActorContext, force = false): Promise<IncidentView> {
    await this.settleProposals(id);
    return this.db.transaction(async (tx) => {
      const row = await this.store.getForUpdate(tx, id);
      if (!row) throw notFound(`no incident ${id}`);
      if (row.status === 'closed') throw conflict(`incident ${id} is closed already`);
      const steps = await this.store.steps(tx, id);
      const pending = steps.filter((s) => s.status === 'running' || s.status === 'proposed');
      if (pending.length)
        throw conflict(`incident ${id} has steps still ${pending.map((s) => `#${s.seq} ${s.status}`).join(', ')}: wait for them`);
      const retried = new Set(steps.map((s) => s.retryOf).filter((r): r is string => r !== null));
      const unresolved = steps.filter((s) => s.status === 'failed' && !retried.has(s.id)).map((s) => s.seq);
      if (unresolved.length && !force)
        throw conflict(
          `incident ${id} has failed steps not retried: ${unresolved.map((n) => `#${n}`).join(', ')}; retry them, or close with force`,
        );
      const at = this.clock.now();
      await this.store.close(tx, id, ctx.actor, at, summary);
      await this.audit.append(tx, [
        {
          ...ctx,
          action: 'incident.closed',
          targetType: 'incident',
          targetId: id,
          details: { summary, steps: steps.length, ...(unresolved.length ? { unresolvedSteps: unresolved } : {}) },
        },
      ]);
      return view({ ...row, status: 'closed', closedBy: ctx.actor, closedAt: at, summary });
    });
  }

  /**
   * Runs an action (or its dry run) in an open incident and records it as the next step. A
   * failure inside the action is a failed step, not an error: it is on the timeline, with what
   * had been done, and can be retried. Bad parameters and a closed incident are errors, and leave
   * no step.
   */
  async act(
    id: string,
    name: string,
    params: ActionParams,
    dryRun: boolean,
    ctx: IncidentActor,
    retryOf: string | null = null,
  ): Promise<StepView & { secrets?: Record<string, unknown> }> {
    const action = this.actions.get(name);
    if (!action) throw badRequest(`unknown action ${name}; one of ${this.actionNames().join(', ')}`);
    const stray = Object.keys(params).filter((k) => !action.params.includes(k as keyof ActionParams));
    if (stray.length)
      throw badRequest(
        `action ${name} takes no ${stray.join(', ')}${action.params.length ? `; it takes ${action.params.join(', ')}` : ''}`,
      );
    const incident = await this.store.get(this.db, id);
    if (!incident) throw notFound(`no incident ${id}`);
    if (action.kinds && !action.kinds.includes(incident.kind))
      throw conflict(`action ${name} belongs in a ${action.kinds.join(' or ')} incident, not a ${incident.kind} one`);
    if (incident.status === 'closed') throw conflict(`incident ${id} is closed: open a new one`);
    const scope = await this.scope(incident, params.devices);

    if (dryRun) {
      const plan = await action.plan(scope, params, ctx);
      const step = await this.record(id, name, params, true, ctx, retryOf, (s) => ({
        ...s,
        status: 'succeeded',
        finishedAt: this.clock.now(),
        ...kept(plan),
        result: plan.result ?? null,
      }));
      return stepView(step);
    }
    // Parameters are checked (and the two-person rule judged) before anything is recorded.
    const plan = await action.plan(scope, params, ctx);
    const approval = action.approval?.(plan, ctx) ?? null;
    if (approval) return stepView(await this.propose(id, name, params, plan, approval, ctx, retryOf));
    const started = await this.record(id, name, params, false, ctx, retryOf, (s) => s);
    const outcome = await this.attempt(action, scope, params, ctx);
    const finished = await this.finish(id, started, outcome, ctx);
    return { ...stepView(finished), ...(outcome.secrets ? { secrets: outcome.secrets } : {}) };
  }

  /**
   * A step that needs a second person: proposed first (a role that may not propose is refused
   * before anything is recorded), then recorded as `proposed` with its plan; it runs when approved.
   */
  private async propose(
    id: string,
    name: string,
    params: ActionParams,
    plan: ActionPlan,
    approval: IncidentApproval,
    ctx: IncidentActor,
    retryOf: string | null,
  ): Promise<StepRow> {
    if (!this.approvals) throw new DomainError('Internal', 'approvals are not configured');
    const stepId = newId('step');
    const touchedCount = plan.touchedCount ?? plan.touched.length;
    const summary = `incident ${id}: ${name} touching ${touchedCount} (${[...new Set(plan.touched.map((t) => t.type))].join(', ') || 'nothing yet'})`;
    const proposal = await this.approvals.propose(approval, { incidentId: id, stepId, action: name, summary }, ctx, summary);
    return this.record(id, name, params, false, ctx, retryOf, (s) => ({
      ...s,
      id: stepId,
      status: 'proposed',
      ...kept(plan),
      result: plan.result ?? null,
      approvalId: proposal.id,
    }));
  }

  /**
   * Runs a proposed step once its proposal is approved: the approver is the actor of what it
   * changes, and receives what it hands out (secrets), which are never stored.
   */
  async runApproved(
    id: string,
    stepId: string,
    approvedBy: IncidentActor,
  ): Promise<{ status: string; touchedCount: number; error: string | null; secrets?: Record<string, unknown> }> {
    const step = await this.store.step(this.db, id, stepId);
    if (!step) throw notFound(`incident ${id} has no step ${stepId}`);
    if (step.status !== 'proposed') throw conflict(`step #${step.seq} is ${step.status}, not awaiting approval`);
    const incident = (await this.store.get(this.db, id))!;
    const action = this.actions.get(step.action)!;
    const outcome: ActionOutcome =
      incident.status === 'closed'
        ? { status: 'failed', touched: [], error: `incident ${id} was closed before the approval` }
        : await this.attempt(
            action,
            await this.scope(incident, (step.params as ActionParams).devices),
            step.params as ActionParams,
            approvedBy,
          );
    const finished = await this.finish(id, step, outcome, approvedBy);
    return {
      status: finished.status,
      touchedCount: finished.touchedCount,
      error: finished.error,
      ...(outcome.secrets ? { secrets: outcome.secrets } : {}),
    };
  }

  /** The action's run; a failure inside it is an outcome, not an error. */
  private async attempt(action: IncidentAction, scope: IncidentScope, params: ActionParams, ctx: IncidentActor): Promise<ActionOutcome> {
    try {
      return await action.run(scope, params, ctx);
    } catch (e) {
      const message = e instanceof DomainError ? e.message : `internal error: ${e instanceof Error ? e.message : String(e)}`;
      return { status: 'failed', touched: [], error: message };
    }
  }

  /** Ends a running or proposed step with its outcome, and its audit entry. */
  private async finish(
    id: string,
    step: StepRow,
    outcome: Omit<ActionOutcome, 'status'> & { status: StepStatus },
    ctx: ActorContext,
  ): Promise<StepRow> {
    return this.db.transaction(async (tx) => {
      const done = await this.store.finishStep(tx, step.id, {
        status: outcome.status,
        finishedAt: this.clock.now(),
        ...kept(outcome),
        result: outcome.result ?? step.result,
        error: outcome.error ?? null,
      });
      await this.audit.append(tx, [
        {
          ...ctx,
          action: 'incident.action-finished',
          targetType: 'incident',
          targetId: id,
          details: {
            step: done.seq,
            stepId: done.id,
            action: done.action,
            status: done.status,
            touchedCount: done.touchedCount,
            error: done.error,
            ...(done.approvalId ? { approvalId: done.approvalId } : {}),
          },
        },
      ]);
      return done;
    });
  }

  /** Runs a failed (or cut-short) step's action again, with the same parameters, as a new step. */
  async retry(id: string, stepId: string, ctx: IncidentActor): Promise<StepView & { secrets?: Record<string, unknown> }> {
    const step = await this.store.step(this.db, id, stepId);
    if (!step) throw notFound(`incident ${id} has no step ${stepId}`);
    if (step.dryRun) throw conflict('a dry run is not retried: run the action');
    if (step.status !== 'failed' && step.status !== 'unconfirmed' && step.status !== 'running')
      throw conflict(`step #${step.seq} ${step.status}: only a failed, unconfirmed or cut-short step is retried`);
    return this.act(id, step.action, step.params as ActionParams, false, ctx, step.id);
  }

  /** Inserts the next step of an open incident (locked meanwhile), with its audit entry. */
  private async record(
    id: string,
    action: string,
    params: ActionParams,
    dryRun: boolean,
    ctx: ActorContext,
    retryOf: string | null,
    finish: (s: StepRow) => StepRow,
  ): Promise<StepRow> {
    return this.db.transaction(async (tx) => {
      const incident = await this.store.getForUpdate(tx, id);
      if (!incident) throw notFound(`no incident ${id}`);
      if (incident.status === 'closed') throw conflict(`incident ${id} is closed: open a new one`);
      const seq = await this.store.nextSeq(tx, id);
      const step = finish({
        id: newId('step'),
        incidentId: id,
        seq,
        action,
        params: params as Record<string, unknown>,
        dryRun,
        status: 'running',
        actor: ctx.actor,
        startedAt: this.clock.now(),
        finishedAt: null,
        touchedCount: 0,
        touched: [],
        result: null,
        error: null,
        retryOf,
        approvalId: null,
      });
      await this.store.insertStep(tx, step);
      await this.audit.append(tx, [
        {
          ...ctx,
          action: dryRun ? 'incident.dry-run' : step.status === 'proposed' ? 'incident.action-proposed' : 'incident.action-started',
          targetType: 'incident',
          targetId: id,
          details: {
            step: seq,
            stepId: step.id,
            action,
            params,
            ...(retryOf ? { retryOf } : {}),
            ...(step.approvalId ? { approvalId: step.approvalId } : {}),
            ...(step.status !== 'running' ? { touchedCount: step.touchedCount } : {}),
          },
        },
      ]);
      return step;
    });
  }

  private async scope(incident: IncidentRow, narrowTo: string[] | undefined): Promise<IncidentScope> {
    const t = incident.targets;
    const named = await this.targets.devices([...new Set([...t.devices, ...t.brokers])]);
    const inLots = await this.targets.devicesInLots(t.lots);
    const all = new Map([...inLots, ...named].map((d) => [d.id, d]));
    if (narrowTo) {
      const outside = narrowTo.filter((d) => !all.has(d));
      if (outside.length)
        throw badRequest(`not targets of incident ${incident.id}: ${outside.slice(0, 20).join(', ')}`, { outside: outside.slice(0, 100) });
      return { incident, devices: [...new Set(narrowTo)].sort().map((d) => all.get(d)!), lots: [], caId: t.caId };
    }
    return { incident, devices: [...all.values()].sort((a, b) => (a.id < b.id ? -1 : 1)), lots: t.lots, caId: t.caId };
  }

  private async checkTargets(kind: IncidentKind, t: Partial<IncidentTargets>): Promise<IncidentTargets> {
    const targets: IncidentTargets = {
      devices: [...new Set(t.devices ?? [])].sort(),
      lots: [...new Set(t.lots ?? [])].sort(),
      brokers: [...new Set(t.brokers ?? [])].sort(),
      caId: t.caId ?? null,
    };
    if (targets.devices.length + targets.brokers.length > MAX_TARGETS)
      throw badRequest(`at most ${MAX_TARGETS} devices and brokers by name: name their lots instead`);
    const found = new Map((await this.targets.devices([...targets.devices, ...targets.brokers])).map((d) => [d.id, d]));
    const unknown = [...targets.devices, ...targets.brokers].filter((id) => !found.has(id));
    if (unknown.length)
      throw new DomainError('NotFound', `unknown targets: ${unknown.slice(0, 20).join(', ')}`, { unknown: unknown.slice(0, 100) });
    const notBrokers = targets.brokers.filter((id) => found.get(id)!.kind !== 'broker');
    if (notBrokers.length) throw badRequest(`not brokers: ${notBrokers.slice(0, 20).join(', ')}`);
    const lots = new Set(await this.targets.existingLots(targets.lots));
    const missingLots = targets.lots.filter((l) => !lots.has(l));
    if (missingLots.length) throw new DomainError('NotFound', `no devices in lot ${missingLots.join(', ')}`, { unknown: missingLots });
    if (targets.caId && !(await this.targets.caExists(targets.caId))) throw new DomainError('NotFound', `no CA ${targets.caId}`);
    if (kind === 'ca-compromise' && !targets.caId) throw badRequest('a ca-compromise incident names the compromised CA (targets.caId)');
    if (kind === 'broker-compromise' && targets.brokers.length === 0)
      throw badRequest('a broker-compromise incident names its brokers (targets.brokers)');
    const any = targets.devices.length + targets.lots.length + targets.brokers.length + (targets.caId ? 1 : 0);
    if (any === 0 && kind !== 'credential-leak') throw badRequest('an incident needs targets: devices, lots, brokers or a CA');
    return targets;
  }
}

function kept(p: ActionPlan): { touched: Touched[]; touchedCount: number } {
  return { touched: p.touched.slice(0, TOUCHED_KEPT), touchedCount: p.touchedCount ?? p.touched.length };
}

function view(r: IncidentRow): IncidentView {
  return {
    id: r.id,
    kind: r.kind,
    title: r.title,
    description: r.description,
    status: r.status,
    targets: r.targets,
    openedBy: r.openedBy,
    openedAt: r.openedAt.toISOString(),
    closedBy: r.closedBy,
    closedAt: r.closedAt?.toISOString() ?? null,
    summary: r.summary,
  };
}

function stepView(s: StepRow): StepView {
  return {
    id: s.id,
    seq: s.seq,
    action: s.action,
    params: s.params,
    dryRun: s.dryRun,
    status: s.status,
    actor: s.actor,
    startedAt: s.startedAt.toISOString(),
    finishedAt: s.finishedAt?.toISOString() ?? null,
    touchedCount: s.touchedCount,
    touched: s.touched,
    result: s.result,
    error: s.error,
    retryOf: s.retryOf,
    approvalId: s.approvalId,
  };
}
