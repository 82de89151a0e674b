import { createHash } from 'node:crypto';
import { encodeOcspRequest, parseOcspRequest, OcspRequestError, type CertIdHash, type OcspCertId } from '../ca/x509/ocsp-request.js';
import { detached } from '../ca/x509/der.js';
import {
  encodeCertId,
  encodeOcspError,
  encodeOcspResponse,
  encodeResponseData,
  encodeSingleResponse,
  nameHash,
  publicKeyHash,
  type OcspCertStatus,
  type OcspErrorStatus,
} from '../ca/x509/ocsp-response.js';
import type { Clock } from '../shared/clock.js';
import { isDatabaseUnavailable, type Db, type Executor } from '../store/db.js';
import type { OcspStatusRow, OcspStore } from '../store/ocsp-store.js';
import type { CrlIssuers } from './crl-publisher.js';
import { OcspCache, type CertState, type Presigned } from './ocsp-cache.js';
import type { OcspResponders, ResponderIdentity } from './ocsp-responders.js';
import { REASON_CODES, isRevocationReason } from './reasons.js';
import type { RevocationChange, RevocationListener } from './revocation.js';
import { NO_TELEMETRY, type OcspOutcome, type OcspSource, type Telemetry } from '../shared/telemetry.js';
import { FreshRead, SingleFlight } from '../shared/single-flight.js';

/** What the HTTP edge sends back: the DER, and for a pre-signed answer what HTTP caching needs. */
export interface OcspAnswer {
  der: Buffer;
  /** Present only for a pre-signed, cacheable response (no nonce, one CertID). */
  cacheable?: Presigned;
  /** The OCSP status when it is not successful (for logs and metrics). */
  error?: OcspErrorStatus;
}

/** An answer with what the metrics count of it. */
interface Counted {
  answer: OcspAnswer;
  status: OcspOutcome;
  source: OcspSource;
  /** The serials answered revoked (or on hold): for detection, a revoked device still trying to get in. */
  revoked?: Buffer[] | undefined;
}

/** Told of the certificates a client asked about that are revoked; must return at once (the hot path). */
export type RevokedQueried = (serials: Buffer[], requester: string) => void;

/** A pre-signed response, and where it was found. */
interface Found {
  presigned: Presigned;
  status: CertState['kind'];
  source: 'memory' | 'stored' | 'signed';
}

export interface OcspPolicy {
  /** nextUpdate - thisUpdate of a response, unless its certificate's profile has its own (`validityByProfile`). */
  validityMs: number;
  /**
   * nextUpdate - thisUpdate by certificate profile (brokers: short, a stapling broker re-checks at
   * half of it). A response about several certificates takes the shortest of theirs.
   */
  validityByProfile?: Readonly<Partial<Record<string, number>>>;
  /** Entries kept in memory. */
  cacheEntries: number;
  /** Tell other replicas through the database's notifications (PostgreSQL; the embedded store has no other replica). */
  notifyReplicas: boolean;
}

const HASHES: CertIdHash[] = ['sha1', 'sha256', 'sha384', 'sha512'];
/** The hash algorithms pre-signed right after a revocation: what OpenSSL, GnuTLS and browsers send. */
const PRESIGN_AFTER_REVOCATION: CertIdHash[] = ['sha1', 'sha256'];
/** How long a serial we never issued is remembered as unknown: it may be a pending intent about to be issued. */
const UNKNOWN_TTL_MS = 60_000;
/** More serials than this in one change are sent to replicas as "forget everything". */
const NOTIFY_SERIALS_MAX = 200;
/** Signed on the spot after a revocation, beyond this the first poll signs. */
const PRESIGN_AFTER_REVOCATION_MAX = 16;
/** How often an unknown issuer may trigger a re-read of the CA list. */
const ISSUER_REFRESH_MS = 5_000;

type Lookup = (req: OcspCertId) => string | undefined;

/**
 * The OCSP responder (RFC 6960, RFC 5019): parse → find the CA by the CertID's issuer hashes →
 * answer from memory, or from the pre-signed store shared by every replica, or sign on the spot.
 * A request with a nonce, or with several CertIDs, is signed on the spot from the cached states.
 * A revocation reaches it through `onRevocationWriting` (inside the revoking transaction: stored
 * responses dropped, replicas notified at commit) and `onRevocationChanged` (after the commit:
 * this process's cache dropped and the new answers pre-signed), so the revoke call returns only
 * once this responder says revoked.
 *
 * Other replicas learn of a revocation from its notification, which may arrive after the revoke
 * call returned (a busy or distant link to PostgreSQL). So a replica answers from memory only when
 * it has seen every change committed before the request: each change has a number (the epoch,
 * counted in the revoking transaction and sent after its serials), and a memory answer first reads
 * the committed epoch (one read shared by the requests that arrived meanwhile). If it is ahead of
 * the last notification seen, the answer comes from the database. A revocation that returned is
 * thus in every replica's answers to requests that begin after it, at the cost of one small query
 * per batch of memory answers.
 */
