import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CONNECTOR_ROLE, dynsecSeed, mosquittoConf, type DynsecSeedOptions } from './broker/mosquitto-setup.js';
import type { CaHierarchy } from './ca/hierarchy.js';
import type { Config } from './config/config.js';
import type { CrlPublisher } from './revoke/crl-publisher.js';
import { toPem } from './ca/x509/pem.js';

/** Where the broker's files come from (the Service of main.ts has all of it). */
export interface CrlBundleSource {
  crls: Pick<CrlPublisher, 'all' | 'der'>;
}
export interface BrokerSetupSource extends CrlBundleSource {
  config: { brokers: Pick<Config['brokers'], 'clientCn' | 'denyRole' | 'notifyTopic'> };
  hierarchy: Pick<CaHierarchy, 'list'>;
}

/** Every signing CA's current CRLs (each shard's too), PEM, concatenated: what Mosquitto's crlfile holds. */
export async function crlBundlePem(svc: CrlBundleSource): Promise<string> {
  const crls = await svc.crls.all();
  const ders = await Promise.all(crls.map((c) => svc.crls.der(c)));
  return ders
    .filter((d): d is Buffer => !!d)
    .map((d) => toPem(d, 'X509 CRL'))
    .join('');
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
export async function writeBrokerSetup(svc: BrokerSetupSource, o: BrokerSetupOptions): Promise<BrokerSetupFiles> {
  const cas = (await svc.hierarchy.list()).filter((c) => c.certificate).map((c) => c.certificate!);
  if (cas.length === 0) throw new Error('this store has no CA yet: run `mqtt-ca init` first');
  mkdirSync(o.dir, { recursive: true });
  const at = (f: string) => join(o.dir, f);
  const broker = (f: string) => join(o.brokerDir ?? resolve(o.dir), f);
  const b = svc.config.brokers;
  writeFileSync(at('ca.pem'), cas.join(''));
  writeFileSync(at('crl.pem'), await crlBundlePem(svc));
  // Mosquitto rewrites this file on every change: it must stay writable by the broker.
  writeFileSync(
    at('dynamic-security.json'),
    JSON.stringify(dynsecSeed({ connectorCn: b.clientCn, denyRole: b.denyRole, notifyTopic: b.notifyTopic, ...o.seed }), null, 2),
    { mode: 0o600 },
  );
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
      'The bus watch reads the broker log on $SYS/broker/log/# with the same identity (mosquitto.conf: log_dest topic and the log_type',
      'lines); for denied publishes and subscribes it follows a log file with log_type debug (BUS_WATCH_LOG_FILE, see mosquitto.conf).',
      '',
      'ca.pem                 cafile: the CA certificates that sign device and connector certificates',
      'crl.pem                crlfile: the current CRLs (keep fresh: mqtt-ca crl-sync --out crl.pem --reload "kill -HUP <pid>")',
      'dynamic-security.json  plugin_opt_config_file (seed; the broker rewrites it, keep it writable by the broker)',
      'mosquitto.conf         a listener snippet to include or merge',
      '',
      "Then set on mqtt-ca: BROKER_MQTT_URL=mqtts://<broker host>:<port> (and BROKER_CA_FILE if the broker's server certificate is not from this CA).",
      '',
    ].join('\n'),
  );
  return {
    connectorCn: b.clientCn,
    caFile: at('ca.pem'),
    crlFile: at('crl.pem'),
    dynsecFile: at('dynamic-security.json'),
    confFile: at('mosquitto.conf'),
    readmeFile: at('README.txt'),
  };
}
