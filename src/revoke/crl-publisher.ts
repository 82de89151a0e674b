import type { AuditLog } from '../audit/audit-log.js';
import type { IssuerContext } from '../ca/hierarchy.js';
import type { KeyAlgorithm } from '../ca/keys.js';
import type { PkiUrls } from '../ca/urls.js';
import { encodeCrlEntries, encodeTbsCertList } from '../ca/x509/crl.js';
import { encodeCertificateList } from '../ca/x509/encode.js';
import type { Clock } from '../shared/clock.js';
import type { Db } from '../store/db.js';
import type { CrlHeader, CrlRow, CrlStore } from '../store/crl-store.js';
import { REASON_CODES, isRevocationReason } from './reasons.js';
import type { RevocationChange, RevocationListener } from './revocation.js';

/** The CAs a CRL is published for, and how each signs. */
export interface CrlIssuers {
  /** Active CAs that can sign, with what they issue (intermediates: end entities; roots: CAs). */
  signingCas(): Promise<{ id: string; scope: 'user' | 'ca'; keyAlgorithm: KeyAlgorithm }[]>;
  issuer(caId: string): Promise<IssuerContext>;
}

/** Rows read per round trip while collecting a CRL's entries. */
const PAGE = 20_000;

export interface CrlPolicy {
  /** nextUpdate - thisUpdate. */
  validityMs: number;
  /** A CRL is replaced once less than this much of its validity is left, whether or not anything changed. */
  refreshBeforeMs: number;
}

/**
 * The CRL pipeline: collect a CA's revoked, unexpired certificates → sign → store, with a CRL
 * number one above the last (taken under a lock on the CA's row, so the numbers only grow, across
 * processes too). Publishing is coalesced per CA: requests that arrive while one runs share the
 * next run, which covers every change committed before they asked.
 */
export class CrlPublisher implements RevocationListener {
  private readonly runs = new Map<string, { current?: Promise<CrlRow>; next?: Promise<CrlRow> }>();

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

  /** A new CRL for the CA, covering everything committed before the call. */
  publish(caId: string): Promise<CrlRow> {
    const s = this.runs.get(caId) ?? {};
    this.runs.set(caId, s);
    if (s.next) return s.next;
    const start = (): Promise<CrlRow> => {
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

  /** The CRL to serve: the newest, replaced first when there is none or it is within refreshBeforeMs of its nextUpdate. */
  async current(caId: string): Promise<CrlHeader | undefined> {
    return this.currentOf(caId, async () => (await this.issuers.signingCas()).some((c) => c.id === caId));
  }

  /** Every signing CA's current CRL (published where missing or due): the bundle brokers load. */
  async all(): Promise<CrlHeader[]> {
    const cas = await this.issuers.signingCas();
    const rows = await Promise.all(cas.map((c) => this.currentOf(c.id, async () => true)));
    return rows.filter((r): r is CrlHeader => r !== undefined);
  }

  /** The body of a published CRL. */
  der(caId: string, crlNumber: bigint): Promise<Buffer | undefined> {
    return this.store.der(this.db, caId, crlNumber);
  }

  /** `signs` is asked only when a CRL has to be published. */
  private async currentOf(caId: string, signs: () => Promise<boolean>): Promise<CrlHeader | undefined> {
    const latest = await this.store.latest(this.db, caId);
    if (latest && !this.due(latest)) return latest;
    if (!(await signs())) return latest;
    return this.publish(caId);
  }

  private due(crl: CrlHeader): boolean {
    return crl.nextUpdate.getTime() - this.clock.now().getTime() < this.policy.refreshBeforeMs;
  }

  private async publishNow(caId: string): Promise<CrlRow> {
    const cas = await this.issuers.signingCas();
    const ca = cas.find((c) => c.id === caId);
    if (!ca) throw new Error(`CA ${caId} does not sign CRLs (unknown or not active)`);
    const issuer = await this.issuers.issuer(caId);
    return this.db.transaction(async (tx) => {
      const last = await this.store.latest(tx, caId, { lock: true });
      const now = this.clock.now();
      // thisUpdate never goes backwards, even if the clock does.
      const thisUpdate = last && last.thisUpdate > now ? last.thisUpdate : now;
      const nextUpdate = new Date(thisUpdate.getTime() + this.policy.validityMs);
      const revoked: Uint8Array[] = [];
      let entries = 0;
      for (let after: Buffer | null = null; ; ) {
        const page = await this.store.revokedPage(tx, caId, thisUpdate, after, PAGE);
        revoked.push(
          encodeCrlEntries(
            page.map((r) => ({
              serial: r.serial,
              revokedAt: r.revokedAt,
              reasonCode: isRevocationReason(r.reason) ? REASON_CODES[r.reason] : 0,
              invalidityDate: r.invalidityDate,
            })),
          ),
        );
        entries += page.length;
        if (page.length < PAGE) break;
        after = page[page.length - 1]!.serial;
      }
      const crlNumber = (last?.crlNumber ?? 0n) + 1n;
      const tbs = encodeTbsCertList({
        signatureAlgorithm: issuer.signer.signatureAlgorithm,
        issuer: issuer.subjectDer,
        thisUpdate,
        nextUpdate,
        authorityKeyId: issuer.keyId,
        crlNumber,
        distributionPoint: this.urls.crl(caId),
        scope: ca.scope,
        revoked,
      });
      const der = Buffer.from(encodeCertificateList(tbs, issuer.signer.signatureAlgorithm, await issuer.signer.sign(tbs)));
      const row: CrlRow = { caId, crlNumber, thisUpdate, nextUpdate, entries, der };
      await this.store.insert(tx, row);
      await this.audit.append(tx, [
        {
          actor: 'crl-publisher',
          action: 'crl.published',
          targetType: 'ca',
          targetId: caId,
          details: { crlNumber: crlNumber.toString(), entries, thisUpdate: thisUpdate.toISOString(), nextUpdate: nextUpdate.toISOString() },
        },
      ]);
      return row;
    });
  }
}
