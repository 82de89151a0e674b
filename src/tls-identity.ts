import { isIP } from 'node:net';
import type { Service } from './main.js';
import { toPem } from './ca/x509/pem.js';

const SETTING = 'tls_server';
const SYSTEM = { actor: 'system:tls' };

export interface TlsIdentity {
  key: string;
  cert: string;
  /** Every CA certificate here: the trust anchors for client certificates. */
  ca: string[];
  notAfter: Date;
}

/**
 * The service's own TLS server certificate (for EST and mTLS renewal), issued by its default
 * issuing CA for the PUBLIC_URL host plus localhost, kept in the vault like any key, and reissued
 * when a third of its life is left or the names changed.
 */
export async function tlsIdentity(svc: Service): Promise<TlsIdentity> {
  const host = new URL(svc.config.publicUrl).hostname.replace(/^\[|\]$/g, '');
  const dnsNames = [...new Set([isIP(host) ? undefined : host, 'localhost'].filter((n): n is string => !!n))];
  const ipAddresses = [...new Set([isIP(host) ? host : undefined, '127.0.0.1', '::1'].filter((n): n is string => !!n))];
  const names = JSON.stringify([dnsNames, ipAddresses]);
  let current = await svc.settings.get<{ serial: string; signerRef: string; names: string; notBefore: string; notAfter: string }>(svc.db, SETTING);
  const now = svc.clock.now().getTime();
  const stale = current && (current.names !== names || now > Date.parse(current.notAfter) - (Date.parse(current.notAfter) - Date.parse(current.notBefore)) / 3);
  if (!current || stale) {
    const { signerRef, signer } = await svc.db.transaction((tx) => svc.vault.generate(tx, 'EC-P256'));
    const issued = await svc.issuance.issue({ profile: 'broker', subjectPublicKeyInfo: signer.publicKey, commonName: dnsNames[0] ?? ipAddresses[0], dnsNames, ipAddresses, validityDays: 90 }, SYSTEM);
    current = { serial: issued.serial, signerRef, names, notBefore: issued.notBefore.toISOString(), notAfter: issued.notAfter.toISOString() };
    await svc.db.transaction(async (tx) => {
      await svc.settings.set(tx, SETTING, current);
      await svc.audit.append(tx, [{ ...SYSTEM, action: 'tls-identity.issued', targetType: 'certificate', targetId: issued.serial, details: { dnsNames, ipAddresses } }]);
    });
  }
  const cert = await svc.certificates.get(current.serial as never);
  const chain = await svc.hierarchy.chain(cert.caId);
  const cas = (await svc.hierarchy.list()).filter((c) => c.certificate).map((c) => c.certificate!);
  return {
    key: await svc.vault.tlsPrivateKeyPem(svc.db, current.signerRef),
    cert: cert.certificate! + chain.slice(0, -1).map((d) => toPem(d)).join(''),
    ca: cas,
    notAfter: new Date(current.notAfter),
  };
}
