import { randomBytes, type KeyObject } from 'node:crypto';
import { CompactEncrypt } from 'jose';
import type { AuditEntryInput, AuditLog } from '../audit/audit-log.js';
import { seal, unseal } from '../ca/envelope.js';
import type { Kek } from '../ca/kek.js';
import type { RevocationChange, RevocationListener } from '../revoke/revocation.js';
import { deviceEffectOf, isRevocationReason } from '../revoke/reasons.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, badKey, badRequest, conflict, forbidden, notFound } from '../shared/errors.js';
import { newId, serialFromBytes } from '../shared/ids.js';
import type { Db, Executor } from '../store/db.js';
import type {
  ChannelRow,
  ChannelSummaryRow,
  NextSessionKeyRow,
  SessionKeyMetaRow,
  SessionKeyOrigin,
  SessionKeyScope,
  SessionKeyStore,
} from '../store/session-key-store.js';
import type { CurrentDeviceAuth, DeviceCredential } from './device-auth.js';

/** How long a device's session keys are current, and how long a replaced one stays valid beside its successor. */
export interface SessionKeyPeriod {
  periodMs: number;
  overlapMs: number;
}

/** Where a device's rotation period comes from: RotationPolicies (per profile, overridable per lot, defaults from config). */
export interface SessionKeyPolicy {
  forDevice(ex: Executor, deviceId: string): Promise<SessionKeyPeriod>;
}

export interface Actor {
  actor: string;
  requestId?: string | undefined;
}

export interface ChannelInput {
  name: string;
  topicTree: string;
  /** default: the configured period */
  periodSeconds?: number | undefined;
  /** default: the configured overlap; less than the period */
  overlapSeconds?: number | undefined;
  /** devices to add at once */
  members?: string[] | undefined;
}

export interface ChannelView {
  name: string;
  topicTree: string;
  periodSeconds: number;
  overlapSeconds: number;
  memberCount: number;
  currentVersion: number | null;
  createdAt: string;
  updatedAt: string;
}

export type SessionKeyStatus = 'current' | 'previous' | 'expired' | 'revoked';

/** A version as operators see it: never its key. */
export interface SessionKeyView {
  id: string;
  scope: SessionKeyScope;
  owner: string;
  version: number;
  status: SessionKeyStatus;
  origin: SessionKeyOrigin;
  notBefore: string;
  rotateAt: string;
  notAfter: string;
  supersededAt: string | null;
  revokedAt: string | null;
  reason: string | null;
  createdAt: string;
}

/** One key as a device receives it: the raw 32 bytes as a JWE for its certificate's key. */
export interface WrappedSessionKey {
  scope: SessionKeyScope;
  channel?: string;
  kid: string;
  version: number;
  notBefore: string;
  rotateAt: string;
  notAfter: string;
  jwe: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export type JweAlgorithm = 'ECDH-ES+A256KW' | 'RSA-OAEP-256';

export const CHANNEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const DEVICE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
const MAX_LIMIT = 500;
const ROTATE_BATCH = 200;
const MAX_PERIOD_SECONDS = 366 * 86_400;
const MIN_PERIOD_SECONDS = 60;
const SYSTEM_ROTATION = 'system:session-key-rotation';
const SYSTEM_REVOCATION = 'system:revocation';

/** The JWE key management algorithm for a certificate's public key, or a BadKey saying why there is none. */
export function jweAlgorithmFor(key: KeyObject): JweAlgorithm {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1' || curve === 'secp384r1') return 'ECDH-ES+A256KW';
    throw badKey(`session keys are wrapped with ECDH-ES+A256KW for EC P-256 and P-384 keys only; this certificate's key is on ${curve ?? 'an unknown curve'}`);
  }
  if (type === 'rsa') {
    if ((key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048) return 'RSA-OAEP-256';
    throw badKey('session keys are wrapped with RSA-OAEP-256 for RSA keys of at least 2048 bits only');
  }
  const what = type === 'ed25519' ? 'an Ed25519 key, which can only sign' : `a ${type ?? 'unknown'} key`;
  throw badKey(`session keys cannot be wrapped for this certificate: it has ${what}; a device needs an EC P-256/P-384 key (ECDH-ES+A256KW) or an RSA key (RSA-OAEP-256) to receive them`);
}

/** MQTT topic filter rules: `+` and `#` only as whole levels, `#` only last; no NUL. */
function checkTopicTree(t: unknown): string {
  if (typeof t !== 'string' || t.length === 0 || t.length > 256) throw badRequest('topicTree must be an MQTT topic filter of 1 to 256 characters');
  if (t.includes('\u0000')) throw badRequest('topicTree may not contain NUL');
  const levels = t.split('/');
  levels.forEach((l, i) => {
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) throw badRequest('topicTree: "#" must be a whole level, and the last');
    if (l.includes('+') && l !== '+') throw badRequest('topicTree: "+" must be a whole level');
  });
  return t;
}

