import { isIP } from 'node:net';
import type { AuditLog } from '../audit/audit-log.js';
import type { CertificateRegistry } from '../ca/certificates.js';
import type { CaHierarchy } from '../ca/hierarchy.js';
import type { Issuance } from '../ca/issuance.js';
import type { KeyVault } from '../ca/key-vault.js';
import { toPem } from '../ca/x509/pem.js';
import type { Clock } from '../shared/clock.js';
import type { Serial } from '../shared/ids.js';
import type { Db } from '../store/db.js';
import type { SettingsStore } from '../store/key-store.js';
import { SingleFlight } from '../shared/single-flight.js';

/** The certificates the service holds for itself: its TLS server certificate and the broker connector's client certificate. */
export type ServiceIdentityName = 'tls-server' | 'broker-connector';

export interface ServiceIdentity {
  name: ServiceIdentityName;
  serial: string;
  commonName: string;
  key: string;
  /** The certificate and its issuing chain (without the root). */
  cert: string;
  /** Trust anchors for the peer: the service's CA certificates, or what the spec names (BROKER_CA_FILE). */
  ca: string[];
  notBefore: Date;
  notAfter: Date;
}

/** What one identity is: its names, where it is kept, how it is audited. */
export interface ServiceIdentitySpec {
  /** The settings key it is kept under (kept as before: `tls_server`, `broker_connector_client`). */
  setting: string;
  actor: string;
  auditAction: string;
  names(): { commonName: string; dnsNames: string[]; ipAddresses: string[] };
  /** Trust anchors other than the service's own CA certificates. */
  trustAnchors?(): string[] | undefined;
}

interface Stored {
  serial: string;
  signerRef: string;
  /** JSON of [dnsNames, ipAddresses]; the connector's records of old kept `cn` instead. */
  names?: string;
  cn?: string;
  notBefore: string;
  notAfter: string;
}

export interface ServiceIdentityDeps {
  db: Db;
  settings: SettingsStore;
  vault: KeyVault;
  issuance: Issuance;
  certificates: CertificateRegistry;
  hierarchy: CaHierarchy;
  audit: AuditLog;
  clock: Clock;
}

const VALIDITY_DAYS = 90;

/**
 * The service's own certificates, issued by its default issuing CA with keys in the vault, and
 * renewed like the delegated responders: when a third of its life is left or its names changed.
 * The renewal is a scheduled job (`renewDue`); every process that uses an identity re-reads it
 * (`current`) and so picks up a certificate another process renewed. A replaced certificate is
 * not revoked: it stays good until it expires, for connections made with it.
 */
export class ServiceIdentities {
  private readonly issuing = new SingleFlight<ServiceIdentityName, ServiceIdentity>();
  private readonly listeners = new Set<(name: ServiceIdentityName) => void>();

  constructor(
    private readonly d: ServiceIdentityDeps,
    private readonly specs: Record<ServiceIdentityName, ServiceIdentitySpec>,
  ) {}

  /** The identity to use now: issued first when there is none, a third of its life is left, or its names changed. */
  async ensure(name: ServiceIdentityName): Promise<ServiceIdentity> {
    const stored = await this.stored(name);
    if (stored && !this.due(name, stored)) return this.load(name, stored);
    return this.issueOnce(name, stored);
  }

  /** The identity as stored, without issuing one (a listener's periodic look). */
  async current(name: ServiceIdentityName): Promise<ServiceIdentity | undefined> {
    const stored = await this.stored(name);
    return stored && this.load(name, stored);
  }

  /** The scheduled job: renews every identity in use (issued before) that is due. */
  async renewDue(): Promise<{ renewed: { name: ServiceIdentityName; serial: string; replaces: string }[] }> {
    const renewed: { name: ServiceIdentityName; serial: string; replaces: string }[] = [];
    for (const name of Object.keys(this.specs) as ServiceIdentityName[]) {
      const stored = await this.stored(name);
      if (!stored || !this.due(name, stored)) continue;
      const next = await this.issueOnce(name, stored);
      renewed.push({ name, serial: next.serial, replaces: stored.serial });
    }
    return { renewed };
  }

