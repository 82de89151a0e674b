import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { hashMatches, secretHash } from '../shared/secrets.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { Clock } from '../shared/clock.js';
import { badRequest, conflict, notFound } from '../shared/errors.js';
import { newId } from '../shared/ids.js';
import type { Db } from '../store/db.js';
import type { ApiKeyRecord, ApiKeyStore } from '../store/api-key-store.js';

export const ROLES = ['admin', 'operator', 'provisioner', 'auditor'] as const;
export type Role = (typeof ROLES)[number];
export const isRole = (v: unknown): v is Role => typeof v === 'string' && (ROLES as readonly string[]).includes(v);

/** An API key as lists show it: never the secret nor its hash. Times are UTC ISO-8601. */
export interface ApiKeySummary {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  createdBy: string;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

/** The answer to create: the only time the plaintext key is ever shown. */
export interface CreatedApiKey {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  key: string;
}

export interface AuthenticatedKey {
  id: string;
  name: string;
  role: Role;
}

export interface AuditContext {
  actor: string;
  requestId?: string | undefined;
}

/**
 * Issued keys look like `mqca_<id>_<secret>`: id `ak_` + 20 hex digits, secret 32 random bytes in base64url
 * (43 characters, which may themselves contain `_` and `-`). Carrying the id lets authentication find the
 * row by primary key instead of by hash.
 */
const KEY_RE = /^mqca_(ak_[0-9a-f]{20})_([A-Za-z0-9_-]{43})$/;
/** What may be presented at all: printable ASCII without spaces, bounded. Length and charset are not secret. */
const PRESENTABLE_RE = /^[\x21-\x7e]{1,512}$/;
/** A configured key (ADMIN_API_KEY) that is not in the issued format must be at least this long. */
export const MIN_CONFIGURED_KEY_LENGTH = 32;
const LAST_USED_INTERVAL_MS = 60_000;
const NAME_MAX = 100;

const keyHash = secretHash; // see src/shared/secrets.ts for why a fast hash is right for these

/**
 * The row id for a presented key: the id inside an issued-format key; otherwise (a configured key in any
 * other format) an id derived from its hash, so the same configured key always maps to the same row.
 */
function keyIdOf(presented: string): string {
  const m = KEY_RE.exec(presented);
  if (m?.[1]) return m[1];
  const h = createHash('sha256').update('mqtt-ca/api-key-id/v1\0', 'utf8').update(presented, 'utf8').digest('hex');
  return `ak_${h.slice(0, 20)}`;
}

/** The id an issued-format key names (not a secret), for the records of a failed authentication. */
export const issuedKeyId = (presented: string): string | undefined => KEY_RE.exec(presented)?.[1];

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString());

function toSummary(r: ApiKeyRecord): ApiKeySummary {
  return {
    id: r.id,
    name: r.name,
    role: r.role as Role, // the table's check constraint admits only ROLES
    createdAt: r.createdAt.toISOString(),
    createdBy: r.createdBy,
    revokedAt: iso(r.revokedAt),
    lastUsedAt: iso(r.lastUsedAt),
  };
}

function checkName(name: unknown): string {
  if (typeof name !== 'string') throw badRequest('name is required');
  const n = name.trim();
  // eslint-disable-next-line no-control-regex
  if (n.length === 0 || n.length > NAME_MAX || /[\x00-\x1f\x7f]/.test(n)) {
    throw badRequest(`name must be 1 to ${NAME_MAX} printable characters`);
  }
  return n;
}

function checkRole(role: unknown): Role {
  if (!isRole(role)) throw badRequest(`role must be one of ${ROLES.join(', ')}`);
  return role;
}

function checkActor(ctx: AuditContext): void {
  if (typeof ctx.actor !== 'string' || ctx.actor.length === 0) throw new TypeError('audit context needs an actor');
}

/** API keys for the REST API: create, list, revoke, authenticate. Every change is audited in its transaction. */
export class ApiKeyService {
  constructor(
    private readonly db: Db,
    private readonly store: ApiKeyStore,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
  ) {}

  /** Creates a key. The returned `key` is the only copy of the plaintext: only its hash is stored. */
  async create(input: { name: string; role: Role }, ctx: AuditContext): Promise<CreatedApiKey> {
    const name = checkName(input.name);
    const role = checkRole(input.role);
    checkActor(ctx);
    const id = newId('ak'); // ak_ + 20 hex digits, as KEY_RE expects
    const key = `mqca_${id}_${randomBytes(32).toString('base64url')}`;
    const createdAt = this.clock.now();
    await this.db.transaction(async (trx) => {
      const inserted = await this.store.insert(trx, {
        id,
        name,
        role,
        secretHash: keyHash(key),
        createdBy: ctx.actor,
        createdAt,
      });
      if (!inserted) throw conflict(`api key ${id} already exists`); // 80 random bits: not expected
      await this.audit.append(trx, [
        {
          actor: ctx.actor,
          action: 'apikey.created',
          targetType: 'api-key',
          targetId: id,
          requestId: ctx.requestId,
          details: { name, role },
        },
      ]);
    });
    return { id, name, role, createdAt: createdAt.toISOString(), key };
  }

