import { DEFAULT_DENY_ROLE, DENY_ACLS, DYNSEC_TOPIC } from './mosquitto-dynsec.js';

/** The dynsec role that lets the connector administer the plugin, read the broker's log and publish its notices. */
export const CONNECTOR_ROLE = 'mqtt-ca-connector';

export interface DynsecSeedOptions {
  /** The connector's certificate CN: its username under use_identity_as_username. No password: only its certificate logs it in. */
  connectorCn: string;
  denyRole?: string;
  notifyTopic: string;
  /** Mosquitto's defaults unless given: clients with no matching ACL may receive and unsubscribe, not publish or subscribe. */
  defaultACLAccess?: { publishClientSend: boolean; publishClientReceive: boolean; subscribe: boolean; unsubscribe: boolean };
  /** More roles and clients to seed (tests: the devices' own roles). */
  roles?: { rolename: string; acls: { acltype: string; topic: string; allow: boolean; priority?: number }[] }[];
  clients?: { username: string; roles?: { rolename: string; priority?: number }[] }[];
}

/** A seed `dynamic-security.json` granting the connector's CN the admin role (and holding the deny role). */
export function dynsecSeed(o: DynsecSeedOptions): Record<string, unknown> {
  const allow = (acltype: string, topic: string) => ({ acltype, topic, allow: true });
  return {
    defaultACLAccess: o.defaultACLAccess ?? { publishClientSend: false, publishClientReceive: true, subscribe: false, unsubscribe: true },
    clients: [
      { username: o.connectorCn, textname: 'mqtt-ca broker connector (certificate login only)', roles: [{ rolename: CONNECTOR_ROLE }] },
      ...(o.clients ?? []),
    ],
    groups: [],
    roles: [
      {
        rolename: CONNECTOR_ROLE,
        textdescription: 'mqtt-ca: administers dynamic security, reads the broker log, publishes fleet notices',
        acls: [
          allow('publishClientSend', `${DYNSEC_TOPIC}/#`),
          allow('publishClientSend', DYNSEC_TOPIC),
          allow('publishClientReceive', `${DYNSEC_TOPIC}/#`),
          allow('subscribePattern', `${DYNSEC_TOPIC}/#`),
          allow('publishClientReceive', '$SYS/broker/log/#'),
          allow('subscribePattern', '$SYS/broker/log/#'),
          allow('publishClientSend', `${o.notifyTopic}/#`),
        ],
      },
      {
        rolename: o.denyRole ?? DEFAULT_DENY_ROLE,
        textdescription: 'mqtt-ca: denies every publish and subscribe (incident block)',
        acls: DENY_ACLS,
      },
      ...(o.roles ?? []),
    ],
  };
}

export interface MosquittoConfOptions {
  port: number;
  /** Absolute paths as the broker sees them. */
  caFile: string;
  certFile: string;
  keyFile: string;
  crlFile: string;
  dynsecFile: string;
  pluginPath?: string;
  bindAddress?: string;
}

/**
 * The log types mqtt-ca needs (log_type lines add up; naming any replaces Mosquitto's default of
 * error, warning, notice, information): information for the dynsec lines that confirm kicks,
 * notice and error for connections and TLS failures, subscribe and unsubscribe for the bus watch.
 */
export const MOSQUITTO_LOG_TYPES = ['error', 'warning', 'notice', 'information', 'subscribe', 'unsubscribe'] as const;

/**
 * The bus watch's optional log file, commented out: debug lines are the only ones with denied
 * publishes and subscribes and with publishes, and they are never published on $SYS.
 */
export const MOSQUITTO_LOG_FILE_HINT = [
  '# Optional, for the bus watch to see denied publishes and subscribes (topic scans) and publishes:',
  '# a log file mqtt-ca follows (BUS_WATCH_LOG_FILE) with debug lines, one or more per message: size the',
  '# disk and the rotation for it, and let mqtt-ca read the file (docs/bus-watch.md, "Point the watch at Mosquitto").',
  '#log_dest file /var/log/mosquitto/mosquitto.log',
  '#log_type debug',
] as const;

export const DEFAULT_DYNSEC_PLUGIN = '/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so';

/** A mosquitto.conf snippet for a listener where devices and the connector log in with mqtt-ca certificates. */
export function mosquittoConf(o: MosquittoConfOptions): string {
  return [
    '# mqtt-ca: a mutual-TLS listener; the certificate CN is the MQTT username (the device id).',
    'per_listener_settings false',
    `listener ${o.port}${o.bindAddress ? ` ${o.bindAddress}` : ''}`,
    `cafile ${o.caFile}`,
    `certfile ${o.certFile}`,
    `keyfile ${o.keyFile}`,
    'require_certificate true',
    'use_identity_as_username true',
    '# Revoked certificates are refused at their next connection; keep it fresh with `mqtt-ca crl-sync --reload`.',
    `crlfile ${o.crlFile}`,
    '# Roles and ACLs, administered by mqtt-ca over $CONTROL/dynamic-security/v1.',
    `plugin ${o.pluginPath ?? DEFAULT_DYNSEC_PLUGIN}`,
    `plugin_opt_config_file ${o.dynsecFile}`,
    '# The broker log on $SYS/broker/log/#: mqtt-ca reads it to confirm that the sessions it kicks have ended,',
    '# and the bus watch reads connections, disconnects and their reasons, TLS errors and subscriptions from it.',
    'log_dest topic',
    ...MOSQUITTO_LOG_TYPES.map((t) => `log_type ${t}`),
    'connection_messages true',
    ...MOSQUITTO_LOG_FILE_HINT,
    '',
  ].join('\n');
}
