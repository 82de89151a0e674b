import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { Knex } from 'knex';
import type { Db } from '../store/db.js';
import type { CertificateStore, DeviceIssuedRow, IntentRow } from '../store/certificate-store.js';
import type { AuditEntryInput, AuditLog } from '../audit/audit-log.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, badRequest, policyViolation } from '../shared/errors.js';
import { GroupBatcher } from '../shared/group-batcher.js';
import { serialFromBytes, type Serial } from '../shared/ids.js';
import type { ActorContext } from '../shared/actor.js';
import type { IssuerContext } from './hierarchy.js';
import { newSerial, rootRefusal } from './hierarchy.js';
import { keyAlgorithmOf, type KeyAlgorithm, type Signer } from './keys.js';
import { DEVICE_ID_RE, PROFILES, deviceUri, isLeafProfile, type LeafProfileName, type Profile, type ProfileName } from './profiles.js';
import type { PkiUrls } from './urls.js';
import { crlShardFor } from './crl-shard.js';
import { NO_TELEMETRY, type Telemetry } from '../shared/telemetry.js';
import { encodeCertificate, encodeTbsCertificate } from './x509/encode.js';
import { TLS_FEATURE, ext, keyIdentifier } from './x509/extensions.js';
import { encodeName, type GeneralName } from './x509/names.js';
import { keyTypeLabel } from './x509/spki.js';

export interface IssueRequest {
  /** A request's certificate is an end entity's; authority profiles have their own method (issueResponder). */
  profile: LeafProfileName;
  /** The issuing CA; the default issuing CA when absent. */
  caId?: string | undefined;
  /** The subject's public key (SPKI DER), already proven to be held by the requester. */
  subjectPublicKeyInfo: Uint8Array;
  /** device: its id, which becomes the CN and the SAN URI. */
  deviceId?: string | undefined;
  /** broker and ocsp-responder: the CN (broker: defaults to the first DNS name or IP). */
  commonName?: string | undefined;
  dnsNames?: string[] | undefined;
  ipAddresses?: string[] | undefined;
  validityDays?: number | undefined;
  /**
   * broker only: the TLS Feature extension with status_request (RFC 7633, "must-staple"): clients
   * that honour it refuse a handshake in which the broker staples no OCSP response.
   */
  mustStaple?: boolean | undefined;
  /** The certificate this one renews (serial bytes), recorded as its lineage. */
  renews?: Buffer | undefined;
}

/** A request of any profile: leaves, and the authority certificates the service makes for its own keys. */
type AnyIssueRequest = Omit<IssueRequest, 'profile'> & { profile: ProfileName };

/** What an OCSP responder certificate holds besides its profile: the responder's key and its CA. */
export type ResponderRequest = Pick<IssueRequest, 'caId' | 'subjectPublicKeyInfo' | 'commonName' | 'validityDays'>;

/**
 * Registration's last checks of a request (a token spend, the proof of possession), made while
 * its intent is recorded. The certificate is signed only once they pass (otherwise its unsigned
 * intent is discarded). `deviceStatus` is the device's status as the spend read it: the batch's
 * commit is planned on it (one statement), and a device found in another status then costs the
 * general, slower commit, never a wrong record.
 * Unknown: planned as active.
 */
export type RegistrationCheck = Promise<{ deviceStatus?: string | undefined }>;

export interface IssuedCertificate {
  serial: Serial;
  der: Buffer;
  caId: string;
  profile: ProfileName;
  notBefore: Date;
  notAfter: Date;
}

export interface IssuedToDevice {
  serial: Buffer;
  deviceId: string;
  notAfter: Date;
  ctx: ActorContext;
  /** The device's status as registration last saw it (RegistrationCheck). */
  deviceStatus: string | undefined;
}

/**
 * Registration state (a device's current certificate and status) that commits with a batch's
 * certificates, in one of two ways.
 */
export interface IssuanceListener {
  /**
   * The usual way: the device rows and their audit entries planned from the statuses registration
   * saw, for the batch's one completing statement, which refuses them if a status changed since.
   */
  plan(issued: IssuedToDevice[]): { devices: DeviceIssuedRow[]; entries: AuditEntryInput[] };
  /** Otherwise: told inside the batch's transaction, it changes what it must and returns the audit entries for it. */
  onIssued(tx: Knex.Transaction, issued: IssuedToDevice[]): Promise<AuditEntryInput[]>;
}

