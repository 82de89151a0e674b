import type { KeyObject } from 'node:crypto';
import type { ActorContext } from '../shared/actor.js';
import type { Page } from '../shared/page.js';
import { CompactEncrypt } from 'jose';
import type { AuditEntryInput, AuditLog } from '../audit/audit-log.js';
import { unseal } from '../ca/envelope.js';
import type { Kek } from '../ca/kek.js';
import type { RevocationChange, RevocationListener } from '../revoke/revocation.js';
import { deviceEffectOf, isRevocationReason } from '../revoke/reasons.js';
import type { Clock } from '../shared/clock.js';
import { badKey, forbidden, notFound } from '../shared/errors.js';
import { serialFromBytes } from '../shared/ids.js';
import type { Db, Executor } from '../store/db.js';
import type { SessionKeyMetaRow, SessionKeyOrigin, SessionKeyScope, SessionKeyStore } from '../store/session-key-store.js';
import type { CurrentDeviceAuth, DeviceCredential } from './device-auth.js';
import { SessionChannels, type ChannelInput, type ChannelView } from './session-channels.js';
import { DEVICE_ID_RE, keyAudit, periodOf, SessionKeySeries, type SessionKeyPeriod, type SessionKeyView } from './session-key-series.js';

/** Where a device's rotation period comes from: RotationPolicies (per profile, overridable per lot, defaults from config). */
export interface SessionKeyPolicy {
  forDevice(ex: Executor, deviceId: string): Promise<SessionKeyPeriod>;
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

export type JweAlgorithm = 'ECDH-ES+A256KW' | 'RSA-OAEP-256';

const ROTATE_BATCH = 200;
const SYSTEM_ROTATION = 'system:session-key-rotation';
const SYSTEM_REVOCATION = 'system:revocation';

/** The JWE key management algorithm for a certificate's public key, or a BadKey saying why there is none. */
export function jweAlgorithmFor(key: KeyObject): JweAlgorithm {
  const type = key.asymmetricKeyType;
  if (type === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1' || curve === 'secp384r1') return 'ECDH-ES+A256KW';
    throw badKey(
      `session keys are wrapped with ECDH-ES+A256KW for EC P-256 and P-384 keys only; this certificate's key is on ${curve ?? 'an unknown curve'}`,
    );
  }
  if (type === 'rsa') {
    if ((key.asymmetricKeyDetails?.modulusLength ?? 0) >= 2048) return 'RSA-OAEP-256';
    throw badKey('session keys are wrapped with RSA-OAEP-256 for RSA keys of at least 2048 bits only');
  }
  const what = type === 'ed25519' ? 'an Ed25519 key, which can only sign' : `a ${type ?? 'unknown'} key`;
  throw badKey(
    `session keys cannot be wrapped for this certificate: it has ${what}; a device needs an EC P-256/P-384 key (ECDH-ES+A256KW) or an RSA key (RSA-OAEP-256) to receive them`,
  );
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
  private readonly series: SessionKeySeries;
  private readonly channels: SessionChannels;

  constructor(
    private readonly db: Db,
    private readonly store: SessionKeyStore,
    private readonly kek: Kek,
    private readonly auth: CurrentDeviceAuth,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly policy: SessionKeyPolicy,
    /** A new channel's period and overlap when the request names none. */
    channelDefaults: SessionKeyPeriod,
  ) {
    this.series = new SessionKeySeries(db, store, kek, clock);
    this.channels = new SessionChannels(db, store, audit, clock, this.series, channelDefaults);
  }

  // ---- channels (SessionChannels) ----------------------------------------------------------

  createChannel(input: ChannelInput, ctx: ActorContext): Promise<ChannelView> {
    return this.channels.createChannel(input, ctx);
  }

  getChannel(name: string): Promise<ChannelView> {
    return this.channels.getChannel(name);
  }

  listChannels(q: { cursor?: string | undefined; limit: number }): Promise<Page<ChannelView>> {
    return this.channels.listChannels(q);
  }

  listMembers(name: string, q: { cursor?: string | undefined; limit: number }): Promise<Page<{ deviceId: string; addedAt: string }>> {
    return this.channels.listMembers(name, q);
  }

  addMembers(name: string, deviceIds: string[], ctx: ActorContext): Promise<{ added: string[]; channel: ChannelView }> {
    return this.channels.addMembers(name, deviceIds, ctx);
  }

  removeMember(name: string, deviceId: string, ctx: ActorContext): Promise<{ channel: ChannelView; key: SessionKeyView }> {
    return this.channels.removeMember(name, deviceId, ctx);
  }

  rotateChannel(name: string, opts: { immediate?: boolean | undefined }, ctx: ActorContext): Promise<SessionKeyView> {
    return this.channels.rotateChannel(name, opts, ctx);
  }

  channelKeys(name: string, q: { cursor?: string | undefined; limit: number }): Promise<Page<SessionKeyView>> {
    return this.channels.channelKeys(name, q);
  }

  // ---- a device's series ---------------------------------------------------------------------

  async deviceKeys(deviceId: string, q: { cursor?: string | undefined; limit: number }): Promise<Page<SessionKeyView>> {
    if (!DEVICE_ID_RE.test(deviceId) || (await this.store.devices(this.db, [deviceId])).length === 0)
      throw notFound(`no device with id ${deviceId}`);
    return this.series.versions('device', deviceId, q);
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
              period:
                d.periodSeconds !== null
                  ? periodOf({ periodSeconds: d.periodSeconds, overlapSeconds: d.overlapSeconds ?? 0 })
                  : await this.policy.forDevice(tx, d.owner),
            })),
          );
          const { created, entries } = await this.series.rotate(
            tx,
            scope,
            series,
            now,
            'scheduled',
            { actor: SYSTEM_ROTATION },
            due.map((d) => d.id),
          );
          await this.audit.append(tx, entries);
          return { claimed: due.length, made: created.length };
        });
        rotated += made;
        if (claimed < ROTATE_BATCH) break;
      }
    }
    return { rotated };
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
          const r = await this.series.rotate(
            tx,
            'device',
            [{ owner: deviceId, period: await this.policy.forDevice(tx, deviceId) }],
            now,
            ownNow ? 'scheduled' : 'created',
            ctx,
          );
          entries.push(...r.entries);
        }
        const lockedChannels = await this.store.lockChannels(tx, dueChannels);
        const currentNow = new Map(
          (
            await this.store.current(
              tx,
              'channel',
              lockedChannels.map((c) => c.name),
            )
          ).map((k) => [k.owner, k]),
        );
        const stillDue = lockedChannels.filter((c) => needsNext(currentNow.get(c.name)));
        if (stillDue.length) {
          const r = await this.series.rotate(
            tx,
            'channel',
            stillDue.map((c) => ({ owner: c.name, period: periodOf(c) })),
            now,
            'scheduled',
            ctx,
          );
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
    await this.audit.append(
      tx,
      await this.revokeDevicesIn(
        tx,
        deviceIds,
        { channelReason: 'member-revoked', deviceReason: 'device-revoked' },
        { actor: SYSTEM_REVOCATION },
        (id) => ({ certificate: why[id] }),
      ),
    );
  }

  /**
   * A device's session keys leaked (its certificate still trusted): its own valid versions are
   * revoked and every channel it belongs to gets a new version effective now. One transaction.
   */
  async revokeDeviceKeys(
    deviceIds: string[],
    ctx: ActorContext,
    details: Record<string, unknown> = {},
  ): Promise<{ deviceKeys: number; channels: string[] }> {
    const ids = [...new Set(deviceIds)].sort();
    return this.db.transaction(async (tx) => {
      const entries = await this.revokeDevicesIn(
        tx,
        ids,
        { channelReason: 'member-key-revoked', deviceReason: 'key-revoked' },
        ctx,
        () => details,
      );
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
    ctx: ActorContext,
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
      const revokedKeys = await this.store.revokeValid(
        tx,
        'channel',
        channels.map((c) => c.name),
        now,
        reasons.channelReason,
      );
      const created = await this.store.insertNext(
        tx,
        channels.map((c) => this.series.newVersion('channel', c.name, reasons.channelReason, periodOf(c), now)),
      );
      entries.push(
        ...revokedKeys.map((k) =>
          keyAudit(ctx, 'session-key.revoked', k, { reason: reasons.channelReason, deviceIds: membersOf.get(k.owner) }),
        ),
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
}
