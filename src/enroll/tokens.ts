import type { Db } from '../store/db.js';
import type { DeviceFacts, TokenRow, TokenStore } from '../store/token-store.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { Clock } from '../shared/clock.js';
import type { ActorContext } from '../shared/actor.js';
import { DomainError, badRequest, notFound } from '../shared/errors.js';
import { readTimeIdCursor, timeIdCursor, type Page } from '../shared/page.js';
import { GroupBatcher } from '../shared/group-batcher.js';
import { bearerId, hashMatches, newBearer, secretHash } from '../shared/secrets.js';
import type { DeviceDirectory } from './methods.js';
import type { AbandonedAttempts } from './abandoned-attempts.js';
import type { ReservedIdentities } from './reserved-identities.js';

export type TokenProfile = 'device' | 'broker';

export interface TokenInput {
  deviceId?: string | undefined;
  lot?: string | undefined;
  profile?: TokenProfile | undefined;
  name?: string | undefined;
  expiresInSeconds?: number | undefined;
  maxUses?: number | undefined;
  /** Broker tokens: the names the broker may ask for. */
  dnsNames?: string[] | undefined;
  ipAddresses?: string[] | undefined;
}

export interface TokenView {
  id: string;
  name: string | null;
  deviceId: string | null;
  lot: string | null;
  profile: string;
  dnsNames: string[];
  ipAddresses: string[];
  maxUses: number;
  uses: number;
  expiresAt: string;
  createdAt: string;
  createdBy: string;
  revokedAt: string | null;
  lastUsedAt: string | null;
  status: 'active' | 'expired' | 'used-up' | 'revoked';
}

/** Why a presented token does not authorize anything (said in the security event; the client hears only 401). */
export type TokenRefusal = 'malformed' | 'unknown' | 'revoked' | 'expired' | 'used-up';

const PREFIX = 'mqet';
const ID_PREFIX = 'et';
const DAY_S = 86_400;
const MAX_EXPIRY_S = 90 * DAY_S;
const TOKEN_CACHE_MS = 2_000;

/** Enrollment tokens: one-device or whole-lot credentials for factory lines; the secret is shown once and stored hashed. */
export class EnrollmentTokens {
  private readonly cache = new Map<string, { token: TokenRow; until: number }>();
  private readonly spends = new GroupBatcher<{ tokenId: string; deviceId: string }, string | null>(
    (pairs) => this.store.consumeMany(this.db, pairs, this.clock.now()),
    { maxBatch: 500, lanes: 2 },
  );

  constructor(
    private readonly db: Db,
    private readonly store: TokenStore,
    private readonly devices: DeviceDirectory,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly options: { abandoned?: AbandonedAttempts; reserved?: ReservedIdentities } = {},
  ) {}