/** Where issuance gets the signing CA: the hierarchy in production, a wrapper in fault-injection tests. */
export interface IssuerSource {
  issuer(caId: string): Promise<IssuerContext>;
  defaultIssuerId(): Promise<string | null>;
}

/** A validated request: everything the certificate will hold except serial, validity and signature. */
interface Plan {
  req: AnyIssueRequest;
  ctx: ActorContext;
  registration: RegistrationCheck | undefined;
  profile: Profile;
  keyAlgorithm: KeyAlgorithm;
  commonName: string;
  sans: GeneralName[];
  validityMs: number;
}

/** A batch whose intents are recorded and whose certificates are signed, waiting for its commit. */
interface SignedBatch {
  plans: Plan[];
  intents: IntentRow[];
  ders: Buffer[];
  deviceStatuses: (string | undefined)[];
}

/** A request of a batch that registration refused while its intent was recorded: it fails alone. */
interface Refused {
  refused: unknown;
}

/** The TLS Feature extension of a must-staple broker certificate. */
const MUST_STAPLE = ext.tlsFeature([TLS_FEATURE.statusRequest]);
const NO_CHECK: RegistrationCheck = Promise.resolve({});
const statusOf = (c: PromiseSettledResult<Awaited<RegistrationCheck>>) => (c.status === 'fulfilled' ? c.value.deviceStatus : undefined);

/** A commit's contents, whichever way it is made. */
interface Completion {
  certificates: { serial: Buffer; der: Buffer }[];
  issuedAt: Date;
  entries: AuditEntryInput[];
  forDevices: IssuedToDevice[];
}

/** Each TBSCertificate signed into a certificate, in order: one signMany call per signing key. */
async function signCertificates(items: { signer: Signer; tbs: Uint8Array }[]): Promise<Buffer[]> {
  const bySigner = new Map<Signer, number[]>();
  items.forEach(({ signer }, i) => {
    const of = bySigner.get(signer);
    if (of) of.push(i);
    else bySigner.set(signer, [i]);
  });
  const ders: Buffer[] = new Array<Buffer>(items.length);
  await Promise.all(
    [...bySigner].map(async ([signer, indexes]) => {
      const signatures = await signer.signMany(indexes.map((i) => items[i]!.tbs));
      indexes.forEach((i, k) => (ders[i] = Buffer.from(encodeCertificate(items[i]!.tbs, signer.signatureAlgorithm, signatures[k]!))));
    }),
  );
  return ders;
}

/** Refuses an authority profile where only a leaf may be asked for (a request, whatever its route). */
function assertLeaf(req: { profile: string }): void {
  if (!isLeafProfile(req.profile)) {
    throw new DomainError(
      'Forbidden',
      `profile ${req.profile} is not issued on request: the service makes its own ${req.profile} certificates`,
    );
  }
}

/** Why `issuer` may not sign this plan's certificate, if it may not: a root signs CAs and responder certificates, no leaves. */
function misfit(issuer: IssuerContext, p: Plan): DomainError | undefined {
  if (issuer.issuesLeaves || !isLeafProfile(p.profile.name)) return undefined;
  return rootRefusal(issuer.caId, p.profile.name);
}

/** Thrown through appendWith to stop its tries when registration's plan no longer holds. */
const STALE_PLAN = new Error('registration changed since the commit was planned');

const DAY = 86_400_000;
const BACKDATE_MS = 60_000;
const LANES = 3;
/** Tries of the one-statement commit when another process moved the audit head meanwhile, before the general path. */
const ONE_STATEMENT_TRIES = 3;
const DNS_NAME_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * The authority's issuance path: validate against the profile → record the intent (serial and
 * TBS) → sign → record the DER and the audit entry in one transaction. Concurrent single requests
 * are gathered into one batch per event-loop turn, so they share the database round trips.
 */
export class Issuance {
  /** Group issuance: batches of one event-loop turn's requests, LANES at a time (one signing while others wait on the database). */
  private readonly batcher: GroupBatcher<Plan, IssuedCertificate | Refused>;
  private readonly completions: GroupBatcher<SignedBatch, void>;
  /** Fixed extensions per (CA, profile, RSA-or-not, CRL shard): built once. */
  private readonly fixedExtensions = new Map<string, Uint8Array[]>();

