import type { AuditLog } from '../audit/audit-log.js';
import type { ActorContext } from '../shared/actor.js';
import type { CaHierarchy, CaView } from '../ca/hierarchy.js';
import type { IssueDraft, IssuerRouting } from '../enroll/methods.js';
import type { Clock } from '../shared/clock.js';
import { badRequest, conflict, notFound } from '../shared/errors.js';
import { newId, serialFromBytes, type Serial } from '../shared/ids.js';
import type { Db, Executor } from '../store/db.js';
import type { RolloverCounts, RolloverRow, RolloverState, RolloverStore } from '../store/rollover-store.js';
import type { NoticeSink } from '../store/rotation-policy-store.js';

export const MAX_WAVE_SIZE = 100_000;
export const MAX_WAVE_INTERVAL_SECONDS = 7 * 86_400;
const MAX_SUCCESSOR_HOPS = 16;

export interface RolloverInput {
  waveSize: number;
  waveIntervalSeconds: number;
  /** The successor's lifetime; the old CA's when absent (capped at the parent's notAfter). */
  validityDays?: number | undefined;
  /** The successor's name and common name; the old one's with a dated suffix when absent. */
  name?: string | undefined;
}

/** A rollover and how far it got, as the API shows it. */
export interface RolloverView extends RolloverCounts {
  id: string;
  fromCaId: string;
  toCaId: string;
  state: RolloverState;
  waveSize: number;
  waveIntervalSeconds: number;
  waves: number;
  /** Certificates taken into a wave so far. */
  inWaves: number;
  lastWaveAt: string | null;
  /** When the next wave may run (running only). */
  nextWaveAt: string | null;
  doneAt: string | null;
  /** The old CA's status: active until its last certificate expired, then retired. */
  fromCaStatus: string;
  retiredAt: string | null;
  createdAt: string;
  createdBy: string;
  updatedAt: string;
  updatedBy: string;
}

export interface TickResult {
  /** Waves run by this tick. */
  waves: number;
  /** The serials those waves made due, in delivery batches (as plan-renewals hands them back). */
  batches: Serial[][];
  done: string[];
  retired: string[];
}

const SYSTEM: ActorContext = { actor: 'system:rollover' };

function chunks<T>(xs: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size));
  return out;
}

const isUniqueViolation = (e: unknown) => typeof e === 'object' && e !== null && (e as { code?: unknown }).code === '23505';

/**
 * Issuing-CA rollover. Starting one creates a successor under the same parent (the default issuer
 * if the old CA was), and from then on the old CA takes no new issuance: renewals of its
 * certificates are issued by the successor, and a request naming it is refused. A scheduled tick
 * runs waves — up to waveSize of the old CA's current device certificates at most once per
 * interval, each one's renewal notice made due now and delivered by the ordinary notice jobs —
 * until no current certificate is left on the old CA (done). The old CA stays active, signing CRLs
 * and OCSP, until its last certificate expired; then the tick retires it.
 */
export class CaRollovers implements IssuerRouting {
  constructor(
    private readonly db: Db,
    private readonly store: RolloverStore,
    private readonly hierarchy: CaHierarchy,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly opts: { sinks: NoticeSink[]; batchSize: number },
  ) {}