  async create(input: TokenInput, ctx: ActorContext): Promise<TokenView & { token: string }> {
    if (!input.deviceId === !input.lot) throw badRequest('a token is for one deviceId or for one lot');
    this.options.reserved?.refuse([input.deviceId, ...(input.dnsNames ?? [])], 'enrollment token');
    const expiresIn = input.expiresInSeconds ?? 7 * DAY_S;
    if (!Number.isInteger(expiresIn) || expiresIn < 60 || expiresIn > MAX_EXPIRY_S)
      throw badRequest(`expiresInSeconds must be 60 to ${MAX_EXPIRY_S}`);
    return this.db.transaction(async (tx) => {
      let profile: TokenProfile = input.profile ?? 'device';
      let allowedNames: TokenRow['allowedNames'] = null;
      if (input.deviceId) {
        const device = await this.devices.deviceFacts(tx, input.deviceId);
        if (!device) throw notFound(`device ${input.deviceId} is not in the inventory: register it first`);
        if (['revoked', 'decommissioned', 'suspended'].includes(device.status))
          throw badRequest(`device ${input.deviceId} is ${device.status}`);
        profile = input.profile ?? (device.kind === 'broker' ? 'broker' : 'device');
        if ((profile === 'broker') !== (device.kind === 'broker'))
          throw badRequest(`a ${device.kind} device takes a ${device.kind === 'broker' ? 'broker' : 'device'} token`);
      } else if (profile !== 'device') {
        throw badRequest('lot tokens enroll client devices (profile device)');
      }
      if (profile === 'broker') {
        const dnsNames = input.dnsNames ?? [];
        const ipAddresses = input.ipAddresses ?? [];
        if (dnsNames.length + ipAddresses.length === 0)
          throw badRequest('a broker token names the DNS names or IP addresses the broker may ask for');
        allowedNames = { dnsNames: dnsNames.map((d) => d.toLowerCase()), ipAddresses };
      } else if (input.dnsNames?.length || input.ipAddresses?.length) {
        throw badRequest('only broker tokens carry DNS names or IP addresses');
      }
      const maxUses = input.maxUses ?? (input.lot ? 1_000_000 : 1);
      if (!Number.isInteger(maxUses) || maxUses < 1 || maxUses > 10_000_000) throw badRequest('maxUses must be 1 to 10000000');
      const { id, bearer } = newBearer(PREFIX, ID_PREFIX);
      const now = this.clock.now();
      const row: TokenRow = {
        id,
        secretHash: secretHash(bearer),
        name: input.name ?? null,
        deviceId: input.deviceId ?? null,
        lot: input.lot ?? null,
        profile,
        allowedNames,
        maxUses,
        uses: 0,
        expiresAt: new Date(now.getTime() + expiresIn * 1000),
        createdAt: now,
        createdBy: ctx.actor,
        revokedAt: null,
        lastUsedAt: null,
      };
      await this.store.insert(tx, row);
      await this.audit.append(tx, [
        {
          ...ctx,
          action: 'enrollment-token.created',
          targetType: 'enrollment-token',
          targetId: id,
          details: { deviceId: row.deviceId, lot: row.lot, profile, maxUses, expiresAt: row.expiresAt.toISOString() },
        },
      ]);
      return { ...this.view(row), token: bearer };
    });
  }

  async list(q: { deviceId?: string; lot?: string; cursor?: string; limit: number }): Promise<Page<TokenView>> {
    let before: { createdAt: Date; id: string } | undefined;
    if (q.cursor) {
      const { at, id } = readTimeIdCursor(q.cursor);
      before = { createdAt: at, id };
    }
    const rows = await this.store.list(this.db, { deviceId: q.deviceId, lot: q.lot, before, limit: q.limit });
    const last = rows.length === q.limit ? rows[rows.length - 1] : undefined;
    return {
      items: rows.map((r) => this.view(r)),
      nextCursor: last ? timeIdCursor(last.createdAt, last.id) : null,
    };
  }

  async get(id: string): Promise<TokenView> {
    const row = await this.store.get(this.db, id);
    if (!row) throw notFound(`no enrollment token ${id}`);
    return this.view(row);
  }

  /** Idempotent: revoking a revoked token changes nothing. */
  async revoke(id: string, ctx: ActorContext): Promise<TokenView> {
    return this.db.transaction(async (tx) => {
      const row = await this.store.get(tx, id);
      if (!row) throw notFound(`no enrollment token ${id}`);
      this.cache.delete(id);
      if (await this.store.revoke(tx, id, this.clock.now())) {
        await this.audit.append(tx, [{ ...ctx, action: 'enrollment-token.revoked', targetType: 'enrollment-token', targetId: id }]);
      }
      return this.view((await this.store.get(tx, id))!);
    });
  }

  /** The live tokens of these devices and lots: what revokeFor() would revoke. */
  async liveFor(t: { deviceIds: string[]; lots: string[] }): Promise<{ id: string; deviceId: string | null; lot: string | null }[]> {
    return this.store.liveFor(this.db, t, this.clock.now());
  }

