import { createPublicKey } from 'node:crypto';
import type { AuditLog } from '../audit/audit-log.js';
import { seal, unseal } from '../ca/envelope.js';
import type { CaHierarchy } from '../ca/hierarchy.js';
import type { Kek } from '../ca/kek.js';
import type { KeyAlgorithm } from '../ca/keys.js';
import { parseCertificate } from '../ca/x509/inspect.js';
import { toPem } from '../ca/x509/pem.js';
import type { Enrollment } from '../enroll/enrollment.js';
import type { Credential } from '../enroll/methods.js';
import { deviceProofOf, pickupSigningInput, type DeviceCertificateAuthenticator } from '../enroll/device-certificate-auth.js';
import { keyAndCsr, ServerKeygen } from '../enroll/server-keygen.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, conflict, notFound } from '../shared/errors.js';
import { serialFromBytes } from '../shared/ids.js';
import type { CertificateStore } from '../store/certificate-store.js';
import type { Db } from '../store/db.js';
import type { StagedCredentialStore } from '../store/staged-credential-store.js';

const unauthenticated = (msg: string) => new DomainError('Unauthenticated', msg);
const forbidden = (msg: string) => new DomainError('Forbidden', msg);

/** The key algorithm of a certificate's key, so its successor gets the same kind. */
function algorithmOf(spki: Buffer): KeyAlgorithm {
  const k = createPublicKey({ key: spki, format: 'der', type: 'spki' });
  if (k.asymmetricKeyType === 'ed25519') return 'Ed25519';
  if (k.asymmetricKeyType === 'rsa') return (k.asymmetricKeyDetails?.modulusLength ?? 2048) >= 3072 ? 'RSA-3072' : 'RSA-2048';
  return k.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'EC-P384' : 'EC-P256';
}

/**
 * Renewal for devices whose key the service generated (they cannot make one): when such a
 * certificate comes due, a new key is generated and sealed under the KEK, certified through the
 * normal enrollment flow (a renewal of the old certificate), and kept until the device picks it
 * up with the certificate it renews — then the sealed key is wiped. Staging twice (a retried
 * job) makes one key and one certificate: the key is stored before issuance, and issuance is
 * replayed by its Idempotency-Key.
 */
export class StagedCredentials {
  constructor(
    private readonly db: Db,
    private readonly store: StagedCredentialStore,
    private readonly certificates: CertificateStore,
    private readonly enrollment: Enrollment,
    private readonly hierarchy: CaHierarchy,
    private readonly kek: Kek,
    private readonly auth: DeviceCertificateAuthenticator,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    /** The renewal grace after expiry for a certificate of `profile` held by `deviceId` (the rotation policy). */
    private readonly graceDays: (profile: string, deviceId: string) => Promise<number>,
  ) {}

  /** Stages the successor of certificate `renews` (idempotent); returns the new certificate's serial. */
  async stage(renews: Buffer): Promise<{ serial: string }> {
    let row = await this.store.get(this.db, renews);
    if (row?.serial) return { serial: serialFromBytes(row.serial) };
    const old = await this.certificates.get(this.db, renews);
    if (!old?.der || !old.deviceId) throw notFound(`certificate ${serialFromBytes(renews)} cannot be renewed by staging`);
    if (!row) {
      const alg = algorithmOf(parseCertificate(old.der).spki);
      const { privateKeyPkcs8, csr } = await keyAndCsr(alg, old.deviceId);
      const sealed = seal(this.kek, privateKeyPkcs8, aadOf(renews));
      privateKeyPkcs8.fill(0);
      await this.store.insertPending(this.db, {
        renews,
        deviceId: old.deviceId,
        keyAlgorithm: alg,
        csrDer: csr,
        sealed,
        stagedAt: this.clock.now(),
      });
      row = (await this.store.get(this.db, renews))!;
    }
    const { result } = await this.enrollment.enroll({
      credential: { kind: 'staged-renewal', certificateDer: old.der },
      csr: row.csrDer,
      idempotencyKey: 'staged-credential',
      ctx: { source: 'system:rotation', requestId: `staged-${serialFromBytes(renews)}` },
      methods: ['staged-renewal'],
    });
    const serial = Buffer.from(result.serial, 'hex');
    await this.db.transaction(async (tx) => {
      await this.store.setIssued(tx, renews, serial, this.clock.now());
      await this.audit.append(tx, [
        {
          actor: 'system:rotation',
          action: 'credential.staged',
          targetType: 'certificate',
          targetId: result.serial,
          details: { renews: serialFromBytes(renews), deviceId: old.deviceId, keyAlgorithm: row.keyAlgorithm },
        },
      ]);
    });
    return { serial: result.serial };
  }

  /**
   * Hands a device its staged credential once, as PKCS#12 (or encrypted PKCS#8) under its
   * password: authenticated by the certificate the credential renews (TLS client certificate, or a
   * request signed with its key), which must be ours, not revoked, and within the renewal grace.
   */
  async pickup(credential: Credential | undefined, password: string, format: 'pkcs12' | 'pkcs8', ctx: { requestId?: string | undefined }) {
    const proof = deviceProofOf(credential);
    if (!proof)
      throw unauthenticated(
        'the certificate being renewed is required: the TLS client certificate, or Authorization: MQTT-CA-Renewal cert="...", signed-at="...", signature="..." over "mqtt-ca-staged-pickup\\n" + signed-at + "\\n" + format + "\\n" + hex SHA-256 of the password',
      );
    const {
      row: old,
      serial: renews,
      name,
    } = await this.auth.authenticate(proof, (signedAt) => pickupSigningInput(signedAt, { password, format }));
    const now = this.clock.now();
    if (old.notAfter.getTime() + (await this.graceDays(old.profile, old.deviceId)) * 86_400_000 < now.getTime())
      throw forbidden(`certificate ${name} expired beyond its renewal grace`);
    const staged = await this.store.get(this.db, renews);
    if (!staged?.serial) throw notFound(`no credential is staged for certificate ${name}`);
    const cert = (await this.certificates.get(this.db, staged.serial))!;
    const chain = (await this.hierarchy.chain(cert.caId)).map((d) => toPem(d, 'CERTIFICATE'));
    const pkcs8 = await this.db.transaction(async (tx) => {
      const row = (await this.store.get(tx, renews, true))!;
      if (!row.sealed) throw conflict(`the credential staged for certificate ${name} was picked up at ${row.pickedUpAt!.toISOString()}`);
      const key = unseal(this.kek, row.sealed, aadOf(renews));
      await this.store.wipe(tx, renews, this.clock.now());
      await this.audit.append(tx, [
        {
          actor: `certificate:${name}`,
          requestId: ctx.requestId,
          action: 'credential.picked-up',
          targetType: 'certificate',
          targetId: serialFromBytes(staged.serial!),
          details: { renews: name, deviceId: row.deviceId },
        },
      ]);
      return key;
    });
    try {
      const result = {
        serial: serialFromBytes(staged.serial),
        certificate: toPem(cert.der!, 'CERTIFICATE'),
        chain,
        caId: cert.caId,
        notBefore: cert.notBefore.toISOString(),
        notAfter: cert.notAfter.toISOString(),
      };
      return { ...result, ...ServerKeygen.package({ result, privateKeyPkcs8: pkcs8 }, format, password) };
    } finally {
      pkcs8.fill(0);
    }
  }
}

const aadOf = (renews: Buffer) => `staged:${serialFromBytes(renews)}`;