  constructor(
    private readonly db: Db,
    private readonly issuers: IssuerSource,
    private readonly certificates: CertificateStore,
    private readonly audit: AuditLog,
    private readonly urls: PkiUrls,
    private readonly clock: Clock,
    private readonly options: {
      maxBatch?: number;
      listener?: IssuanceListener;
      telemetry?: Telemetry;
      /** CRL shards of new certificates (CRL_SHARDS); 0 or absent: the CA's one CRL. */
      crlShards?: number;
    } = {},
  ) {
    this.batcher = new GroupBatcher((plans) => this.run(plans), { maxBatch: this.maxBatch, lanes: LANES });
    this.completions = new GroupBatcher((signed) => this.complete(signed), { maxBatch: 64, lanes: 1 });
  }

  private get maxBatch(): number {
    return this.options.maxBatch ?? 500;
  }

  /**
   * One certificate. Validation errors, and a failed `registration` check (its error; its intent
   * is discarded, nothing having been signed), reject this call alone; the database work is
   * shared with concurrent calls.
   */
  async issue(req: IssueRequest, ctx: ActorContext, opts: { registration?: RegistrationCheck } = {}): Promise<IssuedCertificate> {
    opts.registration?.catch(() => undefined); // read when its batch is recorded: not an unhandled rejection before that
    assertLeaf(req);
    return this.issueAny(req, ctx, opts.registration);
  }

  /**
   * A delegated OCSP responder certificate (OCSPSigning, ocsp-nocheck) for a responder key the
   * service holds itself: the only way that profile is issued. Whoever holds one can vouch for
   * every certificate of its CA, so no request, route or job reaches this; OcspResponders does.
   */
  async issueResponder(req: ResponderRequest, ctx: ActorContext): Promise<IssuedCertificate> {
    return this.issueAny({ ...req, profile: 'ocsp-responder' }, ctx, undefined);
  }

  private async issueAny(req: AnyIssueRequest, ctx: ActorContext, registration: RegistrationCheck | undefined): Promise<IssuedCertificate> {
    const r = await this.batcher.add(this.plan(req, ctx, registration));
    if ('refused' in r) throw r.refused;
    return r;
  }

  /** Checks a request against its profile (key policy, names, validity) without issuing anything. */
  validate(req: IssueRequest): void {
    assertLeaf(req);
    this.plan(req, { actor: 'validation' });
  }

  /** Many certificates at once (a factory lot): all validated first, then issued together. */
  async issueBatch(reqs: IssueRequest[], ctx: ActorContext): Promise<IssuedCertificate[]> {
    const plans = reqs.map((r, i) => {
      try {
        assertLeaf(r);
        return this.plan(r, ctx);
      } catch (e) {
        if (e instanceof DomainError) throw new DomainError(e.kind, `request ${i}: ${e.message}`, e.details);
        throw e;
      }
    });
    // Every issuer is checked before anything is recorded: a batch is issued whole or not at all.
    const defaultCa = plans.some((p) => !p.req.caId) ? await this.issuers.defaultIssuerId() : null;
    const issuers = new Map<string, IssuerContext>();
    for (const p of plans) {
      const id = p.req.caId ?? defaultCa;
      if (!id) continue;
      let issuer = issuers.get(id);
      if (!issuer) issuers.set(id, (issuer = await this.issuers.issuer(id)));
      const refusal = misfit(issuer, p);
      if (refusal) throw refusal;
    }
    const chunks: Plan[][] = [];
    for (let i = 0; i < plans.length; i += this.maxBatch) chunks.push(plans.slice(i, i + this.maxBatch));
    // Two chunks in flight: one is signed while the other waits on the database.
    const results: IssuedCertificate[][] = [];
    let next = 0;
    const lane = async () => {
      while (next < chunks.length) {
        const i = next++;
        // A batch has no registration checks: nothing in it is refused alone.
        results[i] = (await this.run(chunks[i]!)).map((r) => {
          if ('refused' in r) throw r.refused;
          return r;
        });
      }
    };
    await Promise.all([lane(), lane()]);
    return results.flat();
  }

  /**
   * Closes intents left pending by a process that died between recording and signing: only
   * those older than `olderThanMs`, so another live process's in-flight batch is untouched, and
   * only the device's when `deviceId` is given. Once closed, an intent can never be released.
   */
  async failAbandoned(olderThanMs: number, ctx: ActorContext, deviceId?: string): Promise<Serial[]> {
    return this.db.transaction(async (tx) => {
      const before = new Date(this.clock.now().getTime() - olderThanMs);
      const serials = await this.certificates.failStalePending(
        tx,
        before,
        'abandoned: the process stopped between recording and signing',
        deviceId,
      );
      await this.audit.append(
        tx,
        serials.map((s) => ({ ...ctx, action: 'certificate.abandoned', targetType: 'certificate', targetId: serialFromBytes(s) })),
      );
      return serials.map(serialFromBytes);
    });
  }

