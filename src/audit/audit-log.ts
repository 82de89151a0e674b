import { createHmac } from 'node:crypto';
import { pgJsonObject, pgText } from '../shared/pg-text.js';
import type { Knex } from 'knex';
import type { Clock } from '../shared/clock.js';
import { badRequest } from '../shared/errors.js';
import { cursorText, encodeCursor, type Page } from '../shared/page.js';
import type { Executor } from '../store/db.js';
import type { AuditFilter, AuditRow, AuditStore } from '../store/audit-store.js';

/** What a service records. `details` must be JSON-serializable and must never carry a secret. */
export interface AuditEntryInput {
  actor: string;
  action: string;
  targetType: string;
  targetId: string;
  requestId?: string | undefined;
  details?: Record<string, unknown>;
}

/** An audit entry as the API shows it. */
export interface AuditEntry {
  seq: number;
  /** UTC ISO-8601 */
  at: string;
  actor: string;
  action: string;
  targetType: string;
  targetId: string;
  requestId: string | null;
  details: Record<string, unknown>;
  /** lowercase hex */
  hash: string;
  /** lowercase hex */
  prevHash: string;
}

export interface AuditListQuery extends AuditFilter {
  /** nextCursor of the previous page */
  cursor?: string | undefined;
  /** 1..1000 */
  limit: number;
}

export type AuditProblem = 'altered' | 'removed' | 'reordered' | 'inserted';

export type AuditVerifyResult =
  | {
      ok: true;
      /** number of entries verified (= the newest seq) */
      entries: number;
      /**
       * The newest entry. The chain cannot show that entries were cut off its END (truncation):
       * compare the head with the checkpoints kept outside the database (audit-anchor.ts) for that.
       */
      head: { seq: number; hash: string } | null;
    }
  | {
      ok: false;
      /** number of entries verified before the first bad one */
      entries: number;
      firstBad: { seq: number; problem: AuditProblem; message: string };
    };

export const AUDIT_LIST_MAX_LIMIT = 1000;
const VERIFY_PAGE_SIZE = 5000;
/** How far verify looks around a bad entry to tell what happened to it (only on failure). */
const DIAGNOSE_WINDOW = 64;
const ZERO_HASH = Buffer.alloc(32);

/** The newest entry of the chain, which the next one is chained on. */
export interface AuditHead {
  seq: number;
  hash: Buffer;
}

/** Hash input fields of one entry (everything except seq and prevHash, which the chain supplies). */
type Hashable = Pick<AuditRow, 'at' | 'actor' | 'action' | 'targetType' | 'targetId' | 'requestId' | 'details'>;