  async start(caId: string, input: RolloverInput, ctx: ActorContext): Promise<{ rollover: RolloverView; successor: CaView }> {
    const waveSize = input.waveSize;
    const interval = input.waveIntervalSeconds;
    if (!Number.isInteger(waveSize) || waveSize < 1 || waveSize > MAX_WAVE_SIZE)
      throw badRequest(`waveSize must be an integer from 1 to ${MAX_WAVE_SIZE}`);
    if (!Number.isInteger(interval) || interval < 1 || interval > MAX_WAVE_INTERVAL_SECONDS) {
      throw badRequest(`waveIntervalSeconds must be an integer from 1 to ${MAX_WAVE_INTERVAL_SECONDS}`);
    }
    if (
      input.validityDays !== undefined &&
      (!Number.isInteger(input.validityDays) || input.validityDays < 1 || input.validityDays > 10950)
    ) {
      throw badRequest('validityDays must be an integer from 1 to 10950');
    }
    if (input.name !== undefined && (input.name.length < 1 || input.name.length > 64))
      throw badRequest('name must have 1 to 64 characters');
    const now = this.clock.now();
    const id = newId('rollover');
    let result: { rollover: RolloverRow; successor: CaView };
    try {
      result = await this.db.transaction(async (tx) => {
        const existing = await this.store.successorOf(tx, caId);
        if (existing) throw conflict(`CA ${caId} is already rolled over (to ${existing})`);
        const { successor, madeDefault } = await this.hierarchy.createSuccessorIn(
          tx,
          caId,
          { suffix: ` (rollover ${now.toISOString().slice(0, 10)})`, name: input.name, validityDays: input.validityDays },
          ctx,
        );
        const row: RolloverRow = {
          id,
          fromCa: caId,
          toCa: successor.id,
          state: 'running',
          waveSize,
          waveIntervalSeconds: interval,
          waves: 0,
          inWaves: 0,
          lastWaveAt: null,
          doneAt: null,
          retiredAt: null,
          createdBy: ctx.actor,
          createdAt: now,
          updatedAt: now,
          updatedBy: ctx.actor,
        };
        await this.store.insert(tx, row);
        await this.audit.append(tx, [
          {
            ...ctx,
            action: 'ca-rollover.started',
            targetType: 'ca-rollover',
            targetId: id,
            details: { fromCaId: caId, toCaId: successor.id, waveSize, waveIntervalSeconds: interval, defaultIssuerMoved: madeDefault },
          },
        ]);
        return { rollover: row, successor };
      });
    } catch (e) {
      if (isUniqueViolation(e)) throw conflict(`CA ${caId} is already being rolled over`);
      throw e;
    }
    this.hierarchy.forgetDefaultIssuer();
    return { rollover: await this.view(this.db, result.rollover), successor: result.successor };
  }

  async get(id: string): Promise<RolloverView> {
    const r = await this.store.get(this.db, id);
    if (!r) throw notFound(`rollover ${id} does not exist`);
    return this.view(this.db, r);
  }

  /** The CA's rollover (the live one, else its newest cancelled one). */
  async ofCa(caId: string): Promise<RolloverView> {
    const r = await this.store.latestFrom(this.db, caId);
    if (!r) {
      await this.hierarchy.get(caId); // 404 for an unknown CA
      throw notFound(`CA ${caId} has no rollover`);
    }
    return this.view(this.db, r);
  }

  pause(id: string, ctx: ActorContext): Promise<RolloverView> {
    return this.transition(id, ['running'], 'paused', 'ca-rollover.paused', ctx);
  }

  resume(id: string, ctx: ActorContext): Promise<RolloverView> {
    return this.transition(id, ['paused'], 'running', 'ca-rollover.resumed', ctx);
  }

  /**
   * Stops the waves. The successor stays (and stays the default issuer if it became it); the old
   * CA takes issuance again when asked for by name, and is not retired by the rollover.
   */
  cancel(id: string, ctx: ActorContext): Promise<RolloverView> {
    return this.transition(id, ['running', 'paused'], 'cancelled', 'ca-rollover.cancelled', ctx);
  }

  /**
   * The scheduled work: a wave for each running rollover whose interval passed (one transaction
   * each, holding the rollover's row: a concurrent tick skips it), done once no current
   * certificate is left on the old CA, and the old CA of a done rollover retired once its last
   * certificate expired.
   */
  async tick(): Promise<TickResult> {
    const out: TickResult = { waves: 0, batches: [], done: [], retired: [] };
    for (const id of await this.store.ids(this.db, ['running'])) {
      const r = await this.db.transaction(async (tx) => {
        const row = await this.store.lockSkip(tx, id);
        if (!row || row.state !== 'running') return undefined;
        const now = this.clock.now();
        let serials: Buffer[] = [];
        if (!row.lastWaveAt || row.lastWaveAt.getTime() + row.waveIntervalSeconds * 1000 <= now.getTime()) {
          const wave = row.waves + 1;
          serials = await this.store.wave(tx, { id, fromCa: row.fromCa, wave, limit: row.waveSize }, now, { notify: this.opts.sinks });
          if (serials.length > 0) {
            await this.store.recordWave(tx, id, serials.length, now);
            await this.audit.append(tx, [
              {
                ...SYSTEM,
                action: 'ca-rollover.wave',
                targetType: 'ca-rollover',
                targetId: id,
                details: {
                  wave,
                  at: now.toISOString(),
                  count: serials.length,
                  serials: serials.map(serialFromBytes),
                  fromCaId: row.fromCa,
                  toCaId: row.toCa,
                },
              },
            ]);
          }
        }
        let done = false;
        if ((await this.store.remaining(tx, row.fromCa, now)) === 0) {
          done = await this.store.setState(tx, id, ['running'], 'done', now, SYSTEM.actor);
          if (done) {
            await this.audit.append(tx, [
              {
                ...SYSTEM,
                action: 'ca-rollover.done',
                targetType: 'ca-rollover',
                targetId: id,
                details: { fromCaId: row.fromCa, toCaId: row.toCa, waves: row.waves + (serials.length > 0 ? 1 : 0) },
              },
            ]);
          }
        }
        return { serials, done };
      });
      if (!r) continue;
      if (r.serials.length > 0) {
        out.waves += 1;
        out.batches.push(...chunks(r.serials.map(serialFromBytes), this.opts.batchSize));
      }
      if (r.done) out.done.push(id);
    }
    out.retired = await this.retireExpired();
    return out;
  }