const encodeCursor = (s: string) => Buffer.from(s, 'utf8').toString('base64url');
function decodeCursor(c: string | undefined, check: (s: string) => boolean): string | undefined {
  if (c === undefined) return undefined;
  const s = Buffer.from(c, 'base64url').toString('utf8');
  if (!check(s) || encodeCursor(s) !== c) throw badRequest('invalid cursor');
  return s;
}
function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw badRequest(`limit must be an integer from 1 to ${MAX_LIMIT}`);
  return limit;
}
const VERSION_RE = /^[1-9][0-9]{0,9}$/;

function channelView(c: ChannelSummaryRow): ChannelView {
  return {
    name: c.name,
    topicTree: c.topicTree,
    periodSeconds: c.periodSeconds,
    overlapSeconds: c.overlapSeconds,
    memberCount: c.memberCount,
    currentVersion: c.currentVersion,
    createdAt: c.createdAt.toISOString(),
    updatedAt: c.updatedAt.toISOString(),
  };
}

const periodOf = (c: Pick<ChannelRow, 'periodSeconds' | 'overlapSeconds'>): SessionKeyPeriod => ({ periodMs: c.periodSeconds * 1000, overlapMs: c.overlapSeconds * 1000 });

function keyAudit(ctx: Actor, action: string, k: SessionKeyMetaRow, details: Record<string, unknown> = {}): AuditEntryInput {
  return {
    actor: ctx.actor,
    requestId: ctx.requestId,
    action,
    targetType: k.scope,
    targetId: k.owner,
    details: { keyId: k.id, version: k.version, origin: k.origin, notBefore: k.notBefore.toISOString(), rotateAt: k.rotateAt.toISOString(), notAfter: k.notAfter.toISOString(), ...details },
  };
}

/**
 * Session keys: AES-256 keys (32 bytes from the CSPRNG) for payload encryption on constrained
 * devices, in versioned series — one per device, one per channel — sealed under the KEK.
 *
 * - A version is current for its period (`rotate_at = not_before + period`); the next one then
 *   replaces it, and it stays valid for the overlap beside its successor (`not_after = rotate_at + overlap`).
 * - A channel's series starts when the channel is created. A device's series starts lazily, at the
 *   device's first fetch; from then on rotateDue rotates it while the device is active (a device
 *   that never fetches never gets one; one that stops being active keeps none current).
 * - The fetch rotates, in passing, any of its series that is due (so a late scheduler never
 *   leaves a device without a current key), and returns every valid version, as a JWE for the
 *   certificate's key.
 * - Every change to a series is made holding its owner's row lock (the channel, or the device),
 *   and (scope, owner, version) is unique: concurrent rotations never make two versions.
 * - When a device's certificate is revoked or put on hold (a reason that takes the device out of
 *   trust: not superseded or cessationOfOperation), every channel it belongs to gets a new
 *   version at once, its valid versions are revoked (no overlap), and so are the device's own.
 *   Removing a member does the same to the channel.
 */
export class SessionKeys implements RevocationListener {
  constructor(
    private readonly db: Db,
    private readonly store: SessionKeyStore,
    private readonly kek: Kek,
    private readonly auth: CurrentDeviceAuth,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly policy: SessionKeyPolicy,
    /** A new channel's period and overlap when the request names none. */
    private readonly channelDefaults: SessionKeyPeriod,
  ) {}

