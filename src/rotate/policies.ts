import type { AuditLog } from '../audit/audit-log.js';
import { PROFILES, isProfileName } from '../ca/profiles.js';
import type { Clock } from '../shared/clock.js';
import { badRequest, notFound } from '../shared/errors.js';
import type { Db, Executor } from '../store/db.js';
import type {
  NoticeSink,
  PolicyScope,
  RotationPolicyFields,
  RotationPolicyRow,
  RotationPolicyStore,
} from '../store/rotation-policy-store.js';

export type { NoticeSink, PolicyScope } from '../store/rotation-policy-store.js';

/** The built-in rule: renew once two thirds of the lifetime have passed. */
export const DEFAULT_RENEW_AT_FRACTION = 2 / 3;
export const ROTATED_PROFILES = ['device', 'broker'] as const;
const LOT_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

export interface RotationDefaults {
  sessionKeyPeriodHours: number;
  sessionKeyOverlapHours: number;
  /** The sinks configured (a broker connection, a webhook URL): the default, and all a policy may name. */
  sinks: NoticeSink[];
}

export type RotationPolicyInput = Partial<RotationPolicyFields>;

export interface RotationPolicy extends RotationPolicyFields {
  scope: PolicyScope;
  name: string;
  createdAt: string;
  updatedAt: string;
  updatedBy: string;
}

/** What applies to one certificate, and which row (or the default) each part came from. */
export interface EffectivePolicy {
  renewAtFraction: number | null;
  renewDaysBefore: number | null;
  graceDays: number;
  sessionKeyPeriodHours: number;
  sessionKeyOverlapHours: number;
  notify: NoticeSink[];
  from: Record<'renewal' | 'graceDays' | 'sessionKeys' | 'notify', string>;
}

const view = (r: RotationPolicyRow): RotationPolicy => ({
  ...r,
  createdAt: r.createdAt.toISOString(),
  updatedAt: r.updatedAt.toISOString(),
});

/** Rotation policies per profile, overridable per lot (CRUD, validation, and the effective policy). */
export class RotationPolicies {
  constructor(
    private readonly db: Db,
    private readonly store: RotationPolicyStore,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly defaults: RotationDefaults,
  ) {}

  get sinks(): NoticeSink[] {
    return this.defaults.sinks;
  }

  async list(): Promise<RotationPolicy[]> {
    return (await this.store.list(this.db)).map(view);
  }

  async get(scope: PolicyScope, name: string): Promise<RotationPolicy> {
    const r = await this.store.get(this.db, scope, name);
    if (!r) throw notFound(`no rotation policy for ${scope} ${name}`);
    return view(r);
  }

  async put(
    scope: PolicyScope,
    name: string,
    input: RotationPolicyInput,
    ctx: { actor: string; requestId?: string | undefined },
  ): Promise<{ policy: RotationPolicy; created: boolean }> {
    this.checkTarget(scope, name);
    const fields = this.check(input);
    return this.db.transaction(async (tx) => {
      const { row, created } = await this.store.put(tx, scope, name, fields, this.clock.now(), ctx.actor);
      // The merged result must still make sense (a lot's overlap against its profile's period).
      if (scope === 'lot') this.checkSessionKeys(await this.resolve(tx, null, name));
      await this.audit.append(tx, [
        {
          actor: ctx.actor,
          requestId: ctx.requestId,
          action: created ? 'rotation-policy.created' : 'rotation-policy.updated',
          targetType: 'rotation-policy',
          targetId: `${scope}:${name}`,
          details: { ...fields },
        },
      ]);
      return { policy: view(row), created };
    });
  }

  async delete(scope: PolicyScope, name: string, ctx: { actor: string; requestId?: string | undefined }): Promise<void> {
    await this.db.transaction(async (tx) => {
      if (!(await this.store.delete(tx, scope, name))) throw notFound(`no rotation policy for ${scope} ${name}`);
      await this.audit.append(tx, [
        {
          actor: ctx.actor,
          requestId: ctx.requestId,
          action: 'rotation-policy.deleted',
          targetType: 'rotation-policy',
          targetId: `${scope}:${name}`,
        },
      ]);
    });
  }

  /** The policy for a certificate of `profile` (null: any profile's defaults) held by a device of `lot`. */
  effective(profile: string | null, lot: string | null, ex: Executor = this.db): Promise<EffectivePolicy> {
    return this.resolve(ex, profile, lot);
  }

  /** The session-key period and overlap of a device (SessionKeyPolicy for the session keys): its lot's policy, its profile's, or the defaults. */
  async forDevice(ex: Executor, deviceId: string): Promise<{ periodMs: number; overlapMs: number }> {
    const scope = await this.store.deviceScope(ex, deviceId);
    const p = await this.resolve(ex, scope?.profile ?? 'device', scope?.lot ?? null);
    return { periodMs: p.sessionKeyPeriodHours * 3_600_000, overlapMs: p.sessionKeyOverlapHours * 3_600_000 };
  }

