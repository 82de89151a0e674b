import type { AuditLog } from '../audit/audit-log.js';
import type { ActorContext } from '../shared/actor.js';
import { encodeCursor, type Page } from '../shared/page.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, badRequest, conflict, notFound } from '../shared/errors.js';
import type { Db, Executor } from '../store/db.js';
import type { ChannelSummaryRow, SessionKeyStore } from '../store/session-key-store.js';
import {
  checkLimit,
  decodeCursor,
  DEVICE_ID_RE,
  keyAudit,
  periodOf,
  type SessionKeyPeriod,
  type SessionKeySeries,
  type SessionKeyView,
} from './session-key-series.js';

// Channels (a topic tree and its members) and their key series; SessionKeys exposes them.

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

export const CHANNEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAX_PERIOD_SECONDS = 366 * 86_400;
const MIN_PERIOD_SECONDS = 60;

/** MQTT topic filter rules: `+` and `#` only as whole levels, `#` only last; no NUL. */
function checkTopicTree(t: unknown): string {
  if (typeof t !== 'string' || t.length === 0 || t.length > 256)
    throw badRequest('topicTree must be an MQTT topic filter of 1 to 256 characters');
  if (t.includes('\u0000')) throw badRequest('topicTree may not contain NUL');
  const levels = t.split('/');
  levels.forEach((l, i) => {
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) throw badRequest('topicTree: "#" must be a whole level, and the last');
    if (l.includes('+') && l !== '+') throw badRequest('topicTree: "+" must be a whole level');
  });
  return t;
}

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

export class SessionChannels {
  constructor(
    private readonly db: Db,
    private readonly store: SessionKeyStore,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly series: SessionKeySeries,
    /** A new channel's period and overlap when the request names none. */
    private readonly channelDefaults: SessionKeyPeriod,
  ) {}

