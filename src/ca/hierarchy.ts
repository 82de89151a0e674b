import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { Db, Executor } from '../store/db.js';
import type { CaRow, CaStore } from '../store/ca-store.js';
import type { SettingsStore } from '../store/key-store.js';
import type { CertificateStore } from '../store/certificate-store.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { ActorContext } from '../shared/actor.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, badRequest, conflict, notFound } from '../shared/errors.js';
import { newId, serialFromBytes } from '../shared/ids.js';
import type { KeyVault } from './key-vault.js';
import type { KeyAlgorithm, Signer } from './keys.js';
import type { PkiUrls } from './urls.js';
import { encodeCertificate, encodeCertificationRequest, encodeCertificationRequestInfo, encodeTbsCertificate } from './x509/encode.js';
import { ext, keyIdentifier } from './x509/extensions.js';
import { encodeName, type NameAttribute } from './x509/names.js';
import { fromPemAll, toPem } from './x509/pem.js';
import { nameFields, parseCertificate, type ParsedCertificate } from './x509/inspect.js';
import { keyTypeLabel } from './x509/spki.js';
import { createHash } from 'node:crypto';

export interface CaSubject {
  commonName: string;
  organization?: string | undefined;
  organizationalUnit?: string | undefined;
  country?: string | undefined;
}

export interface CaView {
  id: string;
  name: string;
  parentId: string | null;
  kind: 'root' | 'intermediate';
  status: CaRow['status'];
  keyAlgorithm: string;
  pathLen: number | null;
  subject: string | null;
  certificate: string | null;
  csr: string | null;
  notBefore: string | null;
  notAfter: string | null;
  createdAt: string;
  isDefaultIssuer: boolean;
}

/** What issuance needs of the CA that signs: cached, since it never changes once the CA is active. */
export interface IssuerContext {
  caId: string;
  signer: Signer;
  subjectDer: Buffer;
  keyId: Buffer;
  notAfter: Date;
  certificateDer: Buffer;
  /** False for a root: it signs CA and OCSP responder certificates only, never a device's or a broker's. */
  issuesLeaves: boolean;
}

/** A CA that signs CRLs and OCSP responses, with what it vouches for (intermediates: end entities; roots: CAs). */
export interface SigningCa {
  id: string;
  scope: 'user' | 'ca';
  keyAlgorithm: KeyAlgorithm;
}

const DAY = 86_400_000;
const BACKDATE_MS = 60_000; // tolerate a minute of clock skew on relying parties
const DEFAULT_ISSUER_KEY = 'default_issuing_ca';
const DEFAULT_ISSUER_TTL_MS = 5_000;

export function caNameAttributes(s: CaSubject): NameAttribute[] {
  const attrs: NameAttribute[] = [];
  if (s.country) attrs.push({ type: 'C', value: s.country });
  if (s.organization) attrs.push({ type: 'O', value: s.organization });
  if (s.organizationalUnit) attrs.push({ type: 'OU', value: s.organizationalUnit });
  attrs.push({ type: 'CN', value: s.commonName });
  return attrs;
}

/** A CA signed here: active at once, with no CSR or outside chain. */
function activeCaRow(r: Omit<CaRow, 'status' | 'csrDer' | 'externalChainPem'>): CaRow {
  return { ...r, status: 'active', csrDer: null, externalChainPem: null };
}

/** What every CA certificate here carries: CA flag and path length, keyCertSign + cRLSign, its key id. */
function caExtensions(pathLen: number | null, keyId: Uint8Array): Uint8Array[] {
  return [
    ext.basicConstraints(pathLen === null ? { ca: true } : { ca: true, pathLen }),
    ext.keyUsage(['keyCertSign', 'cRLSign']),
    ext.subjectKeyIdentifier(keyId),
  ];
}

export const newSerial = (): Buffer => {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // positive, 16 bytes of which 127 bits random
  if (b[0] === 0) b[0] = 0x01; // keep the full 16 bytes (no leading-zero trimming)
  return b;
};

export class CaHierarchy {
  private readonly issuers = new Map<string, IssuerContext>();
  private readonly chains = new Map<string, Buffer[]>();
  private defaultIssuer: { id: string | null; until: number } | undefined;