export class OcspResponder implements RevocationListener {
  readonly cache: OcspCache;
  private issuerIndex: { lookup: Lookup; at: number } | undefined;
  private readonly fills = new SingleFlight<string, Found>();
  /** The epoch of the newest change whose notification this process has handled; undefined: unknown, memory is not trusted. */
  private seenEpoch: number | undefined;
  private readonly committedEpoch: FreshRead<number>;

  constructor(
    private readonly db: Db,
    private readonly store: OcspStore,
    private readonly cas: CrlIssuers,
    private readonly responders: OcspResponders,
    private readonly clock: Clock,
    private readonly policy: OcspPolicy,
    private readonly onError: (e: unknown) => void = () => undefined,
    private readonly telemetry: Telemetry = NO_TELEMETRY,
    private readonly revokedQueried: RevokedQueried = () => undefined,
  ) {
    this.cache = new OcspCache(policy.cacheEntries);
    this.committedEpoch = new FreshRead(() => this.store.epoch(this.db));
  }

  /** Answers one DER OCSPRequest from `requester` (its address). Never throws: every failure is an OCSP error status. */
  async respond(request: Uint8Array, requester = 'unknown'): Promise<OcspAnswer> {
    const { answer, status, source, revoked } = await this.answer(request);
    this.telemetry.ocspAnswered(status, source);
    if (revoked?.length) this.revokedQueried(revoked, requester);
    return answer;
  }

  /**
   * What this responder answers about one certificate of ours, asked as OpenSSL asks (one CertID
   * under the certificate's CA, `hash`, no nonce), for the API (GET /v1/certificates/{serial}/ocsp).
   * The request takes the path of a broker's at /pki/ocsp (memory, the stored pre-signed response,
   * or signed now), but is not counted in the metrics nor reported as a query for a revoked serial:
   * the operator looking is no relying party. Undefined when no certificate has this serial.
   */
  async answerFor(serial: Buffer, hash: CertIdHash = 'sha1'): Promise<{ der: Buffer; source: OcspSource } | undefined> {
    const [row] = await this.store.statuses(this.db, [serial]);
    if (!row) return undefined;
    const certId = await this.certIdFor(row, hash);
    // A CA we cannot name any more: what a client asking under it gets from /pki/ocsp.
    if (!certId) return { der: encodeOcspError('unauthorized'), source: 'none' };
    const { answer, source } = await this.answer(encodeOcspRequest([encodeCertId(certId)]));
    return { der: answer.der, source };
  }

  private async answer(request: Uint8Array): Promise<Counted> {
    let parsed;
    try {
      parsed = parseOcspRequest(request);
    } catch (e) {
      return errorAnswer(e instanceof OcspRequestError ? 'malformedRequest' : 'internalError');
    }
    try {
      const caIds = await this.issuersOf(parsed.certIds);
      // One response has one signer: every CertID must name the same CA, and one we serve.
      const caId = caIds[0];
      if (!caId || caIds.some((c) => c !== caId)) return errorAnswer('unauthorized');
      if (!parsed.nonce && parsed.certIds.length === 1) {
        const certId = parsed.certIds[0]!;
        const found = await this.presigned(caId, certId);
        return {
          answer: { der: found.presigned.der, cacheable: found.presigned },
          status: found.status,
          source: found.source,
          revoked: found.status === 'revoked' ? [certId.serial] : undefined,
        };
      }
      const signed = await this.signNow(caId, parsed.certIds, parsed.nonce);
      return { answer: { der: signed.der }, status: signed.status, source: 'signed', revoked: signed.revoked };
    } catch (e) {
      this.onError(e);
      return errorAnswer(isDatabaseUnavailable(e) ? 'tryLater' : 'internalError');
    }
  }

  // ---- revocation hooks -----------------------------------------------------------------------

  async onRevocationWriting(tx: Executor, change: RevocationChange): Promise<void> {
    await this.store.forget(tx, change.serials);
    if (this.policy.notifyReplicas) {
      const payload = change.serials.length <= NOTIFY_SERIALS_MAX ? change.serials.map((s) => s.toString('hex')).join(',') : '*';
      await this.store.notify(tx, payload);
      await this.store.notify(tx, `@${await this.store.bumpEpoch(tx)}`);
    }
  }

