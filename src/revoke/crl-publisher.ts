import type { AuditLog } from '../audit/audit-log.js';
import type { IssuerContext } from '../ca/hierarchy.js';
import type { KeyAlgorithm } from '../ca/keys.js';
import type { PkiUrls } from '../ca/urls.js';
import { REMOVE_FROM_CRL, encodeCrlEntries, encodeTbsCertList, type CrlEntry } from '../ca/x509/crl.js';
import { encodeCertificateList } from '../ca/x509/encode.js';
import type { Clock } from '../shared/clock.js';
import type { Db } from '../store/db.js';
import type { CrlHeader, CrlKind, CrlRow, CrlStore } from '../store/crl-store.js';
import { REASON_CODES, isRevocationReason } from './reasons.js';
import type { RevocationChange, RevocationListener } from './revocation.js';

/** The CAs a CRL is published for, and how each signs. */
export interface CrlIssuers {
  /** Active CAs that can sign, with what they issue (intermediates: end entities; roots: CAs). */
  signingCas(): Promise<{ id: string; scope: 'user' | 'ca'; keyAlgorithm: KeyAlgorithm }[]>;
  issuer(caId: string): Promise<IssuerContext>;
}

/** Rows fetched per round trip while reading a CRL's snapshot. */
const PAGE = 20_000;

export interface CrlPolicy {
  /** nextUpdate - thisUpdate. */
  validityMs: number;
  /** A CRL is replaced once less than this much of its validity is left, whether or not anything changed. */
  refreshBeforeMs: number;
  /** A full CRL becomes the new base of the delta CRLs once the current base is this old. */
  deltaBaseMs: number;
}

/** A CA's CRL as of one publish: the full CRL and the delta that goes with it. */
export interface PublishedPair {
  full: CrlRow;
  delta: CrlRow;
}

const reasonCode = (reason: string) => (isRevocationReason(reason) ? REASON_CODES[reason] : 0);

/**
 * The CRL pipeline: one snapshot of a CA's revocations → a full CRL and a delta CRL (RFC 5280
 * §5.2.4) against the current base → signed → stored together, with CRL numbers one and two
 * above the last (the two kinds share one sequence, taken under a lock on the CA's row, so the
 * numbers only grow, across processes too). The full CRL names the delta's URL (Freshest CRL);
 * the delta lists what changed since its base: new revocations, holds made permanent, and
 * removeFromCRL for certificates released from hold. A full CRL becomes the new base once the
 * old one is `deltaBaseMs` old, so deltas stay small. Publishing is coalesced per CA: requests
 * that arrive while one runs share the next run, which covers every change committed before they asked.
 */
export class CrlPublisher implements RevocationListener {
  private readonly runs = new Map<string, { current?: Promise<PublishedPair>; next?: Promise<PublishedPair> }>();

  constructor(
    private readonly db: Db,
    private readonly store: CrlStore,
    private readonly issuers: CrlIssuers,
    private readonly urls: PkiUrls,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly policy: CrlPolicy,
  ) {}

  /** Republishes the CRLs of the CAs that still sign (a retired CA's last CRL stands). */
  async onRevocationChanged({ caIds }: RevocationChange): Promise<void> {
    const signing = new Set((await this.issuers.signingCas()).map((c) => c.id));
    await Promise.all([...new Set(caIds)].filter((id) => signing.has(id)).map((id) => this.publish(id)));
  }

  /** A new full and delta CRL for the CA, covering everything committed before the call. */
  publish(caId: string): Promise<PublishedPair> {
    const s = this.runs.get(caId) ?? {};
    this.runs.set(caId, s);
    if (s.next) return s.next;
    const start = (): Promise<PublishedPair> => {
      s.current = this.publishNow(caId).finally(() => {
        s.current = undefined;
      });
      return s.current;
    };
    if (!s.current) return start();
    s.next = s.current
      .catch(() => undefined)
      .then(() => {
        s.next = undefined;
        return start();
      });
    return s.next;
  }

  /** The full CRL to serve: the newest, replaced first when there is none or it is within refreshBeforeMs of its nextUpdate. */
  current(caId: string): Promise<CrlHeader | undefined> {
    return this.currentOf(caId, 'full', () => this.signs(caId));
  }

  /** The delta CRL that goes with the current full one. */
  currentDelta(caId: string): Promise<CrlHeader | undefined> {
    return this.currentOf(caId, 'delta', () => this.signs(caId));
  }

  /** Every signing CA's current full CRL (published where missing or due): the bundle brokers load. */
  async all(): Promise<CrlHeader[]> {
    const cas = await this.issuers.signingCas();
    const rows = await Promise.all(cas.map((c) => this.currentOf(c.id, 'full', async () => true)));
    return rows.filter((r): r is CrlHeader => r !== undefined);
  }

  /**
   * Publishes the CRLs of every signing CA whose CRL is missing or due: what the scheduled
   * refresh runs, so a CRL is replaced well before its nextUpdate even when nobody fetches it.
   * One CA's failure does not stop the others; each result says what that CA serves now.
   */
  async refreshDue(): Promise<{ caId: string; crl: CrlHeader | undefined; error?: unknown }[]> {
    const cas = await this.issuers.signingCas();
    return Promise.all(
      cas.map(async ({ id }) => {
        try {
          return { caId: id, crl: await this.currentOf(id, 'full', async () => true) };
        } catch (error) {
          return { caId: id, crl: await this.store.latest(this.db, id, 'full').catch(() => undefined), error };
        }
      }),
    );
  }