  constructor(
    private readonly db: Db,
    private readonly cas: CaStore,
    private readonly certificates: CertificateStore,
    private readonly settings: SettingsStore,
    private readonly vault: KeyVault,
    private readonly audit: AuditLog,
    private readonly urls: PkiUrls,
    private readonly clock: Clock,
  ) {}

  async createRoot(
    input: { name: string; subject?: CaSubject; keyAlgorithm: KeyAlgorithm; validityDays?: number; pathLen?: number | null },
    ctx: ActorContext,
  ): Promise<CaView> {
    const subjectDer = Buffer.from(encodeName(caNameAttributes(input.subject ?? { commonName: input.name })));
    const pathLen = input.pathLen ?? null;
    return this.db.transaction(async (tx) => {
      const { signerRef, signer } = await this.vault.generate(tx, input.keyAlgorithm);
      const keyId = Buffer.from(keyIdentifier(signer.publicKey));
      const now = this.clock.now();
      const notBefore = new Date(now.getTime() - BACKDATE_MS);
      const notAfter = new Date(notBefore.getTime() + (input.validityDays ?? 7300) * DAY);
      const tbs = encodeTbsCertificate({
        serial: newSerial(),
        signatureAlgorithm: signer.signatureAlgorithm,
        issuer: subjectDer,
        notBefore,
        notAfter,
        subject: subjectDer,
        subjectPublicKeyInfo: signer.publicKey,
        extensions: caExtensions(pathLen, keyId),
      });
      const der = Buffer.from(encodeCertificate(tbs, signer.signatureAlgorithm, await signer.sign(tbs)));
      const row = await this.recordCa(
        tx,
        {
          id: newId('ca'),
          name: input.name,
          parentId: null,
          kind: 'root',
          keyAlgorithm: input.keyAlgorithm,
          signerRef,
          pathLen,
          certificateDer: der,
          subjectDer,
          keyId,
          notBefore,
          notAfter,
          createdAt: now,
        },
        ctx,
        { kind: 'root', name: input.name, keyAlgorithm: input.keyAlgorithm },
      );
      return this.view(row, null);
    });
  }

  async createIntermediate(
    input: {
      name: string;
      parentId: string;
      subject?: CaSubject;
      keyAlgorithm: KeyAlgorithm;
      validityDays?: number;
      pathLen?: number | null;
    },
    ctx: ActorContext,
  ): Promise<CaView> {
    return this.db.transaction((tx) => this.createIntermediateIn(tx, input, ctx));
  }