  private plan(req: AnyIssueRequest, ctx: ActorContext, registration?: RegistrationCheck): Plan {
    const profile = PROFILES[req.profile];
    if (!profile) throw badRequest(`unknown profile ${String(req.profile)}`);
    const keyAlgorithm = keyAlgorithmOf(req.subjectPublicKeyInfo);
    if (!profile.keyAlgorithms.includes(keyAlgorithm)) {
      throw policyViolation(`profile ${profile.name} does not allow ${keyAlgorithm} keys`, { allowed: profile.keyAlgorithms });
    }
    const days = req.validityDays ?? profile.defaultValidityDays;
    if (!Number.isInteger(days) || days < 1 || days > profile.maxValidityDays) {
      throw policyViolation(`validityDays must be between 1 and ${profile.maxValidityDays} for profile ${profile.name}`);
    }
    if (req.mustStaple && !profile.mustStaple) {
      throw badRequest(
        `mustStaple (the TLS Feature status_request, RFC 7633) is for broker certificates; profile ${profile.name} does not allow it`,
      );
    }
    const { commonName, sans } = this.names(profile, req);
    return { req, ctx, registration, profile, keyAlgorithm, commonName, sans, validityMs: days * DAY };
  }

  private names(profile: Profile, req: AnyIssueRequest): { commonName: string; sans: GeneralName[] } {
    const dns = req.dnsNames ?? [];
    const ips = req.ipAddresses ?? [];
    switch (profile.name) {
      case 'device': {
        if (!req.deviceId || !DEVICE_ID_RE.test(req.deviceId)) {
          throw badRequest('a device certificate needs a deviceId of 1-64 characters: letters, digits, . _ : -');
        }
        if (dns.length || ips.length) throw policyViolation('profile device allows no DNS or IP names');
        return { commonName: req.deviceId, sans: [{ type: 'uri', value: deviceUri(req.deviceId) }] };
      }
      case 'broker': {
        if (dns.length + ips.length === 0) throw badRequest('a broker certificate needs at least one DNS name or IP address');
        if (dns.length + ips.length > profile.maxSans) throw policyViolation(`at most ${profile.maxSans} names`);
        const sans: GeneralName[] = [];
        for (const d of dns) {
          const name = d.toLowerCase();
          if (!DNS_NAME_RE.test(name)) throw badRequest(`${JSON.stringify(d)} is not a valid DNS name`);
          sans.push({ type: 'dns', value: name });
        }
        for (const ip of ips) {
          if (isIP(ip) === 0) throw badRequest(`${JSON.stringify(ip)} is not an IP address`);
          sans.push({ type: 'ip', value: ip });
        }
        const commonName = req.commonName ?? sans[0]!.value;
        if (commonName.length > 64) throw badRequest('commonName is longer than 64 characters');
        return { commonName, sans };
      }
      case 'ocsp-responder': {
        if (dns.length || ips.length) throw policyViolation('profile ocsp-responder allows no names');
        if (!req.commonName || req.commonName.length > 64)
          throw badRequest('an OCSP responder certificate needs a commonName of 1-64 characters');
        return { commonName: req.commonName, sans: [] };
      }
    }
  }

  private async run(plans: Plan[]): Promise<(IssuedCertificate | Refused)[]> {
    if (plans.length === 0) return [];
    const defaultCa = plans.some((p) => !p.req.caId) ? await this.issuers.defaultIssuerId() : null;
    const issuerIds = new Set(plans.map((p) => p.req.caId ?? defaultCa));
    if (issuerIds.has(null)) throw new DomainError('Conflict', 'no default issuing CA is set');
    const issuers = new Map<string, IssuerContext>();
    for (const id of issuerIds) issuers.set(id!, await this.issuers.issuer(id!));
    // The last check of what a CA may sign, whichever route asked: a request that fails it fails alone.
    const misfits = plans.map((p) => misfit(issuers.get(p.req.caId ?? defaultCa!)!, p));
    if (misfits.some((m) => m)) {
      const kept = plans.filter((_, i) => !misfits[i]);
      const done = await this.record(kept, issuers, defaultCa);
      let k = 0;
      return plans.map((_, i) => (misfits[i] ? { refused: misfits[i] } : done[k++]!));
    }
    return this.record(plans, issuers, defaultCa);
  }

