import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { AuditLog } from '../audit/audit-log.js';
import type { ActorContext } from '../shared/actor.js';
import type { Clock } from '../shared/clock.js';
import { secretHash } from '../shared/secrets.js';
import type { Db } from '../store/db.js';
import type { ConsoleSessionStore } from '../store/console-session-store.js';
import { isRole, type ApiKeyService, type Role } from './api-keys.js';

export interface ConsoleSessionSettings {
  /** A session unused this long ends (CONSOLE_SESSION_IDLE_MINUTES). */
  idleMs: number;
  /** A session ends this long after sign-in, used or not (CONSOLE_SESSION_MAX_HOURS). */
  absoluteMs: number;
}

/** What sign-in hands the browser: the session id (the cookie, only here) and the CSRF token (sent back in a header). */
export interface StartedSession {
  sessionId: string;
  csrfToken: string;
  session: SessionView;
}

/** A session as the console sees it: who it acts as and until when. Times are UTC ISO-8601. */
export interface SessionView {
  keyId: string;
  name: string;
  role: Role;
  createdAt: string;
  idleExpiresAt: string;
  expiresAt: string;
}

export interface AuthenticatedSession extends SessionView {
  /** The session's CSRF token, for the console to send back in X-CSRF-Token (it lives in page memory only). */
  csrfToken: string;
  /** Whether `presented` is this session's CSRF token (constant time). */
  csrfMatches(presented: string | undefined): boolean;
}

/** Session ids and CSRF tokens: 32 random bytes in base64url (43 characters). */
const TOKEN_RE = /^[A-Za-z0-9_-]{43}$/;
/** last_seen_at is written at most this often per session: the idle expiry is this coarse. */
const TOUCH_INTERVAL_MS = 15_000;

const newSecret = () => randomBytes(32).toString('base64url');

/**
 * A session's CSRF token: a one-way function of its id, so it is stored nowhere and can be handed
 * again after a reload, while knowing it tells nothing of the id (the HttpOnly cookie).
 */
const csrfOf = (sessionId: string): string =>
  createHash('sha256').update('mqtt-ca/console-csrf/v1\0', 'utf8').update(sessionId, 'utf8').digest('base64url');

/**
 * Web console sessions: an API key exchanged for a session id (a cookie) and a CSRF token. Only the
 * id's SHA-256 is stored (256 random bits: a fast hash is right, as for API keys); the CSRF token is
 * derived from the id.
 * A session acts as its key with the key's role; it ends on sign-out, after `idleMs` unused, at
 * `absoluteMs` after sign-in, and at once when its key is revoked (authentication joins the key).
 * Sign-in and sign-out are audited; the secrets never are.
 */
export class ConsoleSessions {
  constructor(
    private readonly db: Db,
    private readonly store: ConsoleSessionStore,
    private readonly apiKeys: ApiKeyService,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly settings: ConsoleSessionSettings,
  ) {}

  /** A session for this API key, or undefined when the key is not valid (the caller answers 401). */
  async signIn(apiKey: string, ctx: Omit<ActorContext, 'actor'> & { source?: string }): Promise<StartedSession | undefined> {
    const key = await this.apiKeys.authenticate(apiKey);
    if (!key || !isRole(key.role)) return undefined;
    const sessionId = newSecret();
    const csrfToken = csrfOf(sessionId);
    const now = this.clock.now();
    const expiresAt = new Date(now.getTime() + this.settings.absoluteMs);
    await this.db.transaction(async (trx) => {
      // Opportunistic sweep: sign-in is rare, and the table stays as small as the sessions alive.
      await this.store.deleteExpired(trx, now, new Date(now.getTime() - this.settings.idleMs));
      await this.store.insert(trx, {
        idHash: secretHash(sessionId),
        apiKeyId: key.id,
        role: key.role,
        createdAt: now,
        expiresAt,
      });
      await this.audit.append(trx, [
        {
          actor: `api-key:${key.id}`,
          action: 'console.signed-in',
          targetType: 'api-key',
          targetId: key.id,
          requestId: ctx.requestId,
          details: { role: key.role, expiresAt: expiresAt.toISOString(), ...(ctx.source ? { source: ctx.source } : {}) },
        },
      ]);
    });
    return {
      sessionId,
      csrfToken,
      session: this.view(key.id, key.name, key.role, now, now, expiresAt),
    };
  }

  /**
   * The live session this id names, or undefined (unknown, expired by idleness or age, or its key
   * revoked). An expired or orphaned session is deleted on the way.
   */
  async authenticate(sessionId: string): Promise<AuthenticatedSession | undefined> {
    if (typeof sessionId !== 'string' || !TOKEN_RE.test(sessionId)) return undefined;
    const idHash = secretHash(sessionId);
    const row = await this.store.find(this.db, idHash);
    const now = this.clock.now();
    if (
      !row ||
      !isRole(row.role) ||
      now.getTime() >= row.expiresAt.getTime() ||
      now.getTime() - row.lastSeenAt.getTime() >= this.settings.idleMs
    ) {
      await this.store.delete(this.db, idHash);
      return undefined;
    }
    let lastSeen = row.lastSeenAt;
    if (now.getTime() - row.lastSeenAt.getTime() >= TOUCH_INTERVAL_MS) {
      await this.store.touch(this.db, idHash, now);
      lastSeen = now;
    }
    const csrfToken = csrfOf(sessionId);
    return {
      ...this.view(row.apiKeyId, row.keyName, row.role, row.createdAt, lastSeen, row.expiresAt),
      csrfToken,
      csrfMatches: (presented) => {
        if (typeof presented !== 'string' || !TOKEN_RE.test(presented)) return false;
        return timingSafeEqual(Buffer.from(presented, 'utf8'), Buffer.from(csrfToken, 'utf8'));
      },
    };
  }

  /** Ends the session (idempotent); audited when there was one. */
  async signOut(sessionId: string, ctx: Omit<ActorContext, 'actor'>): Promise<void> {
    if (typeof sessionId !== 'string' || !TOKEN_RE.test(sessionId)) return;
    await this.db.transaction(async (trx) => {
      const gone = await this.store.delete(trx, secretHash(sessionId));
      if (!gone) return;
      await this.audit.append(trx, [
        {
          actor: `api-key:${gone.apiKeyId}`,
          action: 'console.signed-out',
          targetType: 'api-key',
          targetId: gone.apiKeyId,
          requestId: ctx.requestId,
          details: { role: gone.role },
        },
      ]);
    });
  }

  private view(keyId: string, name: string, role: Role, createdAt: Date, lastSeen: Date, expiresAt: Date): SessionView {
    const idle = new Date(Math.min(lastSeen.getTime() + this.settings.idleMs, expiresAt.getTime()));
    return {
      keyId,
      name,
      role,
      createdAt: createdAt.toISOString(),
      idleExpiresAt: idle.toISOString(),
      expiresAt: expiresAt.toISOString(),
    };
  }
}