  /** Retires the old CA of each done rollover once none of its certificates is left unexpired. */
  async retireExpired(): Promise<string[]> {
    const retired: string[] = [];
    for (const candidate of await this.store.awaitingRetirement(this.db)) {
      const now = this.clock.now();
      if ((await this.store.lastExpiry(this.db, candidate.fromCa, now)) !== null) continue;
      const did = await this.db.transaction(async (tx) => {
        const row = await this.store.lockSkip(tx, candidate.id);
        if (!row || row.state !== 'done' || row.retiredAt) return false;
        if ((await this.store.lastExpiry(tx, row.fromCa, now)) !== null) return false;
        await this.hierarchy.retireIn(tx, row.fromCa, SYSTEM, {
          rolloverId: row.id,
          successorId: row.toCa,
          reason: 'its last certificate expired',
        });
        await this.store.markRetired(tx, row.id, now);
        return true;
      });
      if (did) retired.push(candidate.fromCa);
    }
    return retired;
  }

  /**
   * Enrollment's issuer routing: a renewal of a certificate whose CA was rolled over is issued by
   * its successor (followed through later rollovers); a request naming such a CA is refused.
   */
  async issuerFor(draft: Pick<IssueDraft, 'caId' | 'renews'>): Promise<string | undefined> {
    if (draft.caId) {
      const successor = await this.store.successorOf(this.db, draft.caId);
      if (successor) throw conflict(`CA ${draft.caId} is rolled over to ${successor} and takes no new issuance: issue from ${successor}`);
      return draft.caId;
    }
    if (!draft.renews) return undefined;
    const from = await this.store.caOfCertificate(this.db, draft.renews);
    if (!from) return undefined;
    let ca = from;
    for (let hop = 0; hop < MAX_SUCCESSOR_HOPS; hop++) {
      const next = await this.store.successorOf(this.db, ca);
      if (!next) break;
      ca = next;
    }
    return ca === from ? undefined : ca;
  }

  private async transition(id: string, from: RolloverState[], to: RolloverState, action: string, ctx: ActorContext): Promise<RolloverView> {
    return this.db.transaction(async (tx) => {
      const row = await this.store.lock(tx, id);
      if (!row) throw notFound(`rollover ${id} does not exist`);
      if (!from.includes(row.state)) throw conflict(`rollover ${id} is ${row.state}: it cannot be ${to === 'running' ? 'resumed' : to}`);
      const now = this.clock.now();
      await this.store.setState(tx, id, from, to, now, ctx.actor);
      await this.audit.append(tx, [
        {
          ...ctx,
          action,
          targetType: 'ca-rollover',
          targetId: id,
          details: { from: row.state, to, fromCaId: row.fromCa, toCaId: row.toCa },
        },
      ]);
      return this.view(tx, (await this.store.get(tx, id))!);
    });
  }

  private async view(ex: Executor, r: RolloverRow): Promise<RolloverView> {
    const now = this.clock.now();
    const counts = await this.store.counts(ex, r, now);
    const fromStatus = await this.store.caStatus(ex, r.fromCa);
    const next = r.state !== 'running' ? null : r.lastWaveAt ? new Date(r.lastWaveAt.getTime() + r.waveIntervalSeconds * 1000) : now;
    return {
      id: r.id,
      fromCaId: r.fromCa,
      toCaId: r.toCa,
      state: r.state,
      waveSize: r.waveSize,
      waveIntervalSeconds: r.waveIntervalSeconds,
      waves: r.waves,
      inWaves: r.inWaves,
      ...counts,
      lastWaveAt: r.lastWaveAt?.toISOString() ?? null,
      nextWaveAt: next?.toISOString() ?? null,
      doneAt: r.doneAt?.toISOString() ?? null,
      fromCaStatus: fromStatus ?? 'unknown',
      retiredAt: r.retiredAt?.toISOString() ?? null,
      createdAt: r.createdAt.toISOString(),
      createdBy: r.createdBy,
      updatedAt: r.updatedAt.toISOString(),
      updatedBy: r.updatedBy,
    };
  }
}
