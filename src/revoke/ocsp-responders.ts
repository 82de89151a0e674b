import type { AuditLog } from '../audit/audit-log.js';
import type { ActorContext } from '../shared/actor.js';
import type { Issuance } from '../ca/issuance.js';
import type { KeyVault } from '../ca/key-vault.js';
import type { KeyAlgorithm, Signer } from '../ca/keys.js';
import { encodeResponseCerts, publicKeyHash } from '../ca/x509/ocsp-response.js';
import type { Clock } from '../shared/clock.js';
import { serialToBytes, type Serial } from '../shared/ids.js';
import type { CertificateStore } from '../store/certificate-store.js';
import type { Db } from '../store/db.js';
import type { SettingsStore } from '../store/key-store.js';
import type { CrlIssuers } from './crl-publisher.js';
import { SingleFlight } from '../shared/single-flight.js';

/** The delegated responder that signs a CA's OCSP responses (RFC 6960 §4.2.2.2). */
export interface ResponderIdentity {
  caId: string;
  serial: Serial;
  signer: Signer;
  certificateDer: Buffer;
  /** The responses' `certs` field: this certificate, encoded once. */
  certsField: Uint8Array;
  /** ResponderID byKey. */
  keyHash: Buffer;
  notAfter: Date;
  /** Epoch ms from which a successor is issued. */
  renewAt: number;
}

export interface ResponderPolicy {
  /** Validity of a responder certificate. */
  lifetimeDays: number;
  /** How long a response is valid: a responder is replaced while it can still cover several. */
  responseValidityMs: number;
}

const SYSTEM: ActorContext = { actor: 'system:ocsp' };
const settingKey = (caId: string) => `ocsp_responder:${caId}`;

/** A responder key of the CA's family: RSA CAs get RSA-2048 responders (signing per nonce request must stay cheap). */
function responderAlgorithm(caAlgorithm: KeyAlgorithm): KeyAlgorithm {
  return caAlgorithm.startsWith('RSA') ? 'RSA-2048' : caAlgorithm;
}

/**
 * One delegated OCSP responder certificate per CA: EKU OCSPSigning and id-pkix-ocsp-nocheck,
 * issued by that CA through the ordinary issuance path (so recorded and audited like any
 * certificate), its key generated here and kept in the vault under the KEK. A successor is issued
 * once a third of the lifetime (at least three response validities) is left; until it is in
 * place the current one keeps signing, so renewal never stops the responder.
 */
export class OcspResponders {
  private readonly current = new Map<string, ResponderIdentity>();
  private readonly renewing = new SingleFlight<string, ResponderIdentity>();

  constructor(
    private readonly db: Db,
    private readonly cas: CrlIssuers,
    private readonly settings: SettingsStore,
    private readonly vault: KeyVault,
    private readonly issuance: Issuance,
    private readonly certificates: CertificateStore,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly policy: ResponderPolicy,
  ) {}

  /** The identity that signs for `caId` now: issued on first use, renewed when due. */
  async responder(caId: string): Promise<ResponderIdentity> {
    const now = this.clock.now().getTime();
    let id = this.current.get(caId) ?? (await this.load(caId));
    if (id && now < id.renewAt) return id;
    // Due: a valid one keeps signing while its successor is made; an expired one waits for it.
    const next = this.renew(caId, id);
    if (id && id.notAfter.getTime() - now > this.policy.responseValidityMs) {
      next.catch(() => undefined);
      return id;
    }
    id = await next;
    return id;
  }

  /** Makes sure every signing CA has a responder (at start, so the first poll is not the one that waits). */
  async ensureAll(): Promise<ResponderIdentity[]> {
    return Promise.all((await this.cas.signingCas()).map((ca) => this.responder(ca.id)));
  }

  /** Issues a successor for every responder that is due, and waits for them (what housekeeping runs). */
  async renewDue(): Promise<ResponderIdentity[]> {
    const out: ResponderIdentity[] = [];
    for (const ca of await this.cas.signingCas()) {
      const id = this.current.get(ca.id) ?? (await this.load(ca.id));
      out.push(id && this.clock.now().getTime() < id.renewAt ? id : await this.renew(ca.id, id));
    }
    return out;
  }

  private async load(caId: string): Promise<ResponderIdentity | undefined> {
    const ref = await this.settings.get<{ serial: Serial; signerRef: string }>(this.db, settingKey(caId));
    if (!ref) return undefined;
    const row = await this.certificates.get(this.db, serialToBytes(ref.serial));
    if (!row?.der || row.status !== 'issued') return undefined;
    const signer = await this.vault.signer(this.db, ref.signerRef);
    const id = this.identity(caId, ref.serial, signer, row.der, row.notBefore, row.notAfter);
    this.current.set(caId, id);
    return id;
  }

  private renew(caId: string, previous: ResponderIdentity | undefined): Promise<ResponderIdentity> {
    return this.renewing.run(caId, () => this.issue(caId, previous));
  }

  private async issue(caId: string, previous: ResponderIdentity | undefined): Promise<ResponderIdentity> {
    // Another replica may have renewed it meanwhile.
    const stored = await this.load(caId);
    if (stored && stored.serial !== previous?.serial && this.clock.now().getTime() < stored.renewAt) return stored;
    const ca = (await this.cas.signingCas()).find((c) => c.id === caId);
    if (!ca) throw new Error(`CA ${caId} does not sign: no OCSP responder for it`);
    const { signerRef, signer } = await this.db.transaction((tx) => this.vault.generate(tx, responderAlgorithm(ca.keyAlgorithm)));
    const issued = await this.issuance.issueResponder(
      {
        caId,
        subjectPublicKeyInfo: signer.publicKey,
        commonName: `OCSP Responder ${caId}`.slice(0, 64),
        validityDays: this.policy.lifetimeDays,
      },
      SYSTEM,
    );
    await this.db.transaction(async (tx) => {
      await this.settings.set(tx, settingKey(caId), { serial: issued.serial, signerRef });
      await this.audit.append(tx, [
        {
          ...SYSTEM,
          action: 'ocsp-responder.issued',
          targetType: 'certificate',
          targetId: issued.serial,
          details: { caId, notAfter: issued.notAfter.toISOString(), ...(previous ? { replaces: previous.serial } : {}) },
        },
      ]);
    });
    const id = this.identity(caId, issued.serial, signer, issued.der, issued.notBefore, issued.notAfter);
    this.current.set(caId, id);
    return id;
  }

  private identity(caId: string, serial: Serial, signer: Signer, der: Buffer, notBefore: Date, notAfter: Date): ResponderIdentity {
    const lifetime = notAfter.getTime() - notBefore.getTime();
    // A CA near its own end caps the responder's life: never renew before half of it is used.
    const renewBefore = Math.min(Math.max(lifetime / 3, 3 * this.policy.responseValidityMs), lifetime / 2);
    return {
      caId,
      serial,
      signer,
      certificateDer: der,
      certsField: encodeResponseCerts([der]),
      keyHash: publicKeyHash(signer.publicKey, 'sha1'),
      notAfter,
      renewAt: notAfter.getTime() - renewBefore,
    };
  }
}