  private async record(
    plans: Plan[],
    issuers: Map<string, IssuerContext>,
    defaultCa: string | null,
  ): Promise<(IssuedCertificate | Refused)[]> {
    if (plans.length === 0) return [];

    // 1. Build every TBS and record the intents: after this, each serial is known to the database.
    const now = this.clock.now();
    const notBefore = new Date(now.getTime() - BACKDATE_MS);
    const intents: IntentRow[] = [];
    const tbsList: Uint8Array[] = [];
    const issuerOf: IssuerContext[] = [];
    for (const p of plans) {
      const issuer = issuers.get(p.req.caId ?? defaultCa!)!;
      const wanted = new Date(notBefore.getTime() + p.validityMs);
      const notAfter = wanted > issuer.notAfter ? issuer.notAfter : wanted;
      const serial = newSerial();
      // A root's CRL (its OCSP responders' too) is never sharded.
      const crlShard = issuer.issuesLeaves ? crlShardFor(serial, this.options.crlShards ?? 0) : 0;
      const spki = p.req.subjectPublicKeyInfo;
      const tbs = encodeTbsCertificate({
        serial,
        signatureAlgorithm: issuer.signer.signatureAlgorithm,
        issuer: issuer.subjectDer,
        notBefore,
        notAfter,
        subject: encodeName([{ type: 'CN', value: p.commonName }]),
        subjectPublicKeyInfo: spki,
        extensions: [
          ...this.fixed(issuer, p, crlShard),
          ext.subjectKeyIdentifier(keyIdentifier(spki)),
          ...(p.sans.length ? [ext.subjectAltName(p.sans, false)] : []),
          ...(p.req.mustStaple ? [MUST_STAPLE] : []),
        ],
      });
      tbsList.push(tbs);
      issuerOf.push(issuer);
      intents.push({
        serial,
        caId: issuer.caId,
        profile: p.profile.name,
        subjectCn: p.commonName,
        deviceId: p.req.deviceId ?? null,
        tbsDer: Buffer.from(tbs),
        spkiSha256: createHash('sha256').update(spki).digest(),
        keyType: keyTypeLabel(spki),
        notBefore,
        notAfter,
        createdAt: now,
        renewedFrom: p.req.renews ?? null,
        crlShard,
      });
    }
    await this.certificates.insertIntents(this.db, intents, { asyncCommit: true });

    // 2. Registration's checks, made while the intents were recorded: a refused request's intent
    // is discarded, unsigned. 3. Sign the rest. 4. Record the DER and the audit entries together, in
    // the commit shared by the batches signed meanwhile.
    const serials = intents.map((i) => i.serial);
    try {
      const checks = await Promise.allSettled(plans.map((p) => p.registration ?? NO_CHECK));
      const kept = plans.map((_, i) => i).filter((i) => checks[i]!.status === 'fulfilled');
      if (kept.length < plans.length) {
        const refused = serials.filter((_, i) => checks[i]!.status === 'rejected');
        await this.certificates.discardUnsigned(this.db, refused);
      }
      const ders = await signCertificates(kept.map((i) => ({ signer: issuerOf[i]!.signer, tbs: tbsList[i]! })));
      if (kept.length) {
        await this.completions.add({
          plans: kept.map((i) => plans[i]!),
          intents: kept.map((i) => intents[i]!),
          ders,
          deviceStatuses: kept.map((i) => statusOf(checks[i]!)),
        });
      }
      const derOf = new Map(kept.map((i, k) => [i, ders[k]!]));
      return intents.map((it, i) => {
        const check = checks[i]!;
        if (check.status === 'rejected') return { refused: check.reason };
        return {
          serial: serialFromBytes(it.serial),
          der: derOf.get(i)!,
          caId: it.caId,
          profile: plans[i]!.profile.name,
          notBefore: it.notBefore,
          notAfter: it.notAfter,
        };
      });
    } catch (e) {
      await this.certificates
        .markFailed(this.db, serials, `issuance failed: ${e instanceof Error ? e.message : String(e)}`)
        .catch(() => undefined);
      throw e instanceof DomainError ? e : new DomainError('Internal', 'issuance failed', { cause: String(e) });
    }
  }

