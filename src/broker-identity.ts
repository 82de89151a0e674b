import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BROKER_SETUPS, type BrokerKind } from './broker/setup/index.js';
import type { BrokerSetupInput, DynsecSeedExtras } from './broker/setup/plan.js';
import type { CaHierarchy, CaView } from './ca/hierarchy.js';
import type { Issuance } from './ca/issuance.js';
import type { Config } from './config/config.js';
import type { CrlPublisher } from './revoke/crl-publisher.js';
import { toPem } from './ca/x509/pem.js';
import { summarizeCrlBundle } from './ca/x509/inspect.js';
import { writeCrlHashDir } from './revoke/crl-sync.js';

/** Where the broker's files come from (the Service of main.ts has all of it). */
export interface CrlBundleSource {
  crls: Pick<CrlPublisher, 'all' | 'der'>;
}
export interface BrokerSetupSource extends CrlBundleSource {
  config: Pick<Config, 'publicUrl'> &
    Partial<Pick<Config, 'crlShards'>> & { brokers: Pick<Config['brokers'], 'clientCn' | 'denyRole' | 'notifyTopic'> };
  hierarchy: Pick<CaHierarchy, 'list' | 'chain'>;
  /** Needed only when broker-setup issues the broker's certificate. */
  issuance?: Pick<Issuance, 'issue'>;
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

/** The names of a broker certificate broker-setup issues (profile `broker`, from the default issuing CA). */
export interface BrokerCertificateRequest {
  dnsNames: string[];
  ipAddresses: string[];
  /** Default: the first DNS name, else the first address. */
  commonName?: string;
  validityDays?: number;
  /** The TLS Feature status_request extension (RFC 7633): clients that honour it refuse the broker without a stapled OCSP answer. */
  mustStaple?: boolean;
}

export interface BrokerSetupOptions {
  /** Default mosquitto. */
  broker?: BrokerKind;
  dir: string;
  /** Where the broker will find the files (default: dir itself). */
  brokerDir?: string;
  port?: number;
  bindAddress?: string;
  /** mosquitto: the dynamic-security plugin. */
  pluginPath?: string;
  /** A certificate to issue for the broker (its key is made here and written beside it)... */
  certificate?: BrokerCertificateRequest;
  /** ...or the broker's own certificate and key, as the broker sees them. */
  certFile?: string;
  keyFile?: string;
  /** mosquitto: extra roles and clients for the dynsec seed (tests: the devices' roles). */
  seed?: DynsecSeedExtras;
  /** rabbitmq: where its CRLs come from (default hash-dir), the management listener's port (default 15672). */
  crlMode?: 'http' | 'hash-dir';
  managementPort?: number;
}

export interface BrokerSetupFiles {
  broker: BrokerKind;
  connectorCn: string;
  caFile: string;
  crlFile: string;
  readmeFile: string;
  /** The broker certificate issued for it (absent when its own files were named). */
  issued?: { serial: string; certFile: string; keyFile: string };
  /** Every file written, by name, with its path here. */
  paths: Record<string, string>;
}

/**
 * The CA certificates a broker trusts, each once: roots first, the issuing CA of the broker's
 * certificate last (NATS takes the last certificate of its ca_file as its OCSP issuer).
 */
function caOrder(cas: CaView[], brokerIssuer: string | null): CaView[] {
  const rank = (c: CaView) => (c.kind === 'root' ? 0 : c.id === brokerIssuer ? 2 : 1);
  return cas.filter((c) => c.certificate).sort((a, b) => rank(a) - rank(b));
}

/**
 * What an operator needs to configure one broker: the CA bundle, the current CRLs, a broker
 * certificate (issued here unless its own is named), and that broker's configuration as its
 * writer (src/broker/setup) makes it, with a README of what it checks and what to run.
 */
export async function writeBrokerSetup(svc: BrokerSetupSource, o: BrokerSetupOptions): Promise<BrokerSetupFiles> {
  const kind = o.broker ?? 'mosquitto';
  const views = await svc.hierarchy.list();
  if (!views.some((c) => c.certificate)) throw new Error('this store has no CA yet: run `mqtt-ca init` first');
  if (kind === 'rabbitmq' && (o.crlMode ?? 'hash-dir') === 'hash-dir' && (svc.config.crlShards ?? 0) > 0)
    throw new Error(
      "RabbitMQ's hash-dir CRL mode missed revocations with partitioned CRLs (CRL_SHARDS > 0): use --crl-mode http (docs/brokers/rabbitmq.md)",
    );
  if (!o.certificate && !(o.certFile && o.keyFile))
    throw new Error('name the broker certificate to issue (DNS names or addresses), or the certificate and key files it has');
  mkdirSync(o.dir, { recursive: true });
  const at = (f: string) => join(o.dir, f);
  const brokerDir = o.brokerDir ?? resolve(o.dir);
  const broker = (f: string) => join(brokerDir, f);
  const paths: Record<string, string> = {};
  const write = (name: string, content: string, mode = 0o644) => {
    writeFileSync(at(name), content, { mode });
    paths[name] = at(name);
  };

  let issued: BrokerSetupFiles['issued'];
  let issuerId = views.find((c) => c.isDefaultIssuer)?.id ?? null;
  if (o.certificate) {
    if (!svc.issuance) throw new Error('broker-setup cannot issue a certificate here');
    const r = o.certificate;
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const cert = await svc.issuance.issue(
      {
        profile: 'broker',
        subjectPublicKeyInfo: key.publicKey.export({ format: 'der', type: 'spki' }),
        commonName: r.commonName,
        dnsNames: r.dnsNames,
        ipAddresses: r.ipAddresses,
        validityDays: r.validityDays,
        mustStaple: r.mustStaple,
      },
      { actor: 'broker-setup' },
    );
    issuerId = cert.caId;
    const chain = await svc.hierarchy.chain(cert.caId);
    write(
      'broker.pem',
      toPem(cert.der) +
        chain
          .slice(0, -1)
          .map((d) => toPem(d))
          .join(''),
    );
    // The broker reads its key; it may run as its own user: hand it over with chown (the README says so).
    write('broker.key', key.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, 0o600);
    issued = { serial: cert.serial, certFile: at('broker.pem'), keyFile: at('broker.key') };
  }
  const cas = caOrder(views, issuerId);
  write('ca.pem', cas.map((c) => c.certificate!).join(''));
  write('crl.pem', await crlBundlePem(svc));

  const b = svc.config.brokers;
  const input: BrokerSetupInput = {
    brokerDir,
    port: o.port ?? 8883,
    bindAddress: o.bindAddress,
    caChain: cas.map((c) => c.certificate!),
    files: {
      ca: broker('ca.pem'),
      crl: broker('crl.pem'),
      cert: issued ? broker('broker.pem') : o.certFile!,
      key: issued ? broker('broker.key') : o.keyFile!,
    },
    publicUrl: svc.config.publicUrl,
    cas: cas.map((c) => ({ id: c.id, name: c.name, certificate: c.certificate! })),
    connector: { cn: b.clientCn, denyRole: b.denyRole, notifyTopic: b.notifyTopic },
    mosquitto: { pluginPath: o.pluginPath, seed: o.seed },
    rabbitmq: { crlMode: o.crlMode, managementPort: o.managementPort },
  };
  const plan = BROKER_SETUPS[kind](input);
  for (const f of plan.files) write(f.name, f.content, f.mode);
  if (plan.crlHashDir) {
    // The broker starts with the current CRLs; crl-sync --hash-dir keeps them.
    const crls = await summarizeCrlBundle(await crlBundlePem(svc));
    for (const name of await writeCrlHashDir(at(plan.crlHashDir), crls))
      paths[`${plan.crlHashDir}/${name}`] = at(join(plan.crlHashDir, name));
  }

  const listing = [
    ['ca.pem', 'the CA certificates (roots first, the broker certificate’s issuing CA last)'],
    ['crl.pem', 'the current CRLs of every CA, PEM'],
    ...(issued
      ? [
          ['broker.pem', `the broker's certificate (serial ${issued.serial}) and its chain without the root`],
          ['broker.key', "the broker's private key (0600: chown it to the broker's user)"],
        ]
      : []),
    ...plan.files.map((f) => [f.name, f.what]),
    ...(plan.crlHashDir ? [[`${plan.crlHashDir}/`, 'the current CRLs as <issuer hash>.r<N> (crl-sync --hash-dir keeps them)']] : []),
  ];
  const width = Math.max(...listing.map(([n]) => n!.length)) + 2;
  write(
    'README.txt',
    [`mqtt-ca broker-setup --broker ${kind}`, '', ...listing.map(([n, w]) => `${n!.padEnd(width)}${w}`), '', ...plan.readme, ''].join('\n'),
  );
  return {
    broker: kind,
    connectorCn: b.clientCn,
    caFile: at('ca.pem'),
    crlFile: at('crl.pem'),
    readmeFile: at('README.txt'),
    ...(issued ? { issued } : {}),
    paths,
  };
}