  async createChannel(input: ChannelInput, ctx: ActorContext): Promise<ChannelView> {
    if (typeof input?.name !== 'string' || !CHANNEL_NAME_RE.test(input.name))
      throw badRequest('name must be 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit');
    const topicTree = checkTopicTree(input.topicTree);
    const periodSeconds = input.periodSeconds ?? Math.round(this.channelDefaults.periodMs / 1000);
    const overlapSeconds = input.overlapSeconds ?? Math.round(this.channelDefaults.overlapMs / 1000);
    if (!Number.isInteger(periodSeconds) || periodSeconds < MIN_PERIOD_SECONDS || periodSeconds > MAX_PERIOD_SECONDS) {
      throw badRequest(`periodSeconds must be an integer from ${MIN_PERIOD_SECONDS} to ${MAX_PERIOD_SECONDS}`);
    }
    if (!Number.isInteger(overlapSeconds) || overlapSeconds < 0 || overlapSeconds >= periodSeconds)
      throw badRequest('overlapSeconds must be an integer from 0 to less than periodSeconds');
    const members = [...new Set(input.members ?? [])];
    const now = this.clock.now();
    const name = input.name;
    await this.db.transaction(async (tx) => {
      await this.checkDevices(tx, members);
      if (!(await this.store.insertChannel(tx, { name, topicTree, periodSeconds, overlapSeconds, createdAt: now, updatedAt: now }))) {
        throw conflict(`a channel named ${name} exists`);
      }
      const added = await this.store.addMembers(tx, name, members, now);
      const [key] = await this.store.insertNext(tx, [
        this.series.newVersion('channel', name, 'created', { periodMs: periodSeconds * 1000, overlapMs: overlapSeconds * 1000 }, now),
      ]);
      await this.audit.append(tx, [
        { ...ctx, action: 'channel.created', targetType: 'channel', targetId: name, details: { topicTree, periodSeconds, overlapSeconds } },
        ...(added.length
          ? [{ ...ctx, action: 'channel.members-added', targetType: 'channel', targetId: name, details: { deviceIds: added } }]
          : []),
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
    return {
      items: page.map((m) => ({ deviceId: m.deviceId, addedAt: m.addedAt.toISOString() })),
      nextCursor: rows.length > limit ? encodeCursor(page[page.length - 1]!.deviceId) : null,
    };
  }

  /** Adds existing devices (not decommissioned) to the channel; members already there are left as they are. */
  async addMembers(name: string, deviceIds: string[], ctx: ActorContext): Promise<{ added: string[]; channel: ChannelView }> {
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
        await this.audit.append(tx, [
          { ...ctx, action: 'channel.members-added', targetType: 'channel', targetId: name, details: { deviceIds: added } },
        ]);
      }
      return added;
    });
    return { added, channel: await this.getChannel(name) };
  }

  /** Removes a member; the channel's key is replaced at once (the removed device knows the valid versions: they are revoked). */
  async removeMember(name: string, deviceId: string, ctx: ActorContext): Promise<{ channel: ChannelView; key: SessionKeyView }> {
    const now = this.clock.now();
    const key = await this.db.transaction(async (tx) => {
      const [channel] = await this.store.lockChannels(tx, [name]);
      if (!channel) throw notFound(`no channel named ${name}`);
      if (!(await this.store.removeMember(tx, name, deviceId))) throw notFound(`device ${deviceId} is not a member of channel ${name}`);
      await this.store.touchChannel(tx, name, now);
      const { created, entries } = await this.series.replaceAtOnce(tx, [channel], now, 'member-removed', ctx, { deviceId });
      await this.audit.append(tx, [
        { ...ctx, action: 'channel.member-removed', targetType: 'channel', targetId: name, details: { deviceId } },
        ...entries,
      ]);
      return created[0]!;
    });
    return { channel: await this.getChannel(name), key: this.series.view(key, now) };
  }

  /**
   * Makes the channel's next version now. The previous one stays valid for the channel's overlap
   * (never longer than it was), or, `immediate`, is revoked at once.
   */
  async rotateChannel(name: string, opts: { immediate?: boolean | undefined }, ctx: ActorContext): Promise<SessionKeyView> {
    const now = this.clock.now();
    const key = await this.db.transaction(async (tx) => {
      const [channel] = await this.store.lockChannels(tx, [name]);
      if (!channel) throw notFound(`no channel named ${name}`);
      if (opts.immediate) {
        const { created, entries } = await this.series.replaceAtOnce(tx, [channel], now, 'manual', ctx, {});
        await this.audit.append(tx, entries);
        return created[0]!;
      }
      const { created, entries } = await this.series.rotate(
        tx,
        'channel',
        [{ owner: name, period: periodOf(channel) }],
        now,
        'manual',
        ctx,
      );
      await this.audit.append(tx, entries);
      return created[0]!;
    });
    return this.series.view(key, now);
  }

  async channelKeys(name: string, q: { cursor?: string | undefined; limit: number }): Promise<Page<SessionKeyView>> {
    await this.getChannel(name);
    return this.series.versions('channel', name, q);
  }

  /** Every id names an existing device that is not decommissioned (NotFound naming the unknown ones). */
  private async checkDevices(tx: Executor, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const bad = ids.filter((id) => typeof id !== 'string' || !DEVICE_ID_RE.test(id));
    if (bad.length) throw badRequest(`not device ids: ${bad.slice(0, 10).map(String).join(', ')}`);
    const found = new Map((await this.store.devices(tx, ids)).map((d) => [d.id, d]));
    const unknown = ids.filter((id) => !found.has(id));
    if (unknown.length)
      throw new DomainError(
        'NotFound',
        `no device with id ${unknown.slice(0, 10).join(', ')}${unknown.length > 10 ? ` (and ${unknown.length - 10} more)` : ''}`,
      );
    const gone = ids.filter((id) => found.get(id)!.status === 'decommissioned');
    if (gone.length) throw conflict(`decommissioned devices cannot join a channel: ${gone.slice(0, 10).join(', ')}`);
    // Channel keys protect the devices' payloads from everyone else, brokers included; and an
    // operator may hold a broker's certificate, so a broker member would hand the operator the key.
    const brokers = ids.filter((id) => found.get(id)!.kind === 'broker');
    if (brokers.length)
      throw badRequest(`brokers cannot join a channel (channel keys are for the devices' payloads): ${brokers.slice(0, 10).join(', ')}`);
  }
}