  /**
   * One commit for every batch signed since the last one committed: the DER, the listener's
   * registration state and the audit entries. One commit at a time, so batches never wait on each
   * other for the audit-chain lock; under load the commits grow instead. Usually one statement
   * (one round trip: the commit is most of an enrollment's wait); when registration's plan no
   * longer holds, or other processes keep moving the audit head, a transaction that reads as it goes.
   */
  private async complete(signed: SignedBatch[]): Promise<void[]> {
    const plans = signed.flatMap((b) => b.plans);
    const intents = signed.flatMap((b) => b.intents);
    const ders = signed.flatMap((b) => b.ders);
    const deviceStatuses = signed.flatMap((b) => b.deviceStatuses);
    const batch = {
      certificates: intents.map((it, i) => ({ serial: it.serial, der: ders[i]! })),
      issuedAt: this.clock.now(),
      entries: plans.map((p, i): AuditEntryInput => ({
        ...p.ctx,
        action: 'certificate.issued',
        targetType: 'certificate',
        targetId: serialFromBytes(intents[i]!.serial),
        details: {
          caId: intents[i]!.caId,
          profile: p.profile.name,
          subject: p.commonName,
          deviceId: p.req.deviceId ?? null,
          notAfter: intents[i]!.notAfter.toISOString(),
          ...(p.req.renews ? { renews: serialFromBytes(p.req.renews) } : {}),
        },
      })),
      forDevices: intents.flatMap((it, i): IssuedToDevice[] =>
        it.deviceId
          ? [{ serial: it.serial, deviceId: it.deviceId, notAfter: it.notAfter, ctx: plans[i]!.ctx, deviceStatus: deviceStatuses[i] }]
          : [],
      ),
    };
    if (!(await this.completeInOneStatement(batch))) await this.completeInTransaction(batch);
    this.countIssued(plans);
    return signed.map(() => undefined);
  }

  private countIssued(plans: Plan[]): void {
    const telemetry = this.options.telemetry ?? NO_TELEMETRY;
    const byProfile = new Map<string, number>();
    for (const p of plans) byProfile.set(p.profile.name, (byProfile.get(p.profile.name) ?? 0) + 1);
    for (const [profile, n] of byProfile) telemetry.issued(profile, n);
  }

  /** False when the plan did not hold (nothing was written). */
  private async completeInOneStatement(b: Completion): Promise<boolean> {
    const planned = b.forDevices.length && this.options.listener ? this.options.listener.plan(b.forDevices) : { devices: [], entries: [] };
    const appended = await this.audit
      .appendWith(
        [...b.entries, ...planned.entries],
        async (head, rows) => {
          const r = await this.certificates.completeWithRegistration(this.db, {
            certificates: b.certificates,
            issuedAt: b.issuedAt,
            devices: planned.devices,
            head,
            audit: rows,
          });
          if (r.done) return { appended: true };
          if (r.reason === 'head-moved') return { appended: false, head: r.head };
          throw STALE_PLAN;
        },
        ONE_STATEMENT_TRIES,
      )
      .catch((e: unknown) => {
        if (e === STALE_PLAN) return false;
        throw e;
      });
    return appended;
  }

  private async completeInTransaction(b: Completion): Promise<void> {
    await this.db.transaction(async (tx) => {
      const done = await this.certificates.completeIssued(tx, b.certificates, b.issuedAt);
      if (done !== b.certificates.length) throw new Error(`completed ${done} of ${b.certificates.length} intents`);
      const listenerEntries = b.forDevices.length && this.options.listener ? await this.options.listener.onIssued(tx, b.forDevices) : [];
      await this.audit.append(tx, [...b.entries, ...listenerEntries]);
    });
  }

  private fixed(issuer: IssuerContext, p: Plan, crlShard: number): Uint8Array[] {
    const rsa = p.keyAlgorithm.startsWith('RSA');
    const key = `${issuer.caId}|${p.profile.name}|${rsa}|${crlShard}`;
    let exts = this.fixedExtensions.get(key);
    if (!exts) {
      exts = [
        ext.basicConstraints({ ca: false }),
        ext.keyUsage([...p.profile.keyUsage, ...(rsa ? p.profile.rsaKeyUsage : [])]),
        ext.extendedKeyUsage([...p.profile.extendedKeyUsage]),
        ext.authorityKeyIdentifier(issuer.keyId),
        ext.authorityInfoAccess({ ocsp: [this.urls.ocsp()], caIssuers: [this.urls.caCertificate(issuer.caId)] }),
        ext.crlDistributionPoints([this.urls.crl(issuer.caId, crlShard)]),
        ...(p.profile.ocspNoCheck ? [ext.ocspNoCheck()] : []),
      ];
      this.fixedExtensions.set(key, exts);
    }
    return exts;
  }
}