  // ---- channels ----------------------------------------------------------------------------

  async createChannel(input: ChannelInput, ctx: Actor): Promise<ChannelView> {
    if (typeof input?.name !== 'string' || !CHANNEL_NAME_RE.test(input.name)) throw badRequest('name must be 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit');
    const topicTree = checkTopicTree(input.topicTree);
    const periodSeconds = input.periodSeconds ?? Math.round(this.channelDefaults.periodMs / 1000);
    const overlapSeconds = input.overlapSeconds ?? Math.round(this.channelDefaults.overlapMs / 1000);
    if (!Number.isInteger(periodSeconds) || periodSeconds < MIN_PERIOD_SECONDS || periodSeconds > MAX_PERIOD_SECONDS) {
      throw badRequest(`periodSeconds must be an integer from ${MIN_PERIOD_SECONDS} to ${MAX_PERIOD_SECONDS}`);
    }
    if (!Number.isInteger(overlapSeconds) || overlapSeconds < 0 || overlapSeconds >= periodSeconds) throw badRequest('overlapSeconds must be an integer from 0 to less than periodSeconds');
    const members = [...new Set(input.members ?? [])];
    const now = this.clock.now();
    const name = input.name;
    await this.db.transaction(async (tx) => {
      await this.checkDevices(tx, members);
      if (!(await this.store.insertChannel(tx, { name, topicTree, periodSeconds, overlapSeconds, createdAt: now, updatedAt: now }))) {
        throw conflict(`a channel named ${name} exists`);
      }
      const added = await this.store.addMembers(tx, name, members, now);
      const [key] = await this.store.insertNext(tx, [this.newVersion('channel', name, 'created', { periodMs: periodSeconds * 1000, overlapMs: overlapSeconds * 1000 }, now)]);
      await this.audit.append(tx, [
        { ...ctx, action: 'channel.created', targetType: 'channel', targetId: name, details: { topicTree, periodSeconds, overlapSeconds } },
        ...(added.length ? [{ ...ctx, action: 'channel.members-added', targetType: 'channel', targetId: name, details: { deviceIds: added } }] : []),
        keyAudit(ctx, 'session-key.created', key!),
      ]);
    });
    return this.getChannel(name);
  }

  async getChannel(name: string): Promise<ChannelView> {
    const c = CHANNEL_NAME_RE.test(name) ? await this.store.getChannel(this.db, name) : undefined;
    if (!c) throw notFound(`no channel named ${name}`);
    return channelView(c);
  }

  async listChannels(q: { cursor?: string | undefined; limit: number }): Promise<Page<ChannelView>> {
    const limit = checkLimit(q.limit);
    const after = decodeCursor(q.cursor, (s) => CHANNEL_NAME_RE.test(s));
    const rows = await this.store.listChannels(this.db, { afterName: after, limit: limit + 1 });
    const page = rows.slice(0, limit);
    return { items: page.map(channelView), nextCursor: rows.length > limit ? encodeCursor(page[page.length - 1]!.name) : null };
  }

  async listMembers(name: string, q: { cursor?: string | undefined; limit: number }): Promise<Page<{ deviceId: string; addedAt: string }>> {
    const limit = checkLimit(q.limit);
    const after = decodeCursor(q.cursor, (s) => DEVICE_ID_RE.test(s));
    await this.getChannel(name);
    const rows = await this.store.listMembers(this.db, name, { afterDeviceId: after, limit: limit + 1 });
    const page = rows.slice(0, limit);
    return { items: page.map((m) => ({ deviceId: m.deviceId, addedAt: m.addedAt.toISOString() })), nextCursor: rows.length > limit ? encodeCursor(page[page.length - 1]!.deviceId) : null };
  }

