import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CONNECTOR_ROLE, dynsecSeed, mosquittoConf, type DynsecSeedOptions } from './broker/mosquitto-setup.js';
import type { Service } from './main.js';
import { toPem } from './ca/x509/pem.js';

const SETTING = 'broker_connector_client';
const SYSTEM = { actor: 'system:broker-connector' };

export interface ConnectorIdentity {
  /** The certificate's CN: the connector's username on a broker with use_identity_as_username. */
  commonName: string;
  key: string;
  /** The certificate and its issuing chain (without the root). */
  cert: string;
  /** The broker's server trust anchors: BROKER_CA_FILE, else every CA certificate of this service. */
  ca: string[];
  notAfter: Date;
}

/**
 * The service's own client certificate for broker connectors, issued by its default issuing CA
 * with the CN BROKER_CLIENT_CN, its key in the vault under the KEK, and reissued when a third of
 * its life is left or the CN changed (like the TLS server certificate in tls-identity.ts).
 */
export async function connectorIdentity(svc: Service): Promise<ConnectorIdentity> {
  const cn = svc.config.brokers.clientCn;
  let current = await svc.settings.get<{ serial: string; signerRef: string; cn: string; notBefore: string; notAfter: string }>(svc.db, SETTING);
  const now = svc.clock.now().getTime();
  const stale = current && (current.cn !== cn || now > Date.parse(current.notAfter) - (Date.parse(current.notAfter) - Date.parse(current.notBefore)) / 3);
  if (!current || stale) {
    const { signerRef, signer } = await svc.db.transaction((tx) => svc.vault.generate(tx, 'EC-P256'));
    // The broker profile (clientAuth) needs a name: the CN doubles as the DNS name.
    const issued = await svc.issuance.issue({ profile: 'broker', subjectPublicKeyInfo: signer.publicKey, commonName: cn, dnsNames: [cn], validityDays: 90 }, SYSTEM);
    const previous = current?.serial;
    current = { serial: issued.serial, signerRef, cn, notBefore: issued.notBefore.toISOString(), notAfter: issued.notAfter.toISOString() };
    await svc.db.transaction(async (tx) => {
      await svc.settings.set(tx, SETTING, current);
      await svc.audit.append(tx, [{ ...SYSTEM, action: 'broker-connector.identity-issued', targetType: 'certificate', targetId: issued.serial, details: { commonName: cn, ...(previous ? { replaces: previous } : {}) } }]);
    });
  }
  const cert = await svc.certificates.get(current.serial as never);
  const chain = await svc.hierarchy.chain(cert.caId);
  const caFile = svc.config.brokers.mqtt?.caFile;
  const ca = caFile ? [readFileSync(caFile, 'utf8')] : (await svc.hierarchy.list()).filter((c) => c.certificate).map((c) => c.certificate!);
  return {
    commonName: cn,
    key: await svc.vault.tlsPrivateKeyPem(svc.db, current.signerRef),
    cert: cert.certificate! + chain.slice(0, -1).map((d) => toPem(d)).join(''),
    ca,
    notAfter: new Date(current.notAfter),
  };
}

/** Every signing CA's current CRL, PEM, concatenated: what Mosquitto's crlfile holds. */
export async function crlBundlePem(svc: Service): Promise<string> {
  const crls = await svc.crls.all();
  const ders = await Promise.all(crls.map((c) => svc.crls.der(c.caId, c.crlNumber)));
  return ders.filter((d): d is Buffer => !!d).map((d) => toPem(d, 'X509 CRL')).join('');
}

export interface BrokerSetupOptions {
  dir: string;
  /** Where the broker will find the files (default: dir itself). */
  brokerDir?: string;
  port?: number;
  bindAddress?: string;
  pluginPath?: string;
  /** The broker's own server certificate and key, as the broker sees them. */
  certFile?: string;
  keyFile?: string;
  /** Extra roles and clients for the seed (tests: the devices' roles). */
  seed?: Pick<DynsecSeedOptions, 'roles' | 'clients' | 'defaultACLAccess'>;
}

export interface BrokerSetupFiles {
  connectorCn: string;
  caFile: string;
  crlFile: string;
  dynsecFile: string;
  confFile: string;
  readmeFile: string;
}

/**
 * What an operator needs to configure Mosquitto for the connector: the CA bundle (trust anchors
 * for client certificates), the current CRLs, a seed dynamic-security.json granting the
 * connector's CN the admin role (a certificate login: no password), and a mosquitto.conf snippet.
 */
export async function writeBrokerSetup(svc: Service, o: BrokerSetupOptions): Promise<BrokerSetupFiles> {
  const cas = (await svc.hierarchy.list()).filter((c) => c.certificate).map((c) => c.certificate!);
  if (cas.length === 0) throw new Error('this store has no CA yet: run `mqtt-ca init` first');
  mkdirSync(o.dir, { recursive: true });
  const at = (f: string) => join(o.dir, f);
  const broker = (f: string) => join(o.brokerDir ?? resolve(o.dir), f);
  const b = svc.config.brokers;
  writeFileSync(at('ca.pem'), cas.join(''));
  writeFileSync(at('crl.pem'), await crlBundlePem(svc));
  // Mosquitto rewrites this file on every change: it must stay writable by the broker.
  writeFileSync(at('dynamic-security.json'), JSON.stringify(dynsecSeed({ connectorCn: b.clientCn, denyRole: b.denyRole, notifyTopic: b.notifyTopic, ...o.seed }), null, 2), { mode: 0o600 });
  const conf = mosquittoConf({
    port: o.port ?? 8883,
    ...(o.bindAddress ? { bindAddress: o.bindAddress } : {}),
    caFile: broker('ca.pem'),
    crlFile: broker('crl.pem'),
    dynsecFile: broker('dynamic-security.json'),
    certFile: o.certFile ?? '/etc/mosquitto/certs/server.pem',
    keyFile: o.keyFile ?? '/etc/mosquitto/certs/server.key',
    ...(o.pluginPath ? { pluginPath: o.pluginPath } : {}),
  });
  writeFileSync(at('mosquitto.conf'), conf);
  writeFileSync(
    at('README.txt'),
    [
      `mqtt-ca broker connector identity: certificate CN "${b.clientCn}" (its MQTT username with use_identity_as_username).`,
      `It holds the dynsec role ${CONNECTOR_ROLE} (administer $CONTROL/dynamic-security/v1, read $SYS/broker/log/#, publish ${b.notifyTopic}/#).`,
      `Blocked clients get role ${b.denyRole}.`,
      '',
      'ca.pem                 cafile: the CA certificates that sign device and connector certificates',
      'crl.pem                crlfile: the current CRLs (keep fresh: mqtt-ca crl-sync --out crl.pem --reload "kill -HUP <pid>")',
      'dynamic-security.json  plugin_opt_config_file (seed; the broker rewrites it, keep it writable by the broker)',
      'mosquitto.conf         a listener snippet to include or merge',
      '',
      'Then set on mqtt-ca: BROKER_MQTT_URL=mqtts://<broker host>:<port> (and BROKER_CA_FILE if the broker\'s server certificate is not from this CA).',
      '',
    ].join('\n'),
  );
  return { connectorCn: b.clientCn, caFile: at('ca.pem'), crlFile: at('crl.pem'), dynsecFile: at('dynamic-security.json'), confFile: at('mosquitto.conf'), readmeFile: at('README.txt') };
}