  async onRevocationChanged(change: RevocationChange): Promise<void> {
    if (change.serials.length <= NOTIFY_SERIALS_MAX) this.cache.forget(change.serials.map((s) => s.toString('hex')));
    else this.cache.clear();
    if (change.serials.length > PRESIGN_AFTER_REVOCATION_MAX) return;
    // The first polls after a revocation are the ones that matter: answer them without signing.
    // A failure here costs only that: the next poll signs.
    try {
      const rows = await this.store.statuses(this.db, change.serials);
      await Promise.all(
        rows.flatMap((row) =>
          PRESIGN_AFTER_REVOCATION.map(async (hash) => {
            const certId = await this.certIdFor(row, hash);
            if (certId) await this.fill(row.caId, certId);
          }),
        ),
      );
    } catch (e) {
      this.onError(e);
    }
  }

  /**
   * Housekeeping: re-signs up to `limit` stored responses past half their validity, so a poll after
   * a quiet spell is still answered without signing. Returns how many it re-signed.
   */
  async refreshDue(limit: number): Promise<number> {
    const now = this.clock.now().getTime();
    const cutoffs: Record<string, Date> = {};
    for (const [profile, ms] of Object.entries(this.policy.validityByProfile ?? {})) if (ms) cutoffs[profile] = new Date(now - ms / 2);
    const due = await this.store.signedBefore(this.db, cutoffs, new Date(now - this.policy.validityMs / 2), limit);
    let n = 0;
    for (const d of due) {
      const certId = await this.certIdFor(d, d.hashAlgorithm as CertIdHash);
      if (!certId) continue;
      await this.fill(d.caId, certId);
      n += 1;
    }
    return n;
  }

  /** A notification: a replica (maybe this one) changed these serials (`*`: too many to list), or `@n`: every change up to n was notified. */
  forgetRemote(payload: string): void {
    if (payload.startsWith('@')) {
      const epoch = Number(payload.slice(1));
      if (Number.isSafeInteger(epoch)) this.seenEpoch = Math.max(this.seenEpoch ?? 0, epoch);
    } else if (payload === '*' || payload === '') this.cache.clear();
    else this.cache.forget(payload.split(','));
  }

  /**
   * The notification feed is listening (true) or lost (false). Lost: memory is off. Listening
   * again: memory starts empty, and is trusted once the epoch read after LISTEN is known (every
   * later change is notified).
   */
  feedState(listening: boolean): void {
    this.cache.setEnabled(listening);
    this.seenEpoch = undefined;
    if (!listening) return;
    this.committedEpoch.get().then(
      (epoch) => {
        if (this.cache.enabled) this.seenEpoch = Math.max(this.seenEpoch ?? 0, epoch);
      },
      (e: unknown) => this.onError(e),
    );
  }

  /** Whether memory holds every change committed before this call (always, without replicas). */
  private async memoryCurrent(): Promise<boolean> {
    if (!this.policy.notifyReplicas) return true;
    if (this.seenEpoch === undefined) return false;
    const committed = await this.committedEpoch.get();
    return this.seenEpoch !== undefined && committed <= this.seenEpoch;
  }

  // ---- answers --------------------------------------------------------------------------------

  private async presigned(caId: string, certId: OcspCertId): Promise<Found> {
    const serial = certId.serial.toString('hex');
    // Not a fill already under way: it may have read before the change this request must see.
    if (!(await this.memoryCurrent())) return this.fillNow(caId, certId, serial);
    const now = this.clock.now().getTime();
    const entry = this.cache.get(serial, now);
    const hit = entry?.byHash[certId.hashAlgorithm];
    if (entry && hit && hit.issuerKeyHash.equals(certId.issuerKeyHash) && now < hit.nextUpdate.getTime()) {
      if (now < hit.refreshAt) return { presigned: hit, status: forCa(entry.state, caId).kind, source: 'memory' };
      // Past half its validity: a relying party asking now gets a new one (a stapling broker
      // re-checks at half the remaining validity, and must not be handed a response about to lapse).
      // Only if that fails (the database away) is the old one, still valid, served.
      try {
        return await this.fill(caId, certId);
      } catch (e) {
        this.onError(e);
        return { presigned: hit, status: forCa(entry.state, caId).kind, source: 'memory' };
      }
    }
    return this.fill(caId, certId);
  }

  /** Reads the state and the stored response; signs and stores a new one when there is none or it is due. One at a time per key. */
  private fill(caId: string, certId: OcspCertId): Promise<Found> {
    const serial = certId.serial.toString('hex');
    const key = `${serial}|${certId.hashAlgorithm}|${caId}`;
    return this.fills.run(key, () => this.fillNow(caId, certId, serial));
  }