  /** Adds existing devices (not decommissioned) to the channel; members already there are left as they are. */
  async addMembers(name: string, deviceIds: string[], ctx: Actor): Promise<{ added: string[]; channel: ChannelView }> {
    if (!Array.isArray(deviceIds) || deviceIds.length === 0) throw badRequest('deviceIds must name at least one device');
    const ids = [...new Set(deviceIds)];
    const now = this.clock.now();
    const added = await this.db.transaction(async (tx) => {
      const [channel] = await this.store.lockChannels(tx, [name]);
      if (!channel) throw notFound(`no channel named ${name}`);
      await this.checkDevices(tx, ids);
      const added = await this.store.addMembers(tx, name, ids, now);
      if (added.length) {
        await this.store.touchChannel(tx, name, now);
        await this.audit.append(tx, [{ ...ctx, action: 'channel.members-added', targetType: 'channel', targetId: name, details: { deviceIds: added } }]);
      }
      return added;
    });
    return { added, channel: await this.getChannel(name) };
  }

  /** Removes a member; the channel's key is replaced at once (the removed device knows the valid versions: they are revoked). */
  async removeMember(name: string, deviceId: string, ctx: Actor): Promise<{ channel: ChannelView; key: SessionKeyView }> {
    const now = this.clock.now();
    const key = await this.db.transaction(async (tx) => {
      const [channel] = await this.store.lockChannels(tx, [name]);
      if (!channel) throw notFound(`no channel named ${name}`);
      if (!(await this.store.removeMember(tx, name, deviceId))) throw notFound(`device ${deviceId} is not a member of channel ${name}`);
      await this.store.touchChannel(tx, name, now);
      const { created, entries } = await this.replaceAtOnce(tx, [channel], now, 'member-removed', ctx, { deviceId });
      await this.audit.append(tx, [{ ...ctx, action: 'channel.member-removed', targetType: 'channel', targetId: name, details: { deviceId } }, ...entries]);
      return created[0]!;
    });
    return { channel: await this.getChannel(name), key: this.view(key, now) };
  }

  /**
   * Makes the channel's next version now. The previous one stays valid for the channel's overlap
   * (never longer than it was), or, `immediate`, is revoked at once.
   */
  async rotateChannel(name: string, opts: { immediate?: boolean | undefined }, ctx: Actor): Promise<SessionKeyView> {
    const now = this.clock.now();
    const key = await this.db.transaction(async (tx) => {
      const [channel] = await this.store.lockChannels(tx, [name]);
      if (!channel) throw notFound(`no channel named ${name}`);
      if (opts.immediate) {
        const { created, entries } = await this.replaceAtOnce(tx, [channel], now, 'manual', ctx, {});
        await this.audit.append(tx, entries);
        return created[0]!;
      }
      const { created, entries } = await this.rotate(tx, 'channel', [{ owner: name, period: periodOf(channel) }], now, 'manual', ctx);
      await this.audit.append(tx, entries);
      return created[0]!;
    });
    return this.view(key, now);
  }

  async channelKeys(name: string, q: { cursor?: string | undefined; limit: number }): Promise<Page<SessionKeyView>> {
    await this.getChannel(name);
    return this.versions('channel', name, q);
  }

  async deviceKeys(deviceId: string, q: { cursor?: string | undefined; limit: number }): Promise<Page<SessionKeyView>> {
    if (!DEVICE_ID_RE.test(deviceId) || (await this.store.devices(this.db, [deviceId])).length === 0) throw notFound(`no device with id ${deviceId}`);
    return this.versions('device', deviceId, q);
  }

  private async versions(scope: SessionKeyScope, owner: string, q: { cursor?: string | undefined; limit: number }): Promise<Page<SessionKeyView>> {
    const limit = checkLimit(q.limit);
    const before = decodeCursor(q.cursor, (s) => VERSION_RE.test(s));
    const rows = await this.store.listVersions(this.db, scope, owner, { beforeVersion: before === undefined ? undefined : Number(before), limit: limit + 1 });
    const now = this.clock.now();
    const page = rows.slice(0, limit);
    return { items: page.map((k) => this.view(k, now)), nextCursor: rows.length > limit ? encodeCursor(String(page[page.length - 1]!.version)) : null };
  }

