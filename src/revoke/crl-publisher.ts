import type { AuditLog } from '../audit/audit-log.js';
import type { IssuerContext, SigningCa } from '../ca/hierarchy.js';
import type { PkiUrls } from '../ca/urls.js';
import { REMOVE_FROM_CRL, encodeCrlEntries, encodeTbsCertList, type CrlEntry } from '../ca/x509/crl.js';
import { encodeCertificateList } from '../ca/x509/encode.js';
import { detached } from '../ca/x509/der.js';
import { performance } from 'node:perf_hooks';
import type { Knex } from 'knex';
import type { Clock } from '../shared/clock.js';
import type { Db } from '../store/db.js';
import {
  partitionKey,
  type CrlHeader,
  type CrlKind,
  type CrlPartition,
  type CrlRow,
  type CrlStore,
  type ServedCrl,
} from '../store/crl-store.js';
import { REASON_CODES, isRevocationReason } from './reasons.js';
import type { RevocationChange, RevocationListener } from './revocation.js';

/** The CAs a CRL (and an OCSP response) is signed by, and how each signs: CaHierarchy in production. */
export interface CrlIssuers {
  /** Active CAs that can sign, with what they issue (intermediates: end entities; roots: CAs). */
  signingCas(): Promise<SigningCa[]>;
  issuer(caId: string): Promise<IssuerContext>;
}

/** Rows fetched per round trip while reading a CRL's snapshot. */
const PAGE = 20_000;
/** How long a build waits before trying again for the build lock another process holds. */
const BUSY_RETRY_MS = 250;
/**
 * A change has the full CRL rebuilt no sooner than this many times the CA's last build took: the
 * end of a build holds the number sequence (signing and storing tens of MB at a million entries),
 * which the deltas of revocations wait for, so at scale builds are spaced out and the deltas
 * carry the changes meanwhile. A small CA's full CRL still follows within about a second.
 */
const REBUILD_SPACING = 10;
/** How long a superseded CRL's body is kept (see pruneSuperseded). */
const SUPERSEDED_GRACE_MS = 15 * 60_000;

export interface CrlPolicy {
  /** nextUpdate - thisUpdate. */
  validityMs: number;
  /** A CRL is replaced once less than this much of its validity is left, whether or not anything changed. */
  refreshBeforeMs: number;
  /** A delta listing more than this has the full CRL rebuilt at once rather than after `rebuildAfterMs`. */
  deltaMaxEntries: number;
  /** How long after a change the full CRL is rebuilt at the least (changes within it share the build); default 1 s. */
  rebuildAfterMs?: number;
  /**
   * CRL shards of an issuing CA (CRL_SHARDS; 0 or absent: its one CRL). A CA publishes its one CRL
   * (shard 0, for certificates issued unsharded) and shards 1..n, n the larger of this and the
   * highest shard any of its certificates names (so lowering it never orphans a certificate).
   */
  shards?: number;
}

/** A partition's CRL as of one full build: the full CRL (the new base) and the delta against it. */
export interface PublishedPair {
  full: CrlRow;
  delta: CrlRow;
}

/** What a full build must achieve: always build, cover the clock value, or replace a missing or due CRL. */
type Need = { kind: 'force' } | { kind: 'covers'; seq: bigint } | { kind: 'due' };

function merge(a: Need, b: Need): Need {
  if (a.kind === 'force' || b.kind === 'force') return { kind: 'force' };
  if (a.kind === 'covers' && b.kind === 'covers') return a.seq >= b.seq ? a : b;
  return a.kind === 'covers' ? a : b;
}

/**
 * Runs of one job, coalesced: a request while a run is in progress shares the next run (which
 * starts after it, so it sees everything committed before the request); at most one is queued.
 */
class Coalesced<N, R> {
  private current?: Promise<R>;
  private next?: { need: N; promise: Promise<R> };

  constructor(
    private readonly run: (need: N) => Promise<R>,
    private readonly merge: (a: N, b: N) => N,
  ) {}