  private async fillNow(caId: string, certId: OcspCertId, serial: string): Promise<Found> {
    const since = this.cache.generation;
    const row = await this.store.lookup(this.db, certId.serial, certId.hashAlgorithm);
    const state = stateOf(row);
    const answer = forCa(state, caId);
    const now = this.clock.now();
    const validityMs = this.validityOf(row?.profile);
    const half = validityMs / 2;
    const ttl = state.kind === 'unknown' ? now.getTime() + UNKNOWN_TTL_MS : Infinity;
    // A stored response signed for a longer validity than the profile's now (the setting was lowered) is replaced.
    const stored = row?.presigned;
    if (
      stored &&
      answer.kind !== 'unknown' &&
      now.getTime() < stored.thisUpdate.getTime() + half &&
      stored.nextUpdate.getTime() - stored.thisUpdate.getTime() <= validityMs
    ) {
      const p = presignedOf(stored.der, stored.thisUpdate, stored.nextUpdate, stored.thisUpdate.getTime() + half, certId);
      this.cache.put(since, serial, state, ttl, { hash: certId.hashAlgorithm, response: p });
      return { presigned: p, status: answer.kind, source: 'stored' };
    }
    const responder = await this.responders.responder(caId);
    const { thisUpdate, nextUpdate } = this.window(now, responder, validityMs);
    const single = encodeSingleResponse({ certId, status: statusOf(answer), thisUpdate, nextUpdate });
    const der = await sign(responder, [single], thisUpdate, null);
    const p = presignedOf(der, thisUpdate, nextUpdate, thisUpdate.getTime() + half, certId);
    if (row && answer.kind !== 'unknown') {
      await this.store.saveIfCurrent(
        this.db,
        certId.serial,
        certId.hashAlgorithm,
        { status: row.status, revocationReason: row.revocationReason },
        p,
      );
    }
    // A serial of another of our CAs asked under this one: the state is cached, this answer is not.
    this.cache.put(since, serial, state, ttl, answer === state ? { hash: certId.hashAlgorithm, response: p } : undefined);
    return { presigned: p, status: answer.kind, source: 'signed' };
  }

  /** A response for several CertIDs, or one with a nonce: states from memory or one query, signed now, never stored. */
  private async signNow(
    caId: string,
    certIds: OcspCertId[],
    nonce: Buffer | null,
  ): Promise<{ der: Buffer; status: OcspOutcome; revoked: Buffer[] }> {
    const current = await this.memoryCurrent();
    const now = this.clock.now();
    const since = this.cache.generation;
    const states = new Map<string, CertState>();
    const profiles = new Set<string | undefined>();
    const missing: Buffer[] = [];
    for (const id of certIds) {
      const hex = id.serial.toString('hex');
      const e = current ? this.cache.get(hex, now.getTime()) : undefined;
      if (e) {
        states.set(hex, e.state);
        profiles.add(profileOf(e.state));
      } else missing.push(id.serial);
    }
    if (missing.length) {
      const rows = new Map((await this.store.statuses(this.db, missing)).map((r) => [r.serial.toString('hex'), r]));
      for (const serial of missing) {
        const hex = serial.toString('hex');
        const state = stateOf(rows.get(hex));
        states.set(hex, state);
        profiles.add(profileOf(state));
        this.cache.put(since, hex, state, state.kind === 'unknown' ? now.getTime() + UNKNOWN_TTL_MS : Infinity);
      }
    }
    const responder = await this.responders.responder(caId);
    const { thisUpdate, nextUpdate } = this.window(now, responder, Math.min(...[...profiles].map((p) => this.validityOf(p))));
    const answers = certIds.map((certId) => forCa(states.get(certId.serial.toString('hex'))!, caId));
    const singles = certIds.map((certId, i) => encodeSingleResponse({ certId, status: statusOf(answers[i]!), thisUpdate, nextUpdate }));
    const revoked = certIds.filter((_, i) => answers[i]!.kind === 'revoked').map((c) => c.serial);
    return { der: await sign(responder, singles, thisUpdate, nonce), status: answers.length === 1 ? answers[0]!.kind : 'several', revoked };
  }

  /** nextUpdate - thisUpdate of a response about a certificate of `profile` (undefined: a serial we never issued). */
  validityOf(profile: string | undefined): number {
    return (profile !== undefined ? this.policy.validityByProfile?.[profile] : undefined) ?? this.policy.validityMs;
  }