  /** createIntermediate inside the caller's transaction. */
  private async createIntermediateIn(
    tx: Knex.Transaction,
    input: {
      name: string;
      parentId: string;
      subject?: CaSubject;
      keyAlgorithm: KeyAlgorithm;
      validityDays?: number;
      pathLen?: number | null;
    },
    ctx: ActorContext,
  ): Promise<CaView> {
    const subjectDer = Buffer.from(encodeName(caNameAttributes(input.subject ?? { commonName: input.name })));
    const parent = await this.cas.get(tx, input.parentId);
    if (!parent) throw notFound(`parent CA ${input.parentId} does not exist`);
    const now = this.clock.now();
    this.assertCanSign(parent, now);
    const pathLen = this.childPathLen(parent, input.pathLen);
    const parentSigner = await this.vault.signer(tx, parent.signerRef);
    const { signerRef, signer } = await this.vault.generate(tx, input.keyAlgorithm);
    const keyId = Buffer.from(keyIdentifier(signer.publicKey));
    const notBefore = new Date(now.getTime() - BACKDATE_MS);
    const wanted = new Date(notBefore.getTime() + (input.validityDays ?? 1825) * DAY);
    const notAfter = wanted > parent.notAfter! ? parent.notAfter! : wanted;
    const serial = newSerial();
    const tbs = encodeTbsCertificate({
      serial,
      signatureAlgorithm: parentSigner.signatureAlgorithm,
      issuer: parent.subjectDer,
      notBefore,
      notAfter,
      subject: subjectDer,
      subjectPublicKeyInfo: signer.publicKey,
      extensions: [
        ...caExtensions(pathLen, keyId),
        ext.authorityKeyIdentifier(parent.keyId),
        ext.authorityInfoAccess({ ocsp: [this.urls.ocsp()], caIssuers: [this.urls.caCertificate(parent.id)] }),
        ext.crlDistributionPoints([this.urls.crl(parent.id)]),
      ],
    });
    const id = newId('ca');
    // The CA certificate is a certificate its parent issued: recorded like any other, so the
    // parent's CRL and OCSP can speak for it.
    await this.certificates.insertIntents(tx, [
      {
        serial,
        caId: parent.id,
        profile: 'ca',
        subjectCn: input.subject?.commonName ?? input.name,
        deviceId: null,
        tbsDer: Buffer.from(tbs),
        spkiSha256: createHash('sha256').update(signer.publicKey).digest(),
        keyType: keyTypeLabel(signer.publicKey),
        notBefore,
        notAfter,
        createdAt: now,
      },
    ]);
    const der = Buffer.from(encodeCertificate(tbs, parentSigner.signatureAlgorithm, await parentSigner.sign(tbs)));
    await this.certificates.completeIssued(tx, [{ serial, der }], now);
    const row = await this.recordCa(
      tx,
      {
        id,
        name: input.name,
        parentId: parent.id,
        kind: 'intermediate',
        keyAlgorithm: input.keyAlgorithm,
        signerRef,
        pathLen,
        certificateDer: der,
        subjectDer,
        keyId,
        notBefore,
        notAfter,
        createdAt: now,
      },
      ctx,
      { kind: 'intermediate', name: input.name, parentId: parent.id, keyAlgorithm: input.keyAlgorithm, serial: serialFromBytes(serial) },
    );
    return this.view(row, await this.defaultIssuerId(tx));
  }

  /** A new CA's row, active, recorded with its `ca.created` audit entry inside `tx`. */
  private async recordCa(
    tx: Executor,
    fields: Parameters<typeof activeCaRow>[0],
    ctx: ActorContext,
    details: Record<string, unknown>,
  ): Promise<CaRow> {
    const row = activeCaRow(fields);
    await this.cas.insert(tx, row);
    await this.audit.append(tx, [{ ...ctx, action: 'ca.created', targetType: 'ca', targetId: row.id, details }]);
    return row;
  }

  /**
   * Issuing-CA rollover, inside the caller's transaction: a successor for an active intermediate
   * signed here — same parent, key algorithm, path length and subject, its common name (and the
   * CA's name) with `suffix` — made the default issuer when the old one was. The old CA is left as
   * it is (active: it keeps signing CRLs and OCSP for what it issued). Locks the old CA's row.
   */
  async createSuccessorIn(
    tx: Knex.Transaction,
    oldId: string,
    input: { suffix: string; name?: string | undefined; validityDays?: number | undefined },
    ctx: ActorContext,
  ): Promise<{ successor: CaView; madeDefault: boolean }> {
    const old = await this.cas.getForUpdate(tx, oldId);
    if (!old) throw notFound(`CA ${oldId} does not exist`);
    if (old.kind === 'root') throw conflict(`CA ${oldId} is a root: only an issuing (intermediate) CA is rolled over`);
    if (old.status !== 'active' || !old.certificateDer || !old.notAfter || !old.notBefore)
      throw conflict(`CA ${oldId} is not active (status ${old.status})`);
    if (!old.parentId) throw conflict(`CA ${oldId} is signed by an outside CA: create its successor there and import it`);
    const now = this.clock.now();
    if (old.notAfter <= now) throw conflict(`CA ${oldId} expired at ${old.notAfter.toISOString()}`);
    const fields = nameFields(old.subjectDer);
    const name = input.name ?? `${old.name}${input.suffix}`.slice(0, 64);
    const commonName = input.name ?? `${fields.commonName ?? old.name}${input.suffix}`.slice(0, 64);
    const lifetimeDays = Math.max(1, Math.round((old.notAfter.getTime() - old.notBefore.getTime()) / DAY));
    const successor = await this.createIntermediateIn(
      tx,
      {
        name,
        parentId: old.parentId,
        subject: { ...fields, commonName },
        keyAlgorithm: old.keyAlgorithm as KeyAlgorithm,
        validityDays: input.validityDays ?? lifetimeDays,
        pathLen: old.pathLen,
      },
      ctx,
    );
    const madeDefault = (await this.settings.get<string>(tx, DEFAULT_ISSUER_KEY)) === oldId;
    if (madeDefault) {
      await this.settings.set(tx, DEFAULT_ISSUER_KEY, successor.id);
      await this.audit.append(tx, [
        { ...ctx, action: 'ca.default-issuer-set', targetType: 'ca', targetId: successor.id, details: { replaces: oldId } },
      ]);
    }
    return { successor: { ...successor, isDefaultIssuer: madeDefault }, madeDefault };
  }