  /** Revokes every live token of these devices and lots, in one transaction; returns the ids revoked. */
  async revokeFor(t: { deviceIds: string[]; lots: string[] }, ctx: ActorContext, details: Record<string, unknown> = {}): Promise<string[]> {
    return this.db.transaction(async (tx) => {
      const now = this.clock.now();
      const live = await this.store.liveFor(tx, t, now);
      const revoked = await this.store.revokeIds(
        tx,
        live.map((l) => l.id),
        now,
      );
      for (const id of revoked) this.cache.delete(id);
      const of = new Map(live.map((l) => [l.id, l]));
      await this.audit.append(
        tx,
        revoked.map((id) => ({
          ...ctx,
          action: 'enrollment-token.revoked',
          targetType: 'enrollment-token',
          targetId: id,
          details: { deviceId: of.get(id)?.deviceId ?? null, lot: of.get(id)?.lot ?? null, ...details },
        })),
      );
      return revoked;
    });
  }

  /**
   * The token a bearer string names, if the secret matches and it is live. A used-up token is
   * still returned (with `usedUp`): a retried request may be owed its first response. Rows are
   * kept for a moment (TOKEN_CACHE_MS) to spare the hot path a query: what may not be stale —
   * revocation, expiry, uses — is checked again, in the database, when the token is spent.
   */
  async authenticate(
    presented: string,
  ): Promise<{ ok: true; token: TokenRow; usedUp: boolean } | { ok: false; reason: TokenRefusal; tokenId?: string }> {
    const id = bearerId(presented, PREFIX, ID_PREFIX);
    if (!id) return { ok: false, reason: 'malformed' };
    const now = this.clock.now();
    let row = this.cache.get(id);
    if (!row || row.until < now.getTime()) {
      const fresh = await this.store.get(this.db, id);
      row = fresh ? { token: fresh, until: now.getTime() + TOKEN_CACHE_MS } : undefined;
      if (row) this.remember(id, row);
    }
    if (!hashMatches(presented, row?.token.secretHash) || !row) return { ok: false, reason: 'unknown', tokenId: id };
    const token = row.token;
    if (token.revokedAt) return { ok: false, reason: 'revoked', tokenId: id };
    if (token.expiresAt <= now) return { ok: false, reason: 'expired', tokenId: id };
    return { ok: true, token, usedUp: token.uses >= token.maxUses };
  }

  /**
   * Spends the token once for a device: live, not used up, the device in the inventory (and in
   * the token's lot) and allowed to enroll, the device not enrolled with this token before — all
   * checked in the one statement that spends, shared by the spends of one event-loop turn.
   * Returns the device's status as that statement saw it; throws Forbidden with the reason when refused.
   */
  async consume(token: TokenRow, deviceId: string, settled = false): Promise<{ deviceStatus: string }> {
    const deviceStatus = await this.spends.add({ tokenId: token.id, deviceId });
    if (deviceStatus !== null) return { deviceStatus };
    this.cache.delete(token.id);
    const facts = await this.store.refusalFacts(this.db, token.id, deviceId);
    const refusal = refusalOf(facts, deviceId, this.clock.now());
    if (refusal.usedAt && !settled && (await this.settleUnpaidUse(token.id, deviceId, refusal.usedAt))) {
      return this.consume(token, deviceId, true);
    }
    throw new DomainError('Forbidden', refusal.reason, refusal.unknownIdentity ? { refusal: 'unknown-identity' } : undefined);
  }

  /**
   * Whether the token still speaks for the device: live, with uses left, and naming it (a device
   * token its device, a lot token a device of its lot). Refusals count against a device only
   * then: a token for another lot, or a used-up one, must not get a device held. A name not in
   * the inventory is no device to protect.
   */
  async claims(tokenId: string, deviceId: string): Promise<boolean> {
    const found = await this.store.getWithDevice(this.db, tokenId, deviceId);
    if (!found) return false;
    const { token: t, device: d } = found;
    if (t.revokedAt || t.expiresAt <= this.clock.now() || t.uses >= t.maxUses) return false;
    if (!d) return true;
    return t.deviceId ? t.deviceId === deviceId : d.lot === t.lot;
  }