  private window(now: Date, responder: ResponderIdentity, validityMs: number): { thisUpdate: Date; nextUpdate: Date } {
    const thisUpdate = new Date(Math.floor(now.getTime() / 1000) * 1000);
    const nextUpdate = new Date(Math.min(thisUpdate.getTime() + validityMs, Math.floor(responder.notAfter.getTime() / 1000) * 1000));
    return { thisUpdate, nextUpdate };
  }

  // ---- issuers --------------------------------------------------------------------------------

  private async issuersOf(certIds: OcspCertId[]): Promise<(string | undefined)[]> {
    let index = await this.index();
    let found = certIds.map(index);
    if (found.includes(undefined) && this.clock.now().getTime() - this.issuerIndex!.at > ISSUER_REFRESH_MS) {
      this.issuerIndex = undefined; // a CA created since the index was built
      index = await this.index();
      found = certIds.map(index);
    }
    return found;
  }

  /** CertID (hash, issuerNameHash, issuerKeyHash) → CA, for every CA that signs, in every hash we accept. */
  private async index(): Promise<Lookup> {
    if (this.issuerIndex) return this.issuerIndex.lookup;
    const byKey = new Map<string, string>();
    for (const ca of await this.cas.signingCas()) {
      const issuer = await this.cas.issuer(ca.id);
      for (const h of HASHES)
        byKey.set(
          `${h}:${nameHash(issuer.subjectDer, h).toString('hex')}:${publicKeyHash(issuer.signer.publicKey, h).toString('hex')}`,
          ca.id,
        );
    }
    const lookup: Lookup = (id) =>
      byKey.get(`${id.hashAlgorithm}:${id.issuerNameHash.toString('hex')}:${id.issuerKeyHash.toString('hex')}`);
    this.issuerIndex = { lookup, at: this.clock.now().getTime() };
    return lookup;
  }

  private async certIdFor(row: OcspStatusRow, hash: CertIdHash): Promise<OcspCertId | undefined> {
    const issuer = await this.cas.issuer(row.caId).catch(() => undefined);
    if (!issuer) return undefined;
    return {
      hashAlgorithm: hash,
      issuerNameHash: nameHash(issuer.subjectDer, hash),
      issuerKeyHash: publicKeyHash(issuer.signer.publicKey, hash),
      serial: row.serial,
    };
  }
}

function errorAnswer(status: OcspErrorStatus): Counted {
  return { answer: { der: encodeOcspError(status), error: status }, status, source: 'none' };
}

async function sign(responder: ResponderIdentity, singles: Uint8Array[], producedAt: Date, nonce: Buffer | null): Promise<Buffer> {
  const tbs = encodeResponseData({ responderKeyHash: responder.keyHash, producedAt, responses: singles, nonce });
  return encodeOcspResponse(tbs, responder.signer.signatureAlgorithm, await responder.signer.sign(tbs), responder.certsField);
}

/** A certificate row's state: unknown unless it was issued (an intent not signed, or one that failed, never existed). */
function stateOf(row: OcspStatusRow | undefined): CertState {
  if (row?.status === 'issued') return { kind: 'good', caId: row.caId, profile: row.profile };
  if (row?.status === 'revoked' && row.revokedAt && row.revocationReason)
    return { kind: 'revoked', caId: row.caId, profile: row.profile, revokedAt: row.revokedAt, reason: row.revocationReason };
  return { kind: 'unknown' };
}

function profileOf(state: CertState): string | undefined {
  return state.kind === 'unknown' ? undefined : state.profile;
}

/** What to answer when asked under `caId`: a certificate of another CA is unknown to this one. */
function forCa(state: CertState, caId: string): CertState {
  return state.kind !== 'unknown' && state.caId !== caId ? { kind: 'unknown' } : state;
}

function statusOf(state: CertState): OcspCertStatus {
  switch (state.kind) {
    case 'good':
      return { kind: 'good' };
    case 'unknown':
      return { kind: 'unknown' };
    case 'revoked': {
      // unspecified (0) is left out, as for CRL entries.
      const code = isRevocationReason(state.reason) ? REASON_CODES[state.reason] : 0;
      return { kind: 'revoked', revokedAt: state.revokedAt, reasonCode: code === 0 ? null : code };
    }
  }
}

/** Kept in the cache for hours: its bytes are detached, so that it doesn't pin a pool slab of 8 KB (the request's, the encoder's). */
function presignedOf(der: Buffer, thisUpdate: Date, nextUpdate: Date, refreshAt: number, certId: OcspCertId): Presigned {
  return {
    der: detached(der),
    thisUpdate,
    nextUpdate,
    refreshAt,
    etag: `"${createHash('sha1').update(der).digest('base64url')}"`,
    issuerKeyHash: detached(certId.issuerKeyHash),
  };
}