  /** An active CA set to retired (it signs nothing more, CRLs included), inside the caller's transaction; false when it was not active. */
  async retireIn(tx: Knex.Transaction, caId: string, ctx: ActorContext, details: Record<string, unknown> = {}): Promise<boolean> {
    const retired = await this.cas.retire(tx, caId);
    this.issuers.delete(caId);
    if (retired) await this.audit.append(tx, [{ ...ctx, action: 'ca.retired', targetType: 'ca', targetId: caId, details }]);
    return retired;
  }

  /**
   * Whether a CA can be revoked here, and its certificate's serial: an intermediate whose
   * certificate its parent here issued (recorded in the certificates table, so the parent's CRL
   * and OCSP speak for it), active or retired. A root, or a CA an outside CA signed, cannot be.
   */
  async revocationTarget(
    caId: string,
    db: Executor = this.db,
  ): Promise<{ caId: string; name: string; parentId: string; serial: Buffer; status: CaRow['status'] }> {
    const ca = await this.cas.get(db, caId);
    if (!ca) throw notFound(`CA ${caId} does not exist`);
    if (ca.kind === 'root') {
      throw badRequest(
        `CA ${caId} is a root: a root is not revoked by a CRL of its own; distrust it by taking it out of the trust stores and replace the hierarchy`,
      );
    }
    if (!ca.parentId || !ca.certificateDer) {
      throw badRequest(`CA ${caId} is signed by an outside CA${ca.certificateDer ? '' : ' (or not yet)'}: revoke its certificate there`);
    }
    if (ca.status === 'revoked') throw new DomainError('AlreadyRevoked', `CA ${caId} is revoked already`);
    if (ca.status !== 'active' && ca.status !== 'retired') throw conflict(`CA ${caId} cannot be revoked: its status is ${ca.status}`);
    return {
      caId,
      name: ca.name,
      parentId: ca.parentId,
      serial: Buffer.from(parseCertificate(ca.certificateDer).serialHex, 'hex'),
      status: ca.status,
    };
  }

  /**
   * Marks a CA revoked inside the caller's transaction (its certificate's revocation is the caller's):
   * it signs nothing more, and stops being the default issuer if it was. Locks the CA's row.
   * Call forgetDefaultIssuer() after the commit. Other replicas drop their cached signer on restart.
   */
  async markRevokedIn(
    tx: Knex.Transaction,
    caId: string,
    ctx: ActorContext,
    details: Record<string, unknown>,
  ): Promise<{ wasDefaultIssuer: boolean }> {
    const ca = await this.cas.getForUpdate(tx, caId);
    if (!ca) throw notFound(`CA ${caId} does not exist`);
    if (!(await this.cas.markRevoked(tx, caId))) {
      throw ca.status === 'revoked'
        ? new DomainError('AlreadyRevoked', `CA ${caId} is revoked already`)
        : conflict(`CA ${caId} cannot be revoked: its status is ${ca.status}`);
    }
    this.issuers.delete(caId);
    const wasDefaultIssuer = (await this.settings.get<string>(tx, DEFAULT_ISSUER_KEY)) === caId;
    if (wasDefaultIssuer) await this.settings.set(tx, DEFAULT_ISSUER_KEY, null);
    await this.audit.append(tx, [
      {
        ...ctx,
        action: 'ca.revoked',
        targetType: 'ca',
        targetId: caId,
        details: { ...details, previousStatus: ca.status, wasDefaultIssuer },
      },
    ]);
    return { wasDefaultIssuer };
  }

