import type { DynsecSeedOptions } from '../mosquitto-setup.js';

/** Extra dynsec roles, clients and default ACL access for Mosquitto's seed (tests: the devices' roles). */
export type DynsecSeedExtras = Pick<DynsecSeedOptions, 'roles' | 'clients' | 'defaultACLAccess'>;

/**
 * What `mqtt-ca broker-setup --broker <kind>` hands each broker's writer, and what a writer returns.
 * The orchestrator (src/broker-identity.ts) writes the common files (CA bundle, CRLs, the broker's
 * certificate and key); a writer adds that broker's configuration, in the order and format it reads.
 */
export interface BrokerSetupInput {
  /** Where the broker reads the files, absolute: every path in a configuration is under it. */
  brokerDir: string;
  /** The mutual-TLS MQTT listener's port. */
  port: number;
  bindAddress?: string | undefined;
  /** The CA certificates, PEM each: roots first, the broker certificate's issuing CA last. */
  caChain: string[];
  /** The common files as the broker sees them (absolute paths). */
  files: {
    /** caChain concatenated in that order. */
    ca: string;
    /** Every current CRL, PEM, concatenated (a Mosquitto crlfile). */
    crl: string;
    /** The broker's certificate and its chain without the root. */
    cert: string;
    key: string;
  };
  /** The service's public base URL (PUBLIC_URL): CRLs at /pki/crl/{caId}.crl, OCSP at /pki/ocsp. */
  publicUrl: string;
  /** The CAs, for writers that name per-CA URLs (a CRL per CA). */
  cas: { id: string; name: string; certificate: string }[];
  /** The broker connector's identity: its certificate CN, the deny role and the notice topic. */
  connector: { cn: string; denyRole: string; notifyTopic: string };
  /** rabbitmq: where its CRLs come from (default hash-dir) and the management listener's port (default 15672). */
  rabbitmq?: { crlMode?: 'http' | 'hash-dir' | undefined; managementPort?: number | undefined };
  /** mosquitto: the dynamic-security plugin and extra seed entries. */
  mosquitto?: {
    pluginPath?: string | undefined;
    seed?: DynsecSeedExtras | undefined;
  };
}

/** A file a writer adds, named relative to the setup directory. */
export interface SetupFile {
  name: string;
  content: string;
  /** Default 0o644: the broker, which may run as its own user, reads it. */
  mode?: number;
  /** One line for the README: what it is and where the broker takes it. */
  what: string;
}

export interface BrokerSetupPlan {
  files: SetupFile[];
  /** A directory (relative) the orchestrator fills with the current CRLs as `openssl rehash` names them (crl-sync --hash-dir keeps it). */
  crlHashDir?: string | undefined;
  /** The README's broker-specific part: what the broker checks, what it cannot, what to run. */
  readme: string[];
}

export type BrokerSetupWriter = (input: BrokerSetupInput) => BrokerSetupPlan;