  /** Called in this process after it issued an identity (other processes find it with `current`). */
  onIssued(listener: (name: ServiceIdentityName) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private stored(name: ServiceIdentityName): Promise<Stored | undefined> {
    return this.d.settings.get<Stored>(this.d.db, this.specs[name].setting);
  }

  private due(name: ServiceIdentityName, s: Stored): boolean {
    const notBefore = Date.parse(s.notBefore);
    const notAfter = Date.parse(s.notAfter);
    const renewAt = notAfter - (notAfter - notBefore) / 3;
    return this.d.clock.now().getTime() > renewAt || storedNames(s) !== namesKey(this.specs[name].names());
  }

  /** One issuance per identity at a time in this process (a listener and the job asking at once). */
  private issueOnce(name: ServiceIdentityName, previous: Stored | undefined): Promise<ServiceIdentity> {
    return this.issuing.run(name, () => this.issue(name, previous));
  }

  private async issue(name: ServiceIdentityName, previous: Stored | undefined): Promise<ServiceIdentity> {
    const spec = this.specs[name];
    const names = spec.names();
    const actor = { actor: spec.actor };
    const { signerRef, signer } = await this.d.db.transaction((tx) => this.d.vault.generate(tx, 'EC-P256'));
    const issued = await this.d.issuance.issue(
      {
        profile: 'broker',
        subjectPublicKeyInfo: signer.publicKey,
        commonName: names.commonName,
        dnsNames: names.dnsNames,
        ipAddresses: names.ipAddresses,
        validityDays: VALIDITY_DAYS,
      },
      actor,
    );
    const stored: Stored = {
      serial: issued.serial,
      signerRef,
      names: namesKey(names),
      notBefore: issued.notBefore.toISOString(),
      notAfter: issued.notAfter.toISOString(),
    };
    await this.d.db.transaction(async (tx) => {
      await this.d.settings.set(tx, spec.setting, stored);
      await this.d.audit.append(tx, [
        {
          ...actor,
          action: spec.auditAction,
          targetType: 'certificate',
          targetId: issued.serial,
          details: {
            commonName: names.commonName,
            dnsNames: names.dnsNames,
            ipAddresses: names.ipAddresses,
            ...(previous ? { replaces: previous.serial } : {}),
          },
        },
      ]);
    });
    for (const l of this.listeners) l(name);
    return this.load(name, stored);
  }

  private async load(name: ServiceIdentityName, s: Stored): Promise<ServiceIdentity> {
    const spec = this.specs[name];
    const cert = await this.d.certificates.get(s.serial as Serial);
    const chain = await this.d.hierarchy.chain(cert.caId);
    const ca = spec.trustAnchors?.() ?? (await this.d.hierarchy.list()).filter((c) => c.certificate).map((c) => c.certificate!);
    return {
      name,
      serial: s.serial,
      commonName: spec.names().commonName,
      key: await this.d.vault.tlsPrivateKeyPem(this.d.db, s.signerRef),
      cert:
        cert.certificate! +
        chain
          .slice(0, -1)
          .map((der) => toPem(der))
          .join(''),
      ca,
      notBefore: new Date(s.notBefore),
      notAfter: new Date(s.notAfter),
    };
  }
}

const namesKey = (n: { dnsNames: string[]; ipAddresses: string[] }) => JSON.stringify([n.dnsNames, n.ipAddresses]);
const storedNames = (s: Stored) => s.names ?? (s.cn ? namesKey({ dnsNames: [s.cn], ipAddresses: [] }) : '');

/** The TLS listener's certificate: the PUBLIC_URL host, plus localhost and the loopback addresses. */
export function tlsServerSpec(publicUrl: string): ServiceIdentitySpec {
  const host = new URL(publicUrl).hostname.replace(/^\[|\]$/g, '');
  const dnsNames = [...new Set([isIP(host) ? undefined : host, 'localhost'].filter((n): n is string => !!n))];
  const ipAddresses = [...new Set([isIP(host) ? host : undefined, '127.0.0.1', '::1'].filter((n): n is string => !!n))];
  return {
    setting: 'tls_server',
    actor: 'system:tls',
    auditAction: 'tls-identity.issued',
    names: () => ({ commonName: dnsNames[0] ?? ipAddresses[0]!, dnsNames, ipAddresses }),
  };
}

/** The broker connector's client certificate: BROKER_CLIENT_CN (its username under use_identity_as_username), the CN doubling as the DNS name the broker profile needs. */
export function brokerConnectorSpec(clientCn: string, trustAnchors?: () => string[] | undefined): ServiceIdentitySpec {
  return {
    setting: 'broker_connector_client',
    actor: 'system:broker-connector',
    auditAction: 'broker-connector.identity-issued',
    names: () => ({ commonName: clientCn, dnsNames: [clientCn], ipAddresses: [] }),
    ...(trustAnchors ? { trustAnchors } : {}),
  };
}