  // ---- rotation ----------------------------------------------------------------------------

  /**
   * Makes the next version of every device and channel series whose current version's rotate_at
   * has passed (device series only of active devices). The replaced version stays valid until its
   * not_after (the end of its overlap). Safe to run concurrently and to repeat: each batch locks
   * its series' owners with SKIP LOCKED, a version is superseded only once, and
   * (scope, owner, version) is unique. Returns how many versions it made.
   */
  async rotateDue(): Promise<{ rotated: number }> {
    let rotated = 0;
    for (const scope of ['channel', 'device'] as const) {
      for (;;) {
        const { claimed, made } = await this.db.transaction(async (tx) => {
          const now = this.clock.now();
          const due = await this.store.claimDue(tx, scope, now, ROTATE_BATCH);
          if (due.length === 0) return { claimed: 0, made: 0 };
          const series = await Promise.all(
            due.map(async (d) => ({
              owner: d.owner,
              period: d.periodSeconds !== null ? periodOf({ periodSeconds: d.periodSeconds, overlapSeconds: d.overlapSeconds ?? 0 }) : await this.policy.forDevice(tx, d.owner),
            })),
          );
          const { created, entries } = await this.rotate(tx, scope, series, now, 'scheduled', { actor: SYSTEM_ROTATION }, due.map((d) => d.id));
          await this.audit.append(tx, entries);
          return { claimed: due.length, made: created.length };
        });
        rotated += made;
        if (claimed < ROTATE_BATCH) break;
      }
    }
    return { rotated };
  }

  /**
   * The next version of each series, the current one (when there is one) superseded: it stays
   * valid until its not_after, cut to now + the overlap when that is sooner (a rotation before the
   * period's end). With `currentIds`, only those versions are replaced — a series whose current
   * version is another (a concurrent rotation got there first) is left alone.
   */
  private async rotate(
    tx: Executor,
    scope: SessionKeyScope,
    series: { owner: string; period: SessionKeyPeriod }[],
    now: Date,
    origin: SessionKeyOrigin,
    ctx: Actor,
    currentIds?: string[],
  ): Promise<{ created: SessionKeyMetaRow[]; entries: AuditEntryInput[] }> {
    const current = await this.store.current(tx, scope, series.map((s) => s.owner));
    const replace = currentIds ? current.filter((k) => currentIds.includes(k.id)) : current;
    const overlapOf = new Map(series.map((s) => [s.owner, s.period.overlapMs]));
    // Grouped by overlap, so each group's not_after is cut in one statement (usually one group).
    const byOverlap = new Map<number, string[]>();
    for (const k of replace) {
      const o = overlapOf.get(k.owner) ?? 0;
      byOverlap.set(o, [...(byOverlap.get(o) ?? []), k.id]);
    }
    const superseded = new Map<string, SessionKeyMetaRow>();
    for (const [overlapMs, group] of byOverlap) {
      for (const k of await this.store.supersede(tx, group, now, new Date(now.getTime() + overlapMs))) superseded.set(k.owner, k);
    }
    // Series that had a current version make the next only if this call superseded it; new series start at version 1.
    const existing = new Set(current.map((k) => k.owner));
    const todo = series.filter((s) => superseded.has(s.owner) || (!currentIds && !existing.has(s.owner)));
    const created = await this.store.insertNext(tx, todo.map((s) => this.newVersion(scope, s.owner, origin, s.period, now)));
    const entries = created.map((k) => {
      const prev = superseded.get(k.owner);
      return prev
        ? keyAudit(ctx, 'session-key.rotated', k, { previous: { keyId: prev.id, version: prev.version, notAfter: prev.notAfter.toISOString() } })
        : keyAudit(ctx, 'session-key.created', k);
    });
    return { created, entries };
  }

