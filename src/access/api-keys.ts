import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { hashMatches, secretHash } from '../shared/secrets.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { ActorContext } from '../shared/actor.js';
import type { Clock } from '../shared/clock.js';
import { badRequest, conflict, forbidden, notFound } from '../shared/errors.js';
import { newId } from '../shared/ids.js';
import type { Db, Executor } from '../store/db.js';
import type { ApiKeyRecord, ApiKeyStore } from '../store/api-key-store.js';

export const ROLES = ['admin', 'operator', 'provisioner', 'auditor'] as const;
export type Role = (typeof ROLES)[number];
export const isRole = (v: unknown): v is Role => typeof v === 'string' && (ROLES as readonly string[]).includes(v);

/**
 * Which roles sit above which: a key is revoked only by a role at least as high as its own. The
 * three working roles are peers (an operator answering a leak may revoke a provisioner's key);
 * admin is above them all.
 */
export const ROLE_RANK: Readonly<Record<Role, number>> = { admin: 2, operator: 1, provisioner: 1, auditor: 1 };

/**
 * The roles that may hand out device credentials (enrollment tokens, device certificates). Any
 * other path to one (an incident's reissue) takes one of these roles' approval.
 */
export const DEVICE_CREDENTIAL_ROLES: readonly Role[] = ['admin', 'provisioner'];

/** An API key as lists show it: never the secret nor its hash. Times are UTC ISO-8601. */
export interface ApiKeySummary {
  id: string;
  name: string;
  role: Role;
  createdAt: string;
  createdBy: string;
  /** The API key that created it; null when bootstrap, the CLI or the environment did. */
  createdByKey: string | null;
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

/** Who creates a key: the audit actor and, when an API key acts, that key (its lineage is recorded). */
export interface KeyCreator extends ActorContext {
  keyId?: string | undefined;
}

/** Who revokes keys, and with which role: no role revokes a key of a role above it. The CLI acts as admin. */
export interface KeyRevoker extends ActorContext {
  role: Role;
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
    createdByKey: r.createdByKey,
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

function checkActor(ctx: ActorContext): void {
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
  async create(input: { name: string; role: Role }, ctx: KeyCreator): Promise<CreatedApiKey> {
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
        createdByKey: ctx.keyId ?? null,
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
          details: { name, role, ...(ctx.keyId ? { createdByKey: ctx.keyId } : {}) },
        },
      ]);
    });
    return { id, name, role, createdAt: createdAt.toISOString(), key };
  }

  /** All keys, revoked ones included, oldest first. */
  async list(): Promise<ApiKeySummary[]> {
    return (await this.store.list(this.db)).map(toSummary);
  }

  /**
   * Revokes a key. Idempotent: revoking a revoked key changes nothing and writes no second audit entry.
   * Refused (403) for a key of a role above the revoker's, and (409) for the last active admin key:
   * nothing could make another admin key afterwards but a fresh bootstrap.
   */
  async revoke(id: string, ctx: KeyRevoker): Promise<ApiKeySummary> {
    const [summary] = await this.revokeAll([id], ctx);
    return summary!;
  }

  /**
   * Revokes every key named, all or none (the checks of revoke() for each, against the set as a
   * whole: revoking every admin key at once is refused too). In the order given.
   */
  async revokeAll(ids: string[], ctx: KeyRevoker): Promise<ApiKeySummary[]> {
    checkActor(ctx);
    return this.db.transaction(async (trx) => {
      // Active admin keys first, then the targets: revocations lock in one order and never deadlock.
      const admins = await this.store.lockActiveAdmins(trx);
      const records = await this.revocable(trx, ids, ctx.role, admins);
      const at = this.clock.now();
      const out: ApiKeySummary[] = [];
      for (const rec of records) {
        if (rec.revokedAt !== null) {
          out.push(toSummary(rec));
          continue;
        }
        await this.store.revoke(trx, rec.id, at);
        await this.audit.append(trx, [
          {
            actor: ctx.actor,
            action: 'apikey.revoked',
            targetType: 'api-key',
            targetId: rec.id,
            requestId: ctx.requestId,
            details: { name: rec.name, role: rec.role },
          },
        ]);
        out.push(toSummary({ ...rec, revokedAt: at }));
      }
      return out;
    });
  }

  /** What revokeAll() would refuse, without revoking: for dry runs and plans. */
  async checkRevocable(ids: string[], role: Role): Promise<void> {
    const admins = (await this.store.list(this.db)).filter((k) => k.role === 'admin' && k.revokedAt === null).map((k) => k.id);
    await this.revocable(this.db, ids, role, admins);
  }

  private async revocable(db: Executor, ids: string[], role: Role, activeAdmins: string[]): Promise<ApiKeyRecord[]> {
    const records: ApiKeyRecord[] = [];
    for (const id of new Set(ids)) {
      const rec = await this.store.getForUpdate(db, id);
      if (!rec) throw notFound(`api key ${id} not found`);
      records.push(rec);
    }
    const above = records.filter((r) => !isRole(r.role) || ROLE_RANK[r.role] > ROLE_RANK[role]);
    if (above.length)
      throw forbidden(`the ${role} role may not revoke keys of a role above it: ${above.map((r) => `${r.id} (${r.role})`).join(', ')}`);
    const revoking = new Set(records.filter((r) => r.revokedAt === null).map((r) => r.id));
    if (activeAdmins.some((a) => revoking.has(a)) && activeAdmins.every((a) => revoking.has(a))) {
      throw conflict('the last active admin key is never revoked: create another admin key first, then revoke this one');
    }
    return records;
  }

  /** When a key was created and the keys that created it, nearest first (for the two-person rule). */
  async lineage(keyId: string): Promise<{ createdAt: Date; ancestors: string[] } | undefined> {
    return this.store.lineage(this.db, keyId);
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
    ctx: ActorContext,
  ): Promise<{ id: string; created: boolean; revoked: boolean }> {
    if (
      typeof plaintext !== 'string' ||
      !PRESENTABLE_RE.test(plaintext) ||
      (!KEY_RE.test(plaintext) && plaintext.length < MIN_CONFIGURED_KEY_LENGTH)
    ) {
      throw badRequest(`a configured API key must be printable ASCII without spaces, at least ${MIN_CONFIGURED_KEY_LENGTH} characters`);
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
        createdByKey: null,
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