  private async resolve(ex: Executor, profile: string | null, lot: string | null): Promise<EffectivePolicy> {
    const rows =
      profile === null
        ? lot === null
          ? []
          : [await this.store.get(ex, 'lot', lot)].filter((r) => r !== undefined)
        : await this.store.applicable(ex, profile, lot);
    const src = (r: RotationPolicyRow) => `${r.scope}:${r.name}`;
    const rule = rows.find((r) => r.renewAtFraction !== null || r.renewDaysBefore !== null);
    const grace = rows.find((r) => r.graceDays !== null);
    const period = rows.find((r) => r.sessionKeyPeriodHours !== null);
    const overlap = rows.find((r) => r.sessionKeyOverlapHours !== null);
    const notify = rows.find((r) => r.notify !== null);
    const profileGrace = profile !== null && isProfileName(profile) ? PROFILES[profile].renewalGraceDays : PROFILES.device.renewalGraceDays;
    return {
      renewAtFraction: rule ? rule.renewAtFraction : DEFAULT_RENEW_AT_FRACTION,
      renewDaysBefore: rule ? rule.renewDaysBefore : null,
      graceDays: grace?.graceDays ?? profileGrace,
      sessionKeyPeriodHours: period?.sessionKeyPeriodHours ?? this.defaults.sessionKeyPeriodHours,
      sessionKeyOverlapHours: overlap?.sessionKeyOverlapHours ?? this.defaults.sessionKeyOverlapHours,
      notify: notify?.notify ?? this.defaults.sinks,
      from: {
        renewal: rule ? src(rule) : 'default',
        graceDays: grace ? src(grace) : 'profile',
        sessionKeys: period || overlap ? src((period ?? overlap)!) : 'default',
        notify: notify ? src(notify) : 'default',
      },
    };
  }

  private checkTarget(scope: PolicyScope, name: string): void {
    if (scope === 'profile' && !(ROTATED_PROFILES as readonly string[]).includes(name)) {
      throw badRequest(`profile must be one of ${ROTATED_PROFILES.join(', ')} (OCSP responder certificates renew themselves)`);
    }
    if (scope === 'lot' && !LOT_RE.test(name)) throw badRequest('a lot name is 1-128 letters, digits and . _ : -');
  }

  private check(i: RotationPolicyInput): RotationPolicyFields {
    const f: RotationPolicyFields = {
      renewAtFraction: i.renewAtFraction ?? null,
      renewDaysBefore: i.renewDaysBefore ?? null,
      graceDays: i.graceDays ?? null,
      sessionKeyPeriodHours: i.sessionKeyPeriodHours ?? null,
      sessionKeyOverlapHours: i.sessionKeyOverlapHours ?? null,
      notify: i.notify ?? null,
    };
    if (f.renewAtFraction !== null && f.renewDaysBefore !== null) throw badRequest('give renewAtFraction or renewDaysBefore, not both');
    if (f.renewAtFraction !== null && !(f.renewAtFraction > 0 && f.renewAtFraction < 1))
      throw badRequest('renewAtFraction must be between 0 and 1 (exclusive)');
    if (f.renewDaysBefore !== null && f.renewDaysBefore > PROFILES.device.maxValidityDays)
      throw badRequest(`renewDaysBefore may be at most ${PROFILES.device.maxValidityDays}, the longest lifetime`);
    if (f.notify !== null) {
      const unknown = f.notify.filter((s) => !this.defaults.sinks.includes(s));
      if (unknown.length > 0)
        throw badRequest(
          `notify names ${unknown.join(', ')}, which is not configured (configured: ${this.defaults.sinks.join(', ') || 'none'})`,
        );
      if (new Set(f.notify).size !== f.notify.length) throw badRequest('notify lists a sink twice');
    }
    this.checkSessionKeys({
      sessionKeyPeriodHours: f.sessionKeyPeriodHours ?? this.defaults.sessionKeyPeriodHours,
      sessionKeyOverlapHours: f.sessionKeyOverlapHours ?? this.defaults.sessionKeyOverlapHours,
    });
    return f;
  }

  private checkSessionKeys(p: Pick<EffectivePolicy, 'sessionKeyPeriodHours' | 'sessionKeyOverlapHours'>): void {
    if (p.sessionKeyOverlapHours >= p.sessionKeyPeriodHours) {
      throw badRequest(
        `the session-key overlap (${p.sessionKeyOverlapHours} h) must be shorter than the period (${p.sessionKeyPeriodHours} h)`,
      );
    }
  }
}