  /** Drops the cached default issuer (after a transaction that changed it committed). */
  forgetDefaultIssuer(): void {
    this.defaultIssuer = undefined;
  }

  /** Offline-root path, step 1: a key and a CSR for an outside CA to sign. */
  async createExternalIntermediate(
    input: { name: string; subject?: CaSubject; keyAlgorithm: KeyAlgorithm },
    ctx: ActorContext,
  ): Promise<CaView> {
    const subjectDer = Buffer.from(encodeName(caNameAttributes(input.subject ?? { commonName: input.name })));
    return this.db.transaction(async (tx) => {
      const { signerRef, signer } = await this.vault.generate(tx, input.keyAlgorithm);
      const keyId = Buffer.from(keyIdentifier(signer.publicKey));
      const info = encodeCertificationRequestInfo(subjectDer, signer.publicKey, [
        ext.basicConstraints({ ca: true }),
        ext.keyUsage(['keyCertSign', 'cRLSign']),
      ]);
      const csrDer = Buffer.from(encodeCertificationRequest(info, signer.signatureAlgorithm, await signer.sign(info)));
      const row: CaRow = {
        id: newId('ca'),
        name: input.name,
        parentId: null,
        kind: 'intermediate',
        status: 'awaiting-certificate',
        keyAlgorithm: input.keyAlgorithm,
        signerRef,
        pathLen: null,
        certificateDer: null,
        csrDer,
        externalChainPem: null,
        subjectDer,
        keyId,
        notBefore: null,
        notAfter: null,
        createdAt: this.clock.now(),
      };
      await this.cas.insert(tx, row);
      await this.audit.append(tx, [
        {
          ...ctx,
          action: 'ca.csr-created',
          targetType: 'ca',
          targetId: row.id,
          details: { name: row.name, keyAlgorithm: row.keyAlgorithm },
        },
      ]);
      return this.view(row, null);
    });
  }

  /**
   * Offline-root path, step 2: the outside CA's certificate for our key, with its issuer chain up
   * to a self-signed root. Checked against the key and the CSR, and the chain verified, before it is taken.
   */
  async importCertificate(caId: string, pemBundle: string, ctx: ActorContext): Promise<CaView> {
    const ders = fromPemAll(pemBundle);
    if (ders.length === 0) throw badRequest('no PEM certificate found in the request');
    const [leaf, ...chain] = ders.map((d, i) => parseCertificate(d, i === 0 ? 'CA certificate' : `chain certificate ${i}`));
    return this.db.transaction(async (tx) => {
      const ca = await this.cas.getForUpdate(tx, caId);
      if (!ca) throw notFound(`CA ${caId} does not exist`);
      if (ca.status !== 'awaiting-certificate') throw conflict(`CA ${caId} is not awaiting a certificate (status ${ca.status})`);
      const signer = await this.vault.signer(tx, ca.signerRef);
      if (!leaf!.spki.equals(signer.publicKey)) throw badRequest("the certificate is not for this CA's key");
      if (!leaf!.subjectDer.equals(ca.subjectDer)) throw badRequest("the certificate's subject differs from the CSR's");
      if (!leaf!.isCa || !leaf!.canSignCertificates) {
        throw badRequest('the certificate is not a CA certificate (basicConstraints CA and keyCertSign are required)');
      }
      await verifyChain(leaf!, chain, this.clock.now());
      await this.cas.completeImport(tx, caId, {
        certificateDer: leaf!.der,
        externalChainPem: chain.map((c) => toPem(c.der)).join(''),
        notBefore: leaf!.notBefore,
        notAfter: leaf!.notAfter,
        pathLen: leaf!.pathLen,
      });
      await this.audit.append(tx, [
        {
          ...ctx,
          action: 'ca.certificate-imported',
          targetType: 'ca',
          targetId: caId,
          details: { serial: leaf!.serialHex, issuer: chain[0]?.subject ?? null },
        },
      ]);
      return this.view((await this.cas.get(tx, caId))!, await this.defaultIssuerId(tx));
    });
  }

  async get(caId: string): Promise<CaView> {
    const ca = await this.cas.get(this.db, caId);
    if (!ca) throw notFound(`CA ${caId} does not exist`);
    return this.view(ca, await this.defaultIssuerId(this.db));
  }