  /** The body of a published CRL. */
  der(caId: string, crlNumber: bigint): Promise<Buffer | undefined> {
    return this.store.der(this.db, caId, crlNumber);
  }

  private async signs(caId: string): Promise<boolean> {
    return (await this.issuers.signingCas()).some((c) => c.id === caId);
  }

  /** `signs` is asked only when a CRL has to be published. */
  private async currentOf(caId: string, kind: CrlKind, signs: () => Promise<boolean>): Promise<CrlHeader | undefined> {
    const latest = await this.store.latest(this.db, caId, kind);
    const full = kind === 'full' ? latest : await this.store.latest(this.db, caId, 'full');
    if (latest && full && !this.due(full) && (kind === 'full' || latest.crlNumber > full.crlNumber)) return latest;
    if (!(await signs())) return latest;
    return (await this.publish(caId))[kind];
  }

  private due(crl: CrlHeader): boolean {
    return crl.nextUpdate.getTime() - this.clock.now().getTime() < this.policy.refreshBeforeMs;
  }

  private async publishNow(caId: string): Promise<PublishedPair> {
    const cas = await this.issuers.signingCas();
    const ca = cas.find((c) => c.id === caId);
    if (!ca) throw new Error(`CA ${caId} does not sign CRLs (unknown or not active)`);
    const issuer = await this.issuers.issuer(caId);
    return this.db.transaction(async (tx) => {
      const lastNumber = await this.store.lockSequence(tx, caId);
      const lastFull = await this.store.latest(tx, caId, 'full');
      const base = await this.store.currentBase(tx, caId);
      const now = this.clock.now();
      // thisUpdate never goes backwards, even if the clock does.
      const thisUpdate = lastFull && lastFull.thisUpdate > now ? lastFull.thisUpdate : now;
      const nextUpdate = new Date(thisUpdate.getTime() + this.policy.validityMs);
      const rebase = !base || base.coversSeq === null || thisUpdate.getTime() - base.thisUpdate.getTime() >= this.policy.deltaBaseMs;
      const fullNumber = lastNumber + 1n;
      const deltaNumber = lastNumber + 2n;
      const baseNumber = rebase ? fullNumber : base.crlNumber;

      let coversSeq: bigint | undefined;
      const full: Uint8Array[] = [];
      const delta: Uint8Array[] = [];
      let fullCount = 0;
      let deltaCount = 0;
      for await (const page of this.store.snapshot(tx, caId, thisUpdate, rebase ? null : base.coversSeq, PAGE)) {
        const f: CrlEntry[] = [];
        const d: CrlEntry[] = [];
        for (const r of page) {
          if (r.part === 'epoch') coversSeq = r.seq;
          else if (r.part === 'full')
            f.push({ serial: r.serial, revokedAt: r.revokedAt, reasonCode: reasonCode(r.reason), invalidityDate: r.invalidityDate });
          else if (r.reason !== null && r.revokedAt !== null)
            d.push({ serial: r.serial, revokedAt: r.revokedAt, reasonCode: reasonCode(r.reason), invalidityDate: r.invalidityDate });
          // Released from hold: RFC 5280 gives removeFromCRL no revocation date of its own; the change's time serves.
          else d.push({ serial: r.serial, revokedAt: thisUpdate, reasonCode: REMOVE_FROM_CRL });
        }
        full.push(encodeCrlEntries(f));
        delta.push(encodeCrlEntries(d));
        fullCount += f.length;
        deltaCount += d.length;
      }
      if (coversSeq === undefined) throw new Error('the CRL snapshot did not read the revocation clock');

      const common = {
        signatureAlgorithm: issuer.signer.signatureAlgorithm,
        issuer: issuer.subjectDer,
        thisUpdate,
        nextUpdate,
        authorityKeyId: issuer.keyId,
        distributionPoint: this.urls.crl(caId),
        scope: ca.scope,
      };
      const sign = async (tbs: Uint8Array) =>
        Buffer.from(encodeCertificateList(tbs, issuer.signer.signatureAlgorithm, await issuer.signer.sign(tbs)));
      const [fullDer, deltaDer] = await Promise.all([
        sign(encodeTbsCertList({ ...common, crlNumber: fullNumber, revoked: full, freshestCrl: this.urls.deltaCrl(caId) })),
        sign(encodeTbsCertList({ ...common, crlNumber: deltaNumber, revoked: delta, baseCrlNumber: baseNumber })),
      ]);
      const header = { caId, thisUpdate, nextUpdate, coversSeq };
      const pair: PublishedPair = {
        full: { ...header, kind: 'full', crlNumber: fullNumber, entries: fullCount, baseNumber: null, isBase: rebase, der: fullDer },
        delta: { ...header, kind: 'delta', crlNumber: deltaNumber, entries: deltaCount, baseNumber, isBase: false, der: deltaDer },
      };
      await this.store.insert(tx, pair.full);
      await this.store.insert(tx, pair.delta);
      await this.audit.append(tx, [
        {
          actor: 'crl-publisher',
          action: 'crl.published',
          targetType: 'ca',
          targetId: caId,
          details: {
            crlNumber: fullNumber.toString(),
            entries: fullCount,
            deltaCrlNumber: deltaNumber.toString(),
            deltaEntries: deltaCount,
            baseCrlNumber: baseNumber.toString(),
            thisUpdate: thisUpdate.toISOString(),
            nextUpdate: nextUpdate.toISOString(),
          },
        },
      ]);
      return pair;
    });
  }
}