  /** Channels whose valid versions must stop now: revoked (reason), and a new version effective now. */
  private async replaceAtOnce(
    tx: Executor,
    channels: ChannelRow[],
    now: Date,
    origin: 'member-revoked' | 'member-removed' | 'manual',
    ctx: Actor,
    details: Record<string, unknown>,
  ): Promise<{ created: SessionKeyMetaRow[]; entries: AuditEntryInput[] }> {
    const names = channels.map((c) => c.name);
    const reason = origin === 'manual' ? 'rotated-immediately' : origin;
    const revoked = await this.store.revokeValid(tx, 'channel', names, now, reason);
    const created = await this.store.insertNext(tx, channels.map((c) => this.newVersion('channel', c.name, origin, periodOf(c), now)));
    const entries = [
      ...revoked.map((k) => keyAudit(ctx, 'session-key.revoked', k, { reason, ...details })),
      ...created.map((k) => keyAudit(ctx, 'session-key.rotated', k, { immediate: true, ...details })),
    ];
    return { created, entries };
  }

  /** A fresh key from the CSPRNG, sealed under the KEK (bound to its id); the plaintext is zeroed. */
  private newVersion(scope: SessionKeyScope, owner: string, origin: SessionKeyOrigin, period: SessionKeyPeriod, now: Date): NextSessionKeyRow {
    const id = newId('sk', 16);
    const key = randomBytes(32);
    try {
      const sealed = seal(this.kek, key, id);
      const rotateAt = new Date(now.getTime() + period.periodMs);
      return { id, scope, owner, origin, kekId: sealed.kekId, wrappedDek: sealed.wrappedDek, ciphertext: sealed.ciphertext, notBefore: now, rotateAt, notAfter: new Date(rotateAt.getTime() + period.overlapMs), createdAt: now };
    } finally {
      key.fill(0);
    }
  }

  // ---- the device's fetch ----------------------------------------------------------------------

  /**
   * A device's valid session keys — its own and those of every channel it belongs to — each as a
   * JWE (compact) for its certificate's public key: ECDH-ES+A256KW for EC P-256/P-384, RSA-OAEP-256
   * for RSA; enc A256GCM; kid the key's id; the plaintext the raw 32 bytes.
   */
  async fetch(credential: DeviceCredential | undefined): Promise<{ deviceId: string; keys: WrappedSessionKey[] }> {
    const device = await this.auth.authenticate(credential);
    const alg = jweAlgorithmFor(device.publicKey);
    const deviceId = device.deviceId;
    let now = this.clock.now();
    const channels = [...new Set((await this.store.channelsOf(this.db, [deviceId])).map((m) => m.channel))];
    const needsNext = (k: SessionKeyMetaRow | undefined) => !k || k.rotateAt.getTime() <= now.getTime();
    const [own] = await this.store.current(this.db, 'device', [deviceId]);
    const channelCurrent = new Map((await this.store.current(this.db, 'channel', channels)).map((k) => [k.owner, k]));
    const dueChannels = channels.filter((c) => needsNext(channelCurrent.get(c)));
    if (needsNext(own) || dueChannels.length) {
      await this.db.transaction(async (tx) => {
        now = this.clock.now();
        // Under the device's lock, the certificate and device are as authenticated (a revocation commits before or after, never beside).
        const [locked] = await this.store.lockDevices(tx, [deviceId]);
        if (locked?.status !== 'active' || (await this.store.certificateStatus(tx, device.serial)) !== 'issued') {
          throw forbidden(`certificate ${serialFromBytes(device.serial)} or device ${deviceId} is no longer current`);
        }
        const entries: AuditEntryInput[] = [];
        const ctx = { actor: `certificate:${serialFromBytes(device.serial)}` };
        const [ownNow] = await this.store.current(tx, 'device', [deviceId]);
        if (needsNext(ownNow)) {
          const r = await this.rotate(tx, 'device', [{ owner: deviceId, period: await this.policy.forDevice(tx, deviceId) }], now, ownNow ? 'scheduled' : 'created', ctx);
          entries.push(...r.entries);
        }
        const lockedChannels = await this.store.lockChannels(tx, dueChannels);
        const currentNow = new Map((await this.store.current(tx, 'channel', lockedChannels.map((c) => c.name))).map((k) => [k.owner, k]));
        const stillDue = lockedChannels.filter((c) => needsNext(currentNow.get(c.name)));
        if (stillDue.length) {
          const r = await this.rotate(tx, 'channel', stillDue.map((c) => ({ owner: c.name, period: periodOf(c) })), now, 'scheduled', ctx);
          entries.push(...r.entries);
        }
        await this.audit.append(tx, entries);
      });
    }
    const rows = await this.store.validKeys(this.db, deviceId, channels, now);
    const keys: WrappedSessionKey[] = [];
    for (const k of rows) {
      const raw = unseal(this.kek, k, k.id);
      try {
        const jwe = await new CompactEncrypt(raw).setProtectedHeader({ alg, enc: 'A256GCM', kid: k.id }).encrypt(device.publicKey);
        keys.push({
          scope: k.scope,
          ...(k.scope === 'channel' ? { channel: k.owner } : {}),
          kid: k.id,
          version: k.version,
          notBefore: k.notBefore.toISOString(),
          rotateAt: k.rotateAt.toISOString(),
          notAfter: k.notAfter.toISOString(),
          jwe,
        });
      } finally {
        raw.fill(0);
      }
    }
    return { deviceId, keys };
  }