  async list(): Promise<CaView[]> {
    const [rows, def] = await Promise.all([this.cas.list(this.db), this.defaultIssuerId(this.db)]);
    return rows.map((r) => this.view(r, def));
  }

  /** DER of the CA's certificate, for the public /pki/ca endpoints. */
  async certificateDer(caId: string): Promise<Buffer | undefined> {
    const ca = await this.cas.get(this.db, caId);
    return ca?.certificateDer ?? undefined;
  }

  /** The CA's certificate and its issuers, up to the root: [this, parent, ..., root]. */
  async chain(caId: string, db: Executor = this.db): Promise<Buffer[]> {
    const cached = this.chains.get(caId);
    if (cached) return cached;
    const out: Buffer[] = [];
    let id: string | null = caId;
    while (id) {
      const ca: CaRow | undefined = await this.cas.get(db, id);
      if (!ca?.certificateDer) break;
      out.push(ca.certificateDer);
      if (ca.externalChainPem) out.push(...fromPemAll(ca.externalChainPem));
      id = ca.parentId;
    }
    // A chain of active CAs never changes: each certificate is fixed once the CA is active.
    if (out.length > 0) this.chains.set(caId, out);
    return out;
  }

  async setDefaultIssuer(caId: string, ctx: ActorContext): Promise<void> {
    await this.db.transaction(async (tx) => {
      const ca = await this.cas.get(tx, caId);
      if (!ca) throw notFound(`CA ${caId} does not exist`);
      this.assertCanSign(ca, this.clock.now());
      if (ca.kind === 'root')
        throw badRequest(
          `CA ${caId} is a root: it signs CAs and OCSP responder certificates only; make an intermediate the default issuer`,
        );
      // A CA being rolled over issues nothing new: its successor took over.
      const successor = await this.cas.successorOf(tx, caId);
      if (successor) throw conflict(`CA ${caId} is rolled over to ${successor}: it issues nothing new (cancel the rollover first)`);
      await this.settings.set(tx, DEFAULT_ISSUER_KEY, caId);
      await this.audit.append(tx, [{ ...ctx, action: 'ca.default-issuer-set', targetType: 'ca', targetId: caId }]);
    });
    this.defaultIssuer = undefined;
  }

  /**
   * The default issuing CA. Read on every issuance batch, so kept for a few seconds (a change made
   * here is seen at once; one made by another replica within DEFAULT_ISSUER_TTL_MS).
   */
  async defaultIssuerId(db: Executor = this.db): Promise<string | null> {
    const now = this.clock.now().getTime();
    if (db === this.db && this.defaultIssuer && this.defaultIssuer.until > now) return this.defaultIssuer.id;
    const id = (await this.settings.get<string>(db, DEFAULT_ISSUER_KEY)) ?? null;
    if (db === this.db) this.defaultIssuer = { id, until: now + DEFAULT_ISSUER_TTL_MS };
    return id;
  }

  /** The CAs that sign CRLs and OCSP responses: active, with a certificate, not expired. */
  async signingCas(): Promise<SigningCa[]> {
    const now = this.clock.now();
    return (await this.list())
      .filter((ca) => ca.status === 'active' && ca.certificate && ca.notAfter && new Date(ca.notAfter) > now)
      .map((ca) => ({ id: ca.id, scope: ca.kind === 'root' ? 'ca' : 'user', keyAlgorithm: ca.keyAlgorithm as KeyAlgorithm }));
  }

  /** The signing context of an active CA; cached (a CA's certificate and key never change). */
  async issuer(caId: string): Promise<IssuerContext> {
    const cached = this.issuers.get(caId);
    if (cached) return cached;
    const ca = await this.cas.get(this.db, caId);
    if (!ca) throw notFound(`CA ${caId} does not exist`);
    this.assertCanSign(ca, this.clock.now());
    const context: IssuerContext = {
      caId,
      signer: await this.vault.signer(this.db, ca.signerRef),
      subjectDer: ca.subjectDer,
      keyId: ca.keyId,
      notAfter: ca.notAfter!,
      certificateDer: ca.certificateDer!,
      issuesLeaves: ca.kind !== 'root',
    };
    this.issuers.set(caId, context);
    return context;
  }