/** JSON with object keys sorted at every level; input must be plain JSON (see toPlainJson). */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(',')}}`;
}

/** What jsonb keeps of the details: this is what is stored and hashed. */
function toPlainJson(details: Record<string, unknown> | undefined): Record<string, unknown> {
  if (details === undefined) return {};
  try {
    return pgJsonObject(details);
  } catch {
    throw new TypeError('audit details must be a JSON object');
  }
}

const seqCursor = (seq: number): string => encodeCursor(String(seq));

function decodeCursor(cursor: string): number {
  const s = cursorText(cursor);
  if (!/^[1-9][0-9]{0,15}$/.test(s) || seqCursor(Number(s)) !== cursor) throw badRequest('invalid cursor');
  return Number(s);
}

/** An entry as the API (and the log stream) shows it. */
export function toEntry(r: AuditRow): AuditEntry {
  return {
    seq: r.seq,
    at: r.at.toISOString(),
    actor: r.actor,
    action: r.action,
    targetType: r.targetType,
    targetId: r.targetId,
    requestId: r.requestId,
    details: r.details,
    hash: r.hash.toString('hex'),
    prevHash: r.prevHash.toString('hex'),
  };
}

function isTransaction(ex: Executor): ex is Knex.Transaction {
  return (ex as Knex.Transaction).isTransaction === true;
}

/** Runs `fn` once the outermost transaction around `tx` has committed (never if it rolls back). */
function afterCommit(tx: Knex.Transaction, fn: () => void): void {
  let outer = tx as Knex.Transaction & { parentTransaction?: Knex.Transaction };
  while (outer.parentTransaction) outer = outer.parentTransaction as typeof outer;
  void outer.executionPromise.then(fn, () => undefined);
}

/** Told of appended entries once they are committed, in the order of their commits (seq may interleave across processes). */
export type CommittedListener = (rows: readonly AuditRow[]) => void;

/** One attempt to write `rows` after `head` by itself; `appended: false` with the head it found when another writer got there first. */
export type AuditWrite = (
  head: AuditHead | undefined,
  rows: AuditRow[],
) => Promise<{ appended: true } | { appended: false; head: AuditHead | undefined }>;

/**
 * The audit log: an append-only, hash-chained table. Each entry's hash is
 * HMAC-SHA256(chainKey, canonical(seq, at, actor, action, targetType, targetId, requestId, details, prevHash)),
 * the first entry's prevHash is 32 zero bytes. The chain is keyed, so someone who can write to the
 * database but does not hold the chain key cannot re-chain the log after editing it.
 */
export class AuditLog {
  /** The head after this instance's last append: what the next one is chained on first. */
  private lastHead: AuditHead | undefined;
  private readonly listeners: CommittedListener[] = [];

  constructor(
    private readonly store: AuditStore,
    private readonly chainKey: Buffer,
    private readonly clock: Clock,
  ) {
    if (chainKey.length < 32) throw new Error('audit chain key must be at least 32 bytes');
  }

  /** `listener` hears of every entry this instance appends, once it is committed (for the log stream and the anchor). */
  onCommitted(listener: CommittedListener): void {
    this.listeners.push(listener);
  }

  private announce(rows: readonly AuditRow[]): void {
    for (const l of this.listeners) {
      try {
        l(rows);
      } catch {
        // A listener's failure is its own: the entries are committed.
      }
    }
  }

  /**
   * Appends entries inside the caller's transaction, so they commit (or roll back) with the change they
   * record, in one round trip when this instance made the last append. Takes a transaction-scoped
   * lock that serializes all appenders until `tx` ends: call it as
   * late as practical in the transaction, and keep the transaction short. `tx` must run at READ COMMITTED
   * (the default); under REPEATABLE READ a concurrent append makes this one fail (duplicate seq), never fork.
   * Given the root knex instead of a transaction, it opens one of its own.
   */
  async append(tx: Executor, entries: AuditEntryInput[]): Promise<void> {
    if (entries.length === 0) return;
    if (!isTransaction(tx)) {
      await tx.transaction((trx) => this.append(trx, entries));
      return;
    }
    // The second try holds the lock the first one took, so the head cannot move again.
    const rows = await this.tryAppend(entries, (head, rows) => this.store.appendAt(tx, head, rows), 2);
    if (!rows) throw new Error('the audit log head moved while the append lock was held');
    if (this.listeners.length) afterCommit(tx, () => this.announce(rows));
  }

  /**
   * Appends entries with a statement of the caller's own: `write(head, rows)` must insert `rows`
   * (chained on `head`), atomically with whatever else it changes, only if the log's head is
   * still `head` — as audit_append (migration 0016) does — and otherwise change nothing and
   * return the head it found. Each try is chained on the head the last one found; after
   * `attempts` tries it gives up and returns false (nothing was written). True once appended.
   * The write must commit by itself (one statement outside a transaction): the entries count as
   * committed when it returns.
   */
  async appendWith(entries: AuditEntryInput[], write: AuditWrite, attempts: number): Promise<boolean> {
    const rows = await this.tryAppend(entries, write, attempts);
    if (rows && this.listeners.length) this.announce(rows);
    return rows !== undefined;
  }

  /** appendWith's tries; the rows written, or undefined when it gave up. */
  private async tryAppend(entries: AuditEntryInput[], write: AuditWrite, attempts: number): Promise<AuditRow[] | undefined> {
    const at = this.clock.now();
    // Everything that can be done without the lock is done before taking it.
    const prepared: Hashable[] = entries.map((e) => {
      for (const f of ['actor', 'action', 'targetType', 'targetId'] as const) {
        if (typeof e[f] !== 'string' || e[f].length === 0) throw new TypeError(`audit entry needs a ${f}`);
      }
      return {
        at,
        actor: pgText(e.actor),
        action: e.action,
        targetType: e.targetType,
        targetId: pgText(e.targetId),
        requestId: e.requestId ?? null,
        details: toPlainJson(e.details),
      };
    });
    // Chained on the last head this instance saw (one round trip when no one else appended since).
    let head = this.lastHead;
    for (let attempt = 0; attempt < attempts; attempt++) {
      let seq = head?.seq ?? 0;
      let prevHash = head?.hash ?? ZERO_HASH;
      const rows: AuditRow[] = prepared.map((p) => {
        seq += 1;
        const hash = this.hashOf(p, seq, prevHash);
        const row: AuditRow = { ...p, seq, prevHash, hash };
        prevHash = hash;
        return row;
      });
      const r = await write(head, rows);
      if (r.appended) {
        // If the write's transaction rolls back later, this head is wrong and the next append pays one more try.
        this.lastHead = { seq, hash: prevHash };
        return rows;
      }
      head = r.head;
    }
    this.lastHead = head;
    return undefined;
  }

  /** Newest first. `nextCursor` is null on the last page. */
  async list(q: AuditListQuery): Promise<Page<AuditEntry>> {
    if (!Number.isInteger(q.limit) || q.limit < 1 || q.limit > AUDIT_LIST_MAX_LIMIT) {
      throw badRequest(`limit must be an integer from 1 to ${AUDIT_LIST_MAX_LIMIT}`);
    }
    for (const [name, d] of [
      ['since', q.since],
      ['until', q.until],
    ] as const) {
      if (d !== undefined && Number.isNaN(d.getTime())) throw badRequest(`${name} is not a valid time`);
    }
    const beforeSeq = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    const rows = await this.store.page({
      beforeSeq,
      limit: q.limit + 1,
      action: q.action,
      targetType: q.targetType,
      targetId: q.targetId,
      actor: q.actor,
      since: q.since,
      until: q.until,
    });
    const more = rows.length > q.limit;
    const page = more ? rows.slice(0, q.limit) : rows;
    const last = page[page.length - 1];
    return { items: page.map(toEntry), nextCursor: more && last ? seqCursor(last.seq) : null };
  }

  /**
   * Walks the whole log in seq order, page by page, and reports the first entry that breaks the chain.
   * Every edit, deletion (except of the newest entries: see `head`), insertion and reordering is caught
   * at the first affected seq; the problem label is the most likely explanation of what was done.
   *
   * With `after` (an entry an earlier verification found intact), only the entries after it are
   * walked: the entry at `after.seq` must still be there with that hash and its content must still
   * hash to it, and the walk chains on from it. What such a check does not see is an edit of an
   * entry before `after.seq` that leaves `after.seq` itself alone: only a walk of the whole log does.
   */
  async verify(db: Executor, opts: { pageSize?: number; after?: AuditHead } = {}): Promise<AuditVerifyResult> {
    const pageSize = opts.pageSize ?? VERIFY_PAGE_SIZE;
    let expected = 1;
    let last: Buffer = ZERO_HASH;
    if (opts.after && opts.after.seq > 0) {
      const k = opts.after.seq;
      const [r] = await this.store.rangeAfter(db, k - 1, 1);
      if (!r || r.seq !== k) return bad(k, 'removed', `seq ${k}, intact when the log was last verified, is missing`);
      if (!r.hash.equals(opts.after.hash) || !this.hashOf(r, k, r.prevHash).equals(r.hash))
        return bad(k, 'altered', `seq ${k} is not the entry found intact when the log was last verified`);
      expected = k + 1;
      last = r.hash;
    }
    for (;;) {
      const rows = await this.store.rangeAfter(db, expected - 1, pageSize);
      for (const r of rows) {
        if (r.seq !== expected) {
          const missing = r.seq - 1 === expected ? `seq ${expected} is` : `seq ${expected}..${r.seq - 1} are`;
          return bad(expected, 'removed', `${missing} missing: the entry after seq ${expected - 1} is seq ${r.seq}`);
        }
        if (!r.prevHash.equals(last) || !this.hashOf(r, r.seq, r.prevHash).equals(r.hash)) {
          return this.diagnose(db, r, last);
        }
        last = r.hash;
        expected += 1;
      }
      if (rows.length < pageSize) break;
    }
    const entries = expected - 1;
    return { ok: true, entries, head: entries === 0 ? null : { seq: entries, hash: last.toString('hex') } };
  }

  /** The hash of entry `seq` (lowercase hex), if there is one: to compare with a checkpoint. */
  async hashAt(db: Executor, seq: number): Promise<string | undefined> {
    return (await this.store.hashAt(db, seq))?.toString('hex');
  }

  /** The newest entry (what a checkpoint of the log records now); undefined for an empty log. */
  head(db: Executor): Promise<AuditHead | undefined> {
    return this.store.head(db);
  }

  /** Explains why `r` (at the expected seq, after an intact prefix ending in hash `last`) is bad. */
  private async diagnose(db: Executor, r: AuditRow, last: Buffer): Promise<AuditVerifyResult> {
    const k = r.seq;
    const selfOk = this.hashOf(r, k, r.prevHash).equals(r.hash);
    if (selfOk) {
      // Authentic under its own prev_hash, which is not the previous entry's hash: made with the chain key
      // on top of a different history (e.g. a restore mixed with another database).
      return bad(k, 'altered', `seq ${k} does not follow seq ${k - 1}: its prev_hash is not the hash of seq ${k - 1}`);
    }
    if (this.hashOf(r, k, last).equals(r.hash)) {
      return bad(k, 'altered', `seq ${k} has had its prev_hash changed`);
    }
    // Where does this row's content belong? (Content and hashes moved together, seq changed.)
    let belongsAt: number | undefined;
    for (let d = 1; d <= DIAGNOSE_WINDOW && belongsAt === undefined; d++) {
      for (const s of [k + d, k - d]) {
        if (s >= 1 && this.hashOf(r, s, r.prevHash).equals(r.hash)) {
          belongsAt = s;
          break;
        }
      }
    }
    // Is the authentic entry k further on? Either with its own hashes (seq numbers swapped, or whole rows
    // swapped), or as content without its hash columns (only the data columns were swapped).
    const ahead = await this.store.rangeAfter(db, k, DIAGNOSE_WINDOW);
    const trueK = ahead.find(
      (x) => (x.prevHash.equals(last) && this.hashOf(x, k, last).equals(x.hash)) || this.hashOf(x, k, last).equals(r.hash),
    );
    if (trueK) {
      if (belongsAt !== undefined && belongsAt > k) {
        return bad(k, 'reordered', `seq ${k} holds the entry of seq ${belongsAt}; the entry of seq ${k} is at seq ${trueK.seq}`);
      }
      if (belongsAt === undefined && this.hashOf(trueK, k, last).equals(r.hash)) {
        return bad(k, 'reordered', `seq ${k} holds another entry's content; the content of seq ${k} is at seq ${trueK.seq}`);
      }
      const what = belongsAt !== undefined ? `a copy of seq ${belongsAt}` : 'not an authentic entry';
      return bad(k, 'inserted', `seq ${k} is ${what}; the authentic seq ${k} follows at seq ${trueK.seq}`);
    }
    if (belongsAt !== undefined && belongsAt > k) {
      return bad(
        k,
        'removed',
        `seq ${k} holds the entry of seq ${belongsAt}: entries ${k}..${belongsAt - 1} were removed and the rest renumbered`,
      );
    }
    if (belongsAt !== undefined) {
      return bad(k, 'altered', `seq ${k} was replaced by a copy of seq ${belongsAt}`);
    }
    return bad(k, 'altered', `seq ${k} was altered: its hash does not match its content`);
  }

  private hashOf(e: Hashable, seq: number, prevHash: Buffer): Buffer {
    const canonical = [
      JSON.stringify('mqtt-ca/audit/v1'),
      JSON.stringify(seq),
      JSON.stringify(e.at.toISOString()),
      JSON.stringify(e.actor),
      JSON.stringify(e.action),
      JSON.stringify(e.targetType),
      JSON.stringify(e.targetId),
      JSON.stringify(e.requestId),
      canonicalJson(e.details),
      JSON.stringify(prevHash.toString('hex')),
    ].join(',');
    return createHmac('sha256', this.chainKey).update(`[${canonical}]`, 'utf8').digest();
  }
}

function bad(seq: number, problem: AuditProblem, message: string): AuditVerifyResult {
  return { ok: false, entries: seq - 1, firstBad: { seq, problem, message } };
}