  // ---- revocation --------------------------------------------------------------------------

  /**
   * Inside the revoking transaction: for every device whose certificate was just revoked or put
   * on hold for a reason that takes the device out of trust, every channel it belongs to gets a
   * new version effective now (the valid versions are revoked, reason member-revoked: no
   * overlap), and the device's own valid versions are revoked (reason device-revoked).
   * Superseded and cessationOfOperation leave the keys alone (a routine replacement or retirement).
   */
  async onRevocationWriting(tx: Executor, change: RevocationChange): Promise<void> {
    const revoked = await this.store.revokedDeviceCertificates(tx, change.serials);
    const hit = revoked.filter((r) => isRevocationReason(r.reason) && deviceEffectOf(r.reason) !== null);
    if (hit.length === 0) return;
    const why = Object.fromEntries(hit.map((r) => [r.deviceId, { serial: serialFromBytes(r.serial), reason: r.reason }]));
    const deviceIds = [...new Set(hit.map((r) => r.deviceId))].sort();
    await this.audit.append(tx, await this.revokeDevicesIn(tx, deviceIds, { channelReason: 'member-revoked', deviceReason: 'device-revoked' }, { actor: SYSTEM_REVOCATION }, (id) => ({ certificate: why[id] })));
  }

  /**
   * A device's session keys leaked (its certificate still trusted): its own valid versions are
   * revoked and every channel it belongs to gets a new version effective now. One transaction.
   */
  async revokeDeviceKeys(deviceIds: string[], ctx: Actor, details: Record<string, unknown> = {}): Promise<{ deviceKeys: number; channels: string[] }> {
    const ids = [...new Set(deviceIds)].sort();
    return this.db.transaction(async (tx) => {
      const entries = await this.revokeDevicesIn(tx, ids, { channelReason: 'member-key-revoked', deviceReason: 'key-revoked' }, ctx, () => details);
      await this.audit.append(tx, entries);
      return {
        deviceKeys: entries.filter((e) => e.action === 'session-key.revoked' && e.targetType === 'device').length,
        channels: [...new Set(entries.filter((e) => e.action === 'session-key.rotated').map((e) => e.targetId))].sort(),
      };
    });
  }

  /** What revokeDeviceKeys() would touch: the devices' valid versions and their channels. */
  async keysOf(deviceIds: string[]): Promise<{ deviceKeys: { id: string; owner: string }[]; channels: string[] }> {
    const now = this.clock.now();
    const current = await this.store.current(this.db, 'device', deviceIds);
    const memberships = await this.store.channelsOf(this.db, deviceIds);
    return {
      deviceKeys: current.filter((k) => k.notAfter > now && !k.revokedAt).map((k) => ({ id: k.id, owner: k.owner })),
      channels: [...new Set(memberships.map((m) => m.channel))].sort(),
    };
  }