  /**
   * Refuses (Forbidden) a leaf of `profile` from a CA that does not sign leaves (a root), or the
   * CA's own refusal to sign (NotFound, Conflict). Registration asks before a credential is spent;
   * issuance checks again before it signs.
   */
  async assertIssuesLeaves(caId: string, profile: string): Promise<void> {
    const issuer = await this.issuer(caId);
    if (!issuer.issuesLeaves) throw rootRefusal(caId, profile);
  }

  /** Opens every CA key once: a wrong KEK or an altered key is found at start, not at first issuance. */
  async checkKeys(): Promise<void> {
    for (const ca of await this.cas.list(this.db)) {
      const signer = await this.vault.signer(this.db, ca.signerRef);
      if (!Buffer.from(keyIdentifier(signer.publicKey)).equals(ca.keyId)) {
        throw new Error(`CA ${ca.id}: its stored key does not match its key identifier`);
      }
    }
  }

  private assertCanSign(ca: CaRow, now: Date): void {
    if (ca.status !== 'active' || !ca.certificateDer || !ca.notAfter) {
      throw new DomainError('Conflict', `CA ${ca.id} cannot issue: its status is ${ca.status}`);
    }
    if (ca.notAfter <= now) throw new DomainError('Conflict', `CA ${ca.id} cannot issue: it expired at ${ca.notAfter.toISOString()}`);
  }

  private childPathLen(parent: CaRow, requested: number | null | undefined): number | null {
    if (parent.pathLen === 0) throw badRequest(`CA ${parent.id} has pathLen 0: it may not have subordinate CAs`);
    if (parent.pathLen === null) return requested ?? 0;
    const max = parent.pathLen - 1;
    if (requested == null) return max;
    if (requested > max) throw badRequest(`pathLen ${requested} exceeds what the parent allows (${max})`);
    return requested;
  }

  private view(ca: CaRow, defaultIssuer: string | null): CaView {
    return {
      id: ca.id,
      name: ca.name,
      parentId: ca.parentId,
      kind: ca.kind,
      status: ca.status,
      keyAlgorithm: ca.keyAlgorithm,
      pathLen: ca.pathLen,
      subject: ca.certificateDer ? parseCertificate(ca.certificateDer).subject : null,
      certificate: ca.certificateDer ? toPem(ca.certificateDer) : null,
      csr: ca.status === 'awaiting-certificate' && ca.csrDer ? toPem(ca.csrDer, 'CERTIFICATE REQUEST') : null,
      notBefore: ca.notBefore?.toISOString() ?? null,
      notAfter: ca.notAfter?.toISOString() ?? null,
      createdAt: ca.createdAt.toISOString(),
      isDefaultIssuer: defaultIssuer === ca.id,
    };
  }
}

/** Why a root does not sign a device's or a broker's certificate. */
export function rootRefusal(caId: string, profile: string): DomainError {
  return new DomainError(
    'Forbidden',
    `CA ${caId} is a root: it signs CA and OCSP responder certificates only, not ${profile} certificates; issue from an intermediate`,
  );
}

/** Each certificate signed by the next, ending in a self-signed root; all CAs, all valid now. */
async function verifyChain(leaf: ParsedCertificate, chain: ParsedCertificate[], now: Date): Promise<void> {
  if (chain.length === 0) throw badRequest('the issuer chain is missing: send the certificate followed by its issuers up to the root');
  let child = leaf;
  for (const issuer of chain) {
    if (!issuer.isCa || !issuer.canSignCertificates) throw badRequest(`chain certificate ${issuer.subject} is not a CA`);
    if (!child.issuerDer.equals(issuer.subjectDer) || !(await child.verifiedBy(issuer.spki))) {
      throw badRequest(`${child.subject} is not signed by ${issuer.subject}`);
    }
    child = issuer;
  }
  for (const c of [leaf, ...chain]) {
    if (c.notBefore > now || c.notAfter <= now) throw badRequest(`${c.subject} is not valid now`);
  }
  if (!child.selfIssued || !(await child.verifiedBy(child.spki))) {
    throw badRequest('the chain does not end in a self-signed root');
  }
}