  /** All keys, revoked ones included, oldest first. */
  async list(): Promise<ApiKeySummary[]> {
    return (await this.store.list(this.db)).map(toSummary);
  }

  /** Revokes a key. Idempotent: revoking a revoked key changes nothing and writes no second audit entry. */
  async revoke(id: string, ctx: AuditContext): Promise<ApiKeySummary> {
    checkActor(ctx);
    return this.db.transaction(async (trx) => {
      const rec = await this.store.getForUpdate(trx, id);
      if (!rec) throw notFound(`api key ${id} not found`);
      if (rec.revokedAt !== null) return toSummary(rec);
      const at = this.clock.now();
      await this.store.revoke(trx, id, at);
      await this.audit.append(trx, [
        {
          actor: ctx.actor,
          action: 'apikey.revoked',
          targetType: 'api-key',
          targetId: id,
          requestId: ctx.requestId,
          details: { name: rec.name, role: rec.role },
        },
      ]);
      return toSummary({ ...rec, revokedAt: at });
    });
  }

  /**
   * The key a request presents, or undefined when it is malformed, unknown, wrong or revoked (the caller
   * answers all of these alike). Unknown ids and wrong secrets take the same path: one lookup by id, one
   * constant-time comparison. last_used_at is written at most once a minute per key.
   */
  async authenticate(presented: string): Promise<AuthenticatedKey | undefined> {
    if (typeof presented !== 'string' || !PRESENTABLE_RE.test(presented)) return undefined;
    const id = keyIdOf(presented);
    const row = await this.store.credential(this.db, id);
    if (!hashMatches(presented, row?.secretHash) || !row || row.revokedAt !== null || !isRole(row.role)) return undefined;
    const now = this.clock.now();
    if (row.lastUsedAt === null || now.getTime() - row.lastUsedAt.getTime() >= LAST_USED_INTERVAL_MS) {
      await this.store.touch(this.db, id, now, new Date(now.getTime() - LAST_USED_INTERVAL_MS));
    }
    return { id: row.id, name: row.name, role: row.role };
  }

  /**
   * Registers a given plaintext key (ADMIN_API_KEY from the environment) unless it is already registered.
   * Keys in the issued format keep their id; any other key (printable ASCII, at least 32 characters) gets an
   * id derived from its hash. A key that was revoked stays revoked (`revoked: true`; the caller should warn):
   * to recover, configure a different key. An issued-format key whose id exists with another secret is a Conflict.
   */
  async ensureKey(
    plaintext: string,
    role: Role,
    name: string,
    ctx: AuditContext,
  ): Promise<{ id: string; created: boolean; revoked: boolean }> {
    if (
      typeof plaintext !== 'string' ||
      !PRESENTABLE_RE.test(plaintext) ||
      (!KEY_RE.test(plaintext) && plaintext.length < MIN_CONFIGURED_KEY_LENGTH)
    ) {
      throw badRequest(
        `a configured API key must be printable ASCII without spaces, at least ${MIN_CONFIGURED_KEY_LENGTH} characters`,
      );
    }
    const checkedRole = checkRole(role);
    const checkedName = checkName(name);
    checkActor(ctx);
    const id = keyIdOf(plaintext);
    const digest = keyHash(plaintext);
    const existing = (c: { secretHash: Buffer; revokedAt: Date | null }) => {
      if (c.secretHash.length !== digest.length || !timingSafeEqual(c.secretHash, digest)) {
        throw conflict(`api key ${id} exists with a different secret`);
      }
      return { id, created: false, revoked: c.revokedAt !== null };
    };
    return this.db.transaction(async (trx) => {
      const found = await this.store.credential(trx, id);
      if (found) return existing(found);
      const inserted = await this.store.insert(trx, {
        id,
        name: checkedName,
        role: checkedRole,
        secretHash: digest,
        createdBy: ctx.actor,
        createdAt: this.clock.now(),
      });
      if (!inserted) {
        // Another process registered it between our read and our insert.
        const raced = await this.store.credential(trx, id);
        if (!raced) throw conflict(`api key ${id} could not be registered`);
        return existing(raced);
      }
      await this.audit.append(trx, [
        {
          actor: ctx.actor,
          action: 'apikey.created',
          targetType: 'api-key',
          targetId: id,
          requestId: ctx.requestId,
          details: { name: checkedName, role: checkedRole, source: 'configured' },
        },
      ]);
      return { id, created: true, revoked: false };
    });
  }
}