  /** Inside `tx`: revokes the devices' valid versions and re-keys their channels now; returns the audit entries. */
  private async revokeDevicesIn(
    tx: Executor,
    deviceIds: string[],
    reasons: { channelReason: SessionKeyOrigin; deviceReason: string },
    ctx: Actor,
    detailsOf: (deviceId: string) => Record<string, unknown>,
  ): Promise<AuditEntryInput[]> {
    if (deviceIds.length === 0) return [];
    const now = this.clock.now();
    await this.store.lockDevices(tx, deviceIds);
    const memberships = await this.store.channelsOf(tx, deviceIds);
    const channels = await this.store.lockChannels(tx, [...new Set(memberships.map((m) => m.channel))]);
    const entries: AuditEntryInput[] = [];
    if (channels.length) {
      const membersOf = new Map<string, string[]>();
      for (const m of memberships) membersOf.set(m.channel, [...(membersOf.get(m.channel) ?? []), m.deviceId]);
      const revokedKeys = await this.store.revokeValid(tx, 'channel', channels.map((c) => c.name), now, reasons.channelReason);
      const created = await this.store.insertNext(tx, channels.map((c) => this.newVersion('channel', c.name, reasons.channelReason, periodOf(c), now)));
      entries.push(
        ...revokedKeys.map((k) => keyAudit(ctx, 'session-key.revoked', k, { reason: reasons.channelReason, deviceIds: membersOf.get(k.owner) })),
        ...created.map((k) => keyAudit(ctx, 'session-key.rotated', k, { immediate: true, deviceIds: membersOf.get(k.owner) })),
      );
    }
    for (const k of await this.store.revokeValid(tx, 'device', deviceIds, now, reasons.deviceReason)) {
      entries.push(keyAudit(ctx, 'session-key.revoked', k, { reason: reasons.deviceReason, ...detailsOf(k.owner) }));
    }
    return entries;
  }

  /** Nothing to publish after the commit: devices fetch. */
  async onRevocationChanged(): Promise<void> {}

  // ---- helpers -----------------------------------------------------------------------------

  /** Every id names an existing device that is not decommissioned (NotFound naming the unknown ones). */
  private async checkDevices(tx: Executor, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const bad = ids.filter((id) => typeof id !== 'string' || !DEVICE_ID_RE.test(id));
    if (bad.length) throw badRequest(`not device ids: ${bad.slice(0, 10).map(String).join(', ')}`);
    const found = new Map((await this.store.devices(tx, ids)).map((d) => [d.id, d]));
    const unknown = ids.filter((id) => !found.has(id));
    if (unknown.length) throw new DomainError('NotFound', `no device with id ${unknown.slice(0, 10).join(', ')}${unknown.length > 10 ? ` (and ${unknown.length - 10} more)` : ''}`);
    const gone = ids.filter((id) => found.get(id)!.status === 'decommissioned');
    if (gone.length) throw conflict(`decommissioned devices cannot join a channel: ${gone.slice(0, 10).join(', ')}`);
    // Channel keys protect the devices' payloads from everyone else, brokers included; and an
    // operator may hold a broker's certificate, so a broker member would hand the operator the key.
    const brokers = ids.filter((id) => found.get(id)!.kind === 'broker');
    if (brokers.length) throw badRequest(`brokers cannot join a channel (channel keys are for the devices' payloads): ${brokers.slice(0, 10).join(', ')}`);
  }

  private view(k: SessionKeyMetaRow, now: Date): SessionKeyView {
    const status: SessionKeyStatus = k.revokedAt ? 'revoked' : k.notAfter.getTime() <= now.getTime() ? 'expired' : k.supersededAt === null ? 'current' : 'previous';
    return {
      id: k.id,
      scope: k.scope,
      owner: k.owner,
      version: k.version,
      status,
      origin: k.origin,
      notBefore: k.notBefore.toISOString(),
      rotateAt: k.rotateAt.toISOString(),
      notAfter: k.notAfter.toISOString(),
      supersededAt: k.supersededAt?.toISOString() ?? null,
      revokedAt: k.revokedAt?.toISOString() ?? null,
      reason: k.reason,
      createdAt: k.createdAt.toISOString(),
    };
  }
}