  /**
   * A use no certificate came of: its enrollment died with its process after spending it. Past
   * the recovery lease it is given back (audited) and the device may enroll; before, the device
   * is told to retry then. False when a certificate did come of it: the device is enrolled.
   */
  private async settleUnpaidUse(tokenId: string, deviceId: string, usedAt: Date): Promise<boolean> {
    const a = this.options.abandoned;
    if (!a || (await a.recordedSince(deviceId, usedAt))) return false;
    if (!a.isAbandoned(usedAt)) {
      throw new DomainError('Conflict', `an enrollment of device ${deviceId} with this token is still in progress; retry shortly`, {
        retryAfterSeconds: a.secondsLeft(usedAt),
      });
    }
    const ctx = { actor: 'system:recovery' };
    await a.close(deviceId, ctx);
    await this.db.transaction(async (tx) => {
      await this.store.refund(tx, tokenId, deviceId, usedAt);
      await this.audit.append(tx, [
        {
          ...ctx,
          action: 'enrollment-token.use-reclaimed',
          targetType: 'enrollment-token',
          targetId: tokenId,
          details: { deviceId, usedAt: usedAt.toISOString(), reason: 'no certificate came of it' },
        },
      ]);
    });
    return true;
  }

  private remember(id: string, row: { token: TokenRow; until: number }): void {
    if (this.cache.size >= 10_000) this.cache.clear();
    this.cache.set(id, row);
  }

  refund(tokenId: string, deviceId: string): Promise<void> {
    return this.store.refund(this.db, tokenId, deviceId);
  }

  private view(r: TokenRow): TokenView {
    const now = this.clock.now();
    return {
      id: r.id,
      name: r.name,
      deviceId: r.deviceId,
      lot: r.lot,
      profile: r.profile,
      dnsNames: r.allowedNames?.dnsNames ?? [],
      ipAddresses: r.allowedNames?.ipAddresses ?? [],
      maxUses: r.maxUses,
      uses: r.uses,
      expiresAt: r.expiresAt.toISOString(),
      createdAt: r.createdAt.toISOString(),
      createdBy: r.createdBy,
      revokedAt: r.revokedAt?.toISOString() ?? null,
      lastUsedAt: r.lastUsedAt?.toISOString() ?? null,
      status: r.revokedAt ? 'revoked' : r.expiresAt <= now ? 'expired' : r.uses >= r.maxUses ? 'used-up' : 'active',
    };
  }
}

/**
 * Why a spend was refused, from the facts read after it: the first check that fails, in the
 * order the spend makes them. `usedAt` when the device already holds a use of the token;
 * `unknownIdentity` when the device is not in the inventory.
 */
function refusalOf(
  facts: { token: TokenRow | undefined; device: DeviceFacts | undefined; usedAt: Date | undefined },
  deviceId: string,
  now: Date,
): { reason: string; usedAt?: Date; unknownIdentity?: true } {
  const { token: t, device: d } = facts;
  if (!t || t.revokedAt) return { reason: 'the enrollment token was revoked' };
  if (t.expiresAt <= now) return { reason: 'the enrollment token expired' };
  if (!d) return { reason: `device ${deviceId} is not in the inventory`, unknownIdentity: true };
  if (t.lot && d.lot !== t.lot) return { reason: `device ${deviceId} is not in lot ${t.lot}` };
  if (t.lot && d.kind !== 'client') return { reason: `lot tokens enroll client devices; ${deviceId} is a ${d.kind}` };
  if (!['registered', 'active'].includes(d.status))
    return { reason: `device ${deviceId} is ${d.status}: it may not enroll until an operator re-admits it` };
  if (facts.usedAt) return { reason: `device ${deviceId} already enrolled with this token`, usedAt: facts.usedAt };
  return { reason: 'the enrollment token is used up' };
}