  request(need: N): Promise<R> {
    if (this.next) {
      this.next.need = this.merge(this.next.need, need);
      return this.next.promise;
    }
    const start = (n: N): Promise<R> => {
      const p = this.run(n).finally(() => {
        if (this.current === p) this.current = undefined;
      });
      this.current = p;
      return p;
    };
    if (!this.current) return start(need);
    const next: { need: N; promise: Promise<R> } = { need, promise: Promise.resolve(undefined as R) };
    next.promise = this.current
      .catch(() => undefined)
      .then(() => {
        this.next = undefined;
        return start(next.need);
      });
    this.next = next;
    return next.promise;
  }
}

const BUSY = Symbol('busy');
/** A partition's newest delta entries against one base (see CrlPublisher.deltaEntries). */
interface DeltaEntries {
  baseNumber: bigint;
  /** The base's clock value: with its number, which base this is. */
  baseSeq: bigint;
  /** What the entries cover: every change up to this clock value. */
  coversSeq: bigint;
  entries: Map<string, Uint8Array>;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Audit details name the shard of a sharded CRL (shard 0, the CA's one CRL, as before shards). */
const shardDetail = (p: CrlPartition) => (p.shard === 0 ? {} : { shard: p.shard });
const reasonCode = (reason: string) => (isRevocationReason(reason) ? REASON_CODES[reason] : 0);

/**
 * The CRL pipeline (RFC 5280 §5.2.4: full and delta CRLs share one number sequence per partition,
 * taken under a lock, so numbers only grow, across processes too).
 *
 * A partition is a CA's one CRL (shard 0) or one of its CRL shards (#29 item 3, as Boulder shards
 * them): a sharded certificate's CRL distribution point names its shard, whose CRLs (full and
 * delta) carry its own Issuing Distribution Point and number sequence; everything below is per
 * partition. Root CAs are never sharded.
 *
 * A revocation change publishes only a new delta before the call returns: what changed since the
 * current base's clock value, read through the revocation-clock index, so its cost is the
 * changes', not the revoked set's. The full CRL is rebuilt off the request path, coalesced per
 * CA: shortly after a change, at once when the delta has grown past `deltaMaxEntries`, when it
 * is due (the schedule, or a fetch of a due one), and in the request only when there is none.
 * A build holds the CA's build lock (a PostgreSQL advisory lock: one build per CA across
 * replicas; one that finds it taken waits for it), reads its snapshot in one statement without
 * the sequence lock, and takes that only at the end, to number and store the full CRL as the new
 * base with a fresh delta against it. A failed background build leaves the previous CRL served
 * and is reported to `onError`; CrlWatch raises crl-stale once it comes due.
 */
export class CrlPublisher implements RevocationListener {
  private readonly lanes = new Map<
    string,
    { delta: Coalesced<undefined, CrlRow | undefined>; full: Coalesced<Need, PublishedPair | undefined> }
  >();
  private readonly timers = new Map<string, { partition: CrlPartition; need: Need; timer: NodeJS.Timeout }>();
  private readonly pending = new Set<Promise<unknown>>();
  /** How long each partition's last full build took here, in ms. */
  private readonly buildMs = new Map<string, number>();
  /** How long the deltas published here since the partition's last full build took, in ms. */
  private readonly deltaMs = new Map<string, number>();
  /**
   * Per partition, the entries of the newest delta this process built against its base, encoded
   * and keyed by serial: the next delta against the same base reads only what changed since
   * (`coversSeq`), so a run of deltas costs what changed, not what the delta holds (a bulk run's
   * chunks each publish one). Only the delta lane changes an entry's map; a new base replaces it.
   */
  private readonly deltaEntries = new Map<string, DeltaEntries>();
  private closed = false;

  constructor(
    private readonly db: Db,
    private readonly store: CrlStore,
    private readonly issuers: CrlIssuers,
    private readonly urls: PkiUrls,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly policy: CrlPolicy,
    private readonly onError: (error: unknown, caId: string) => void = () => undefined,
  ) {}

  /**
   * Publishes a delta CRL for each partition the change touched, of each CA that still signs (a
   * retired CA's last CRLs stand), and has the full ones rebuilt.
   */
  async onRevocationChanged({ caIds, serials, moreToCome }: RevocationChange): Promise<void> {
    const signing = new Map((await this.issuers.signingCas()).map((c) => [c.id, c]));
    const touched = await Promise.all(
      [...new Set(caIds)]
        .filter((id) => signing.has(id))
        .map(async (id): Promise<CrlPartition[]> => {
          // The partitions the serials name (shard 0 for an unsharded certificate): one lookup by serial.
          const shards = await this.store.shardsOf(this.db, id, serials);
          // A change that names none of the CA's certificates (a CA's own revocation is its parent's): every partition.
          return shards.length ? shards.map((shard) => ({ caId: id, shard })) : this.partitions(signing.get(id)!);
        }),
    );
    await Promise.all(touched.flat().map((p) => this.changed(p, moreToCome === true)));
  }

  /** A new full CRL (the new base) and delta for the partition, covering everything committed before the call. */
  async publish(caId: string, shard = 0): Promise<PublishedPair> {
    const pair = await this.lane({ caId, shard }).full.request({ kind: 'force' });
    if (!pair) throw new Error(`the CRL publisher of CA ${caId} is closed`);
    return pair;
  }

  /** The full CRL to serve: the newest; a due one is served while its replacement is built in the background. */
  current(caId: string, shard = 0): Promise<ServedCrl | CrlHeader | undefined> {
    return this.currentOf({ caId, shard }, 'full', () => this.publishes({ caId, shard }));
  }

  /** The newest delta CRL. */
  currentDelta(caId: string, shard = 0): Promise<ServedCrl | CrlHeader | undefined> {
    return this.currentOf({ caId, shard }, 'delta', () => this.publishes({ caId, shard }));
  }

  /** Every signing CA's current full CRLs, each shard's too (built where missing): the bundle brokers load. */
  async all(): Promise<CrlHeader[]> {
    const partitions = await this.allPartitions();
    const rows = await Promise.all(partitions.map((p) => this.currentOf(p, 'full', async () => true)));
    return rows.filter((r): r is CrlHeader => r !== undefined);
  }

  /**
   * Rebuilds, and waits for, the full CRL of every partition of every signing CA whose CRL is
   * missing or due: what the scheduled refresh runs, so a CRL is replaced well before its
   * nextUpdate even when nobody fetches it. One failure does not stop the others; each result
   * says what that partition serves now.
   */
  async refreshDue(): Promise<{ caId: string; shard: number; crl: CrlHeader | undefined; error?: unknown }[]> {
    const partitions = await this.allPartitions();
    return Promise.all(
      partitions.map(async (p) => {
        try {
          const latest = await this.store.latest(this.db, p, 'full');
          if (latest && !this.due(latest)) return { ...p, crl: latest };
          return {
            ...p,
            crl: (await this.lane(p).full.request({ kind: 'due' }))?.full ?? (await this.store.latest(this.db, p, 'full')),
          };
        } catch (error) {
          return { ...p, crl: await this.store.latest(this.db, p, 'full').catch(() => undefined), error };
        }
      }),
    );
  }

  /**
   * Every partition of every signing CA with its newest full and delta CRL as stored, building
   * nothing (what the revocation health page reads).
   */
  async published(): Promise<{ caId: string; shard: number; full: CrlHeader | undefined; delta: CrlHeader | undefined }[]> {
    const partitions = await this.allPartitions();
    return Promise.all(
      partitions.map(async (p) => ({
        ...p,
        full: await this.store.latest(this.db, p, 'full'),
        delta: await this.store.latest(this.db, p, 'delta'),
      })),
    );
  }

  /**
   * Deletes superseded CRLs published more than `SUPERSEDED_GRACE_MS` ago (a reader that just
   * looked one up still finds its body); returns how many.
   */
  pruneSuperseded(): Promise<number> {
    return this.store.pruneSuperseded(this.db, new Date(this.clock.now().getTime() - SUPERSEDED_GRACE_MS));
  }

  /** The body of a published CRL. */
  der(crl: CrlPartition & { crlNumber: bigint }): Promise<Buffer | undefined> {
    return this.store.der(this.db, crl);
  }

  /** A signing CA's partitions: its one CRL (shard 0) and, for an issuing CA, its shards. */
  async partitions(ca: Pick<SigningCa, 'id' | 'scope'>): Promise<CrlPartition[]> {
    if (ca.scope === 'ca') return [{ caId: ca.id, shard: 0 }];
    const highest = Math.max(this.policy.shards ?? 0, await this.store.highestShard(this.db, ca.id));
    return Array.from({ length: highest + 1 }, (_, shard) => ({ caId: ca.id, shard }));
  }

  private async allPartitions(): Promise<CrlPartition[]> {
    const cas = await this.issuers.signingCas();
    return (await Promise.all(cas.map((c) => this.partitions(c)))).flat();
  }

  /** Resolves once no background build is scheduled or running (those scheduled for later start now). */
  async settled(): Promise<void> {
    while (this.timers.size > 0 || this.pending.size > 0) {
      for (const [key, t] of [...this.timers]) {
        clearTimeout(t.timer);
        this.timers.delete(key);
        this.start(t.partition, t.need);
      }
      await Promise.allSettled([...this.pending]);
    }
  }

  /** Starts no more background builds and waits for the running ones. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t.timer);
    this.timers.clear();
    await Promise.allSettled([...this.pending]);
  }

  private lane(p: CrlPartition) {
    const key = partitionKey(p);
    let l = this.lanes.get(key);
    if (!l) {
      const partition = { caId: p.caId, shard: p.shard };
      l = {
        delta: new Coalesced<undefined, CrlRow | undefined>(
          () => this.deltaNow(partition),
          () => undefined,
        ),
        full: new Coalesced<Need, PublishedPair | undefined>((need) => this.fullNow(partition, need), merge),
      };
      this.lanes.set(key, l);
    }
    return l;
  }

  private async changed(p: CrlPartition, moreToCome: boolean): Promise<void> {
    const key = partitionKey(p);
    const t0 = performance.now();
    const delta = await this.lane(p).delta.request(undefined);
    this.deltaMs.set(key, (this.deltaMs.get(key) ?? 0) + (performance.now() - t0));
    // No base to compute a delta against: the first full CRL is built in the request.
    if (!delta) {
      await this.lane(p).full.request({ kind: 'force' });
      return;
    }
    const afterMs = Math.max(this.policy.rebuildAfterMs ?? 1_000, REBUILD_SPACING * (this.buildMs.get(key) ?? 0));
    // A bulk run's chunk with more to come: a big delta forces the rebuild only once the deltas
    // published since the base have cost as much as a full build (then one is the cheaper), so a
    // run neither rebuilds a growing CRL every chunk nor lets its deltas grow without bound.
    const big =
      delta.entries > this.policy.deltaMaxEntries && (!moreToCome || (this.deltaMs.get(key) ?? 0) >= (this.buildMs.get(key) ?? 0));
    this.background(p, { kind: 'covers', seq: delta.coversSeq! }, big ? 0 : afterMs);
  }

  /** A full build later (changes until then share it), or at once. */
  private background(p: CrlPartition, need: Need, afterMs: number): void {
    if (this.closed) return;
    const key = partitionKey(p);
    const t = this.timers.get(key);
    if (t) {
      t.need = merge(t.need, need);
      if (afterMs > 0) return;
      clearTimeout(t.timer);
      this.timers.delete(key);
      need = t.need;
    }
    if (afterMs <= 0) {
      this.start(p, need);
      return;
    }
    const entry = {
      partition: p,
      need,
      timer: setTimeout(() => {
        if (this.timers.get(key) !== entry) return;
        this.timers.delete(key);
        this.start(p, entry.need);
      }, afterMs),
    };
    entry.timer.unref();
    this.timers.set(key, entry);
  }

  private start(p: CrlPartition, need: Need): void {
    const run: Promise<unknown> = this.lane(p)
      .full.request(need)
      .catch((e: unknown) => this.onError(e, p.caId))
      .finally(() => this.pending.delete(run));
    this.pending.add(run);
  }

  /** The CA signs and the shard is one of its partitions. */
  private async publishes(p: CrlPartition): Promise<boolean> {
    const ca = (await this.issuers.signingCas()).find((c) => c.id === p.caId);
    if (!ca) return false;
    return p.shard === 0 || (await this.partitions(ca)).length > p.shard;
  }

  /** `publishes` is asked only when a CRL has to be built. */
  private async currentOf(p: CrlPartition, kind: CrlKind, publishes: () => Promise<boolean>): Promise<ServedCrl | CrlHeader | undefined> {
    const latest = await this.served(p, kind);
    const full = kind === 'full' ? latest : await this.served(p, 'full');
    if (latest && full) {
      if (this.due(full) && (await publishes())) this.background(p, { kind: 'due' }, 0);
      return latest;
    }
    if (!(await publishes())) return latest;
    const pair = await this.lane(p).full.request(full ? { kind: 'force' } : { kind: 'due' });
    return pair?.[kind] ?? (await this.store.latest(this.db, p, kind));
  }

  /**
   * The newest CRL of a partition and kind, read for the endpoints (one prepared statement per
   * request). Sharing one read among concurrent requests was tried and taken out: it let CRLs be
   * published that the revocation API's dry run must not cause (test/e2e/revocation-api.test.ts).
   */
  private served(p: CrlPartition, kind: CrlKind): Promise<ServedCrl | undefined> {
    return this.store.served(this.db, p, kind);
  }

  private due(crl: CrlHeader): boolean {
    return crl.nextUpdate.getTime() - this.clock.now().getTime() < this.policy.refreshBeforeMs;
  }

  private async signer({ caId, shard }: CrlPartition) {
    const ca = (await this.issuers.signingCas()).find((c) => c.id === caId);
    if (!ca) throw new Error(`CA ${caId} does not sign CRLs (unknown or not active)`);
    const issuer = await this.issuers.issuer(caId);
    const sign = async (tbs: Uint8Array) =>
      Buffer.from(encodeCertificateList(tbs, issuer.signer.signatureAlgorithm, await issuer.signer.sign(tbs)));
    const common = (thisUpdate: Date) => ({
      signatureAlgorithm: issuer.signer.signatureAlgorithm,
      issuer: issuer.subjectDer,
      thisUpdate,
      nextUpdate: new Date(thisUpdate.getTime() + this.policy.validityMs),
      authorityKeyId: issuer.keyId,
      distributionPoint: this.urls.crl(caId, shard),
      scope: ca.scope,
    });
    return { sign, common };
  }

  /** thisUpdate never goes backwards, even if the clock does. */
  private thisUpdate(...after: (CrlHeader | undefined)[]): Date {
    const now = this.clock.now();
    return after.reduce<Date>((t, c) => (c && c.thisUpdate > t ? c.thisUpdate : t), now);
  }

  /**
   * Reads what changed since `sinceSeq` into `entries` (a serial's newest state replaces what it
   * held) and returns the clock value it covers.
   */
  private async readDelta(tx: Knex.Transaction, p: CrlPartition, sinceSeq: bigint, at: Date, entries: Map<string, Uint8Array>) {
    let coversSeq: bigint | undefined;
    for await (const page of this.store.snapshot(tx, p, at, { sinceSeq }, PAGE)) {
      for (const r of page) {
        if (r.part === 'epoch') {
          coversSeq = r.seq;
          continue;
        }
        const e: CrlEntry =
          r.reason !== null && r.revokedAt !== null
            ? { serial: r.serial, revokedAt: r.revokedAt, reasonCode: reasonCode(r.reason), invalidityDate: r.invalidityDate }
            : // Released from hold: RFC 5280 gives removeFromCRL no revocation date of its own; the change's time serves.
              { serial: r.serial, revokedAt: at, reasonCode: REMOVE_FROM_CRL };
        // Kept across deltas: detached, so that an entry doesn't pin a pool slab of 8 KB.
        entries.set(r.serial.toString('hex'), detached(encodeCrlEntries([e])));
      }
    }
    if (coversSeq === undefined) throw new Error('the CRL snapshot did not read the revocation clock');
    return coversSeq;
  }

  /** Remembers a delta's entries for the next delta against the same base, unless a newer base is known. */
  private keepDeltaEntries(p: CrlPartition, kept: DeltaEntries): void {
    const key = partitionKey(p);
    const cur = this.deltaEntries.get(key);
    if (!cur || cur.baseNumber < kept.baseNumber) this.deltaEntries.set(key, kept);
  }

  /** A new delta against the current base, or undefined when there is no base to compute one against. */
  private async deltaNow(p: CrlPartition): Promise<CrlRow | undefined> {
    const { sign, common } = await this.signer(p);
    return this.db.transaction(async (tx) => {
      const lastNumber = await this.store.lockSequence(tx, p);
      const base = await this.store.currentBase(tx, p);
      if (!base || base.coversSeq === null) return undefined;
      const thisUpdate = this.thisUpdate(base, await this.store.latest(tx, p, 'delta'));
      // The last delta's entries against this very base (same number and clock value), or a fresh read since the base.
      const known = this.deltaEntries.get(partitionKey(p));
      const same = known && known.baseNumber === base.crlNumber && known.baseSeq === base.coversSeq ? known : undefined;
      const kept: DeltaEntries = same ?? {
        baseNumber: base.crlNumber,
        baseSeq: base.coversSeq,
        coversSeq: base.coversSeq,
        entries: new Map(),
      };
      kept.coversSeq = await this.readDelta(tx, p, kept.coversSeq, thisUpdate, kept.entries);
      if (!same) this.keepDeltaEntries(p, kept);
      const d = { coversSeq: kept.coversSeq, count: kept.entries.size };
      const c = common(thisUpdate);
      const crlNumber = lastNumber + 1n;
      const der = await sign(encodeTbsCertList({ ...c, crlNumber, revoked: [...kept.entries.values()], baseCrlNumber: base.crlNumber }));
      const delta: CrlRow = {
        ...p,
        kind: 'delta',
        crlNumber,
        thisUpdate,
        nextUpdate: c.nextUpdate,
        entries: d.count,
        baseNumber: base.crlNumber,
        coversSeq: d.coversSeq,
        isBase: false,
        der,
      };
      await this.store.insert(tx, delta);
      await this.audit.append(tx, [
        {
          actor: 'crl-publisher',
          action: 'crl.delta-published',
          targetType: 'ca',
          targetId: p.caId,
          details: {
            ...shardDetail(p),
            deltaCrlNumber: crlNumber.toString(),
            deltaEntries: d.count,
            baseCrlNumber: base.crlNumber.toString(),
            thisUpdate: thisUpdate.toISOString(),
          },
        },
      ]);
      return delta;
    });
  }

  /** A full build under the CA's build lock, waiting while another process holds it; undefined when `need` turned out met. */
  private async fullNow(p: CrlPartition, need: Need): Promise<PublishedPair | undefined> {
    const { sign, common } = await this.signer(p);
    for (;;) {
      const started = performance.now();
      let kept: DeltaEntries | undefined;
      const r = await this.db.transaction(async (tx): Promise<PublishedPair | undefined | typeof BUSY> => {
        if (!(await this.store.tryBuildLock(tx, p))) return BUSY;
        const lastFull = await this.store.latest(tx, p, 'full');
        if (
          lastFull &&
          need.kind !== 'force' &&
          !this.due(lastFull) &&
          (need.kind === 'due' || (lastFull.coversSeq !== null && lastFull.coversSeq >= need.seq))
        )
          return undefined;
        const thisUpdate = this.thisUpdate(lastFull);
        let coversSeq: bigint | undefined;
        const full: Uint8Array[] = [];
        let fullCount = 0;
        for await (const page of this.store.snapshot(tx, p, thisUpdate, { full: true }, PAGE)) {
          const f: CrlEntry[] = [];
          for (const r of page) {
            if (r.part === 'epoch') coversSeq = r.seq;
            else if (r.part === 'full')
              f.push({ serial: r.serial, revokedAt: r.revokedAt, reasonCode: reasonCode(r.reason), invalidityDate: r.invalidityDate });
          }
          full.push(encodeCrlEntries(f));
          fullCount += f.length;
        }
        if (coversSeq === undefined) throw new Error('the CRL snapshot did not read the revocation clock');

        // Only now the sequence: deltas published meanwhile took their numbers; the fresh delta covers what they listed.
        const lastNumber = await this.store.lockSequence(tx, p);
        const fullNumber = lastNumber + 1n;
        const deltaNumber = lastNumber + 2n;
        const deltaThisUpdate = this.thisUpdate(lastFull, await this.store.latest(tx, p, 'delta'), { thisUpdate } as CrlHeader);
        const fresh: DeltaEntries = { baseNumber: fullNumber, baseSeq: coversSeq, coversSeq, entries: new Map() };
        fresh.coversSeq = await this.readDelta(tx, p, coversSeq, deltaThisUpdate, fresh.entries);
        kept = fresh;
        const d = { coversSeq: fresh.coversSeq, count: fresh.entries.size, parts: [...fresh.entries.values()] };
        const fc = common(thisUpdate);
        const dc = common(deltaThisUpdate);
        const [fullDer, deltaDer] = await Promise.all([
          sign(encodeTbsCertList({ ...fc, crlNumber: fullNumber, revoked: full, freshestCrl: this.urls.deltaCrl(p.caId, p.shard) })),
          sign(encodeTbsCertList({ ...dc, crlNumber: deltaNumber, revoked: d.parts, baseCrlNumber: fullNumber })),
        ]);
        const pair: PublishedPair = {
          full: {
            ...p,
            kind: 'full',
            thisUpdate,
            nextUpdate: fc.nextUpdate,
            coversSeq,
            crlNumber: fullNumber,
            entries: fullCount,
            baseNumber: null,
            isBase: true,
            der: fullDer,
          },
          delta: {
            ...p,
            kind: 'delta',
            thisUpdate: deltaThisUpdate,
            nextUpdate: dc.nextUpdate,
            coversSeq: d.coversSeq,
            crlNumber: deltaNumber,
            entries: d.count,
            baseNumber: fullNumber,
            isBase: false,
            der: deltaDer,
          },
        };
        await this.store.insert(tx, pair.full);
        await this.store.insert(tx, pair.delta);
        await this.audit.append(tx, [
          {
            actor: 'crl-publisher',
            action: 'crl.published',
            targetType: 'ca',
            targetId: p.caId,
            details: {
              ...shardDetail(p),
              crlNumber: fullNumber.toString(),
              entries: fullCount,
              deltaCrlNumber: deltaNumber.toString(),
              deltaEntries: d.count,
              baseCrlNumber: fullNumber.toString(),
              thisUpdate: thisUpdate.toISOString(),
              nextUpdate: fc.nextUpdate.toISOString(),
            },
          },
        ]);
        return pair;
      });
      if (r && r !== BUSY) {
        this.buildMs.set(partitionKey(p), performance.now() - started);
        this.deltaMs.set(partitionKey(p), 0);
        // Only once committed: a base rolled back may see its number taken again by another.
        if (kept) this.keepDeltaEntries(p, kept);
      }
      if (r !== BUSY) return r;
      if (this.closed) return undefined;
      await sleep(BUSY_RETRY_MS);
    }
  }
}
