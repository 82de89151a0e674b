import { randomBytes } from 'node:crypto';
import type { ActorContext } from '../shared/actor.js';
import { cursorText, encodeCursor, isCanonicalCursor, type Page } from '../shared/page.js';
import type { AuditEntryInput } from '../audit/audit-log.js';
import { seal } from '../ca/envelope.js';
import type { Kek } from '../ca/kek.js';
import type { Clock } from '../shared/clock.js';
import { badRequest } from '../shared/errors.js';
import { newId } from '../shared/ids.js';
import type { Db, Executor } from '../store/db.js';
import type {
  ChannelRow,
  NextSessionKeyRow,
  SessionKeyMetaRow,
  SessionKeyOrigin,
  SessionKeyScope,
  SessionKeyStore,
} from '../store/session-key-store.js';

// The versioned key series both a device and a channel have: making, superseding and revoking versions, and showing them.

/** How long a device's session keys are current, and how long a replaced one stays valid beside its successor. */
export interface SessionKeyPeriod {
  periodMs: number;
  overlapMs: number;
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

export const DEVICE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
const MAX_LIMIT = 500;

export function decodeCursor(c: string | undefined, check: (s: string) => boolean): string | undefined {
  if (c === undefined) return undefined;
  const s = cursorText(c);
  if (!check(s) || !isCanonicalCursor(c, s)) throw badRequest('invalid cursor');
  return s;
}
export function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw badRequest(`limit must be an integer from 1 to ${MAX_LIMIT}`);
  return limit;
}
const VERSION_RE = /^[1-9][0-9]{0,9}$/;

export const periodOf = (c: Pick<ChannelRow, 'periodSeconds' | 'overlapSeconds'>): SessionKeyPeriod => ({
  periodMs: c.periodSeconds * 1000,
  overlapMs: c.overlapSeconds * 1000,
});

export function keyAudit(ctx: ActorContext, action: string, k: SessionKeyMetaRow, details: Record<string, unknown> = {}): AuditEntryInput {
  return {
    actor: ctx.actor,
    requestId: ctx.requestId,
    action,
    targetType: k.scope,
    targetId: k.owner,
    details: {
      keyId: k.id,
      version: k.version,
      origin: k.origin,
      notBefore: k.notBefore.toISOString(),
      rotateAt: k.rotateAt.toISOString(),
      notAfter: k.notAfter.toISOString(),
      ...details,
    },
  };
}

/** One place that makes, supersedes and revokes session-key versions; SessionKeys (devices) and SessionChannels use it. */
export class SessionKeySeries {
  constructor(
    private readonly db: Db,
    private readonly store: SessionKeyStore,
    private readonly kek: Kek,
    private readonly clock: Clock,
  ) {}

  async versions(scope: SessionKeyScope, owner: string, q: { cursor?: string | undefined; limit: number }): Promise<Page<SessionKeyView>> {
    const limit = checkLimit(q.limit);
    const before = decodeCursor(q.cursor, (s) => VERSION_RE.test(s));
    const rows = await this.store.listVersions(this.db, scope, owner, {
      beforeVersion: before === undefined ? undefined : Number(before),
      limit: limit + 1,
    });
    const now = this.clock.now();
    const page = rows.slice(0, limit);
    return {
      items: page.map((k) => this.view(k, now)),
      nextCursor: rows.length > limit ? encodeCursor(String(page[page.length - 1]!.version)) : null,
    };
  }

  /**
   * The next version of each series, the current one (when there is one) superseded: it stays
   * valid until its not_after, cut to now + the overlap when that is sooner (a rotation before the
   * period's end). With `currentIds`, only those versions are replaced — a series whose current
   * version is another (a concurrent rotation got there first) is left alone.
   */
  async rotate(
    tx: Executor,
    scope: SessionKeyScope,
    series: { owner: string; period: SessionKeyPeriod }[],
    now: Date,
    origin: SessionKeyOrigin,
    ctx: ActorContext,
    currentIds?: string[],
  ): Promise<{ created: SessionKeyMetaRow[]; entries: AuditEntryInput[] }> {
    const current = await this.store.current(
      tx,
      scope,
      series.map((s) => s.owner),
    );
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
    const created = await this.store.insertNext(
      tx,
      todo.map((s) => this.newVersion(scope, s.owner, origin, s.period, now)),
    );
    const entries = created.map((k) => {
      const prev = superseded.get(k.owner);
      return prev
        ? keyAudit(ctx, 'session-key.rotated', k, {
            previous: { keyId: prev.id, version: prev.version, notAfter: prev.notAfter.toISOString() },
          })
        : keyAudit(ctx, 'session-key.created', k);
    });
    return { created, entries };
  }

  /** Channels whose valid versions must stop now: revoked (reason), and a new version effective now. */
  async replaceAtOnce(
    tx: Executor,
    channels: ChannelRow[],
    now: Date,
    origin: 'member-revoked' | 'member-removed' | 'manual',
    ctx: ActorContext,
    details: Record<string, unknown>,
  ): Promise<{ created: SessionKeyMetaRow[]; entries: AuditEntryInput[] }> {
    const names = channels.map((c) => c.name);
    const reason = origin === 'manual' ? 'rotated-immediately' : origin;
    const revoked = await this.store.revokeValid(tx, 'channel', names, now, reason);
    const created = await this.store.insertNext(
      tx,
      channels.map((c) => this.newVersion('channel', c.name, origin, periodOf(c), now)),
    );
    const entries = [
      ...revoked.map((k) => keyAudit(ctx, 'session-key.revoked', k, { reason, ...details })),
      ...created.map((k) => keyAudit(ctx, 'session-key.rotated', k, { immediate: true, ...details })),
    ];
    return { created, entries };
  }

  /** A fresh key from the CSPRNG, sealed under the KEK (bound to its id); the plaintext is zeroed. */
  newVersion(scope: SessionKeyScope, owner: string, origin: SessionKeyOrigin, period: SessionKeyPeriod, now: Date): NextSessionKeyRow {
    const id = newId('sk', 16);
    const key = randomBytes(32);
    try {
      const sealed = seal(this.kek, key, id);
      const rotateAt = new Date(now.getTime() + period.periodMs);
      return {
        id,
        scope,
        owner,
        origin,
        kekId: sealed.kekId,
        wrappedDek: sealed.wrappedDek,
        ciphertext: sealed.ciphertext,
        notBefore: now,
        rotateAt,
        notAfter: new Date(rotateAt.getTime() + period.overlapMs),
        createdAt: now,
      };
    } finally {
      key.fill(0);
    }
  }

  view(k: SessionKeyMetaRow, now: Date): SessionKeyView {
    const status: SessionKeyStatus = k.revokedAt
      ? 'revoked'
      : k.notAfter.getTime() <= now.getTime()
        ? 'expired'
        : k.supersededAt === null
          ? 'current'
          : 'previous';
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
