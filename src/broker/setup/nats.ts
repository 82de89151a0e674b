import type { BrokerSetupInput, BrokerSetupPlan } from './plan.js';

/** The users file's name in the setup directory: the NATS connector (BROKER_NATS_USERS_FILE) rewrites it. */
export const NATS_USERS_FILE = 'nats-users.conf';
/** The PID file nats.conf names (BROKER_NATS_PID_FILE): the connector signals a reload to that process. */
export const NATS_PID_FILE = 'nats-server.pid';
/** The default monitoring port nats.conf opens (on 127.0.0.1): the connector confirms there (BROKER_NATS_MONITOR_URL). */
export const NATS_MONITOR_PORT = 8222;
/**
 * A user no certificate can map to (this CA writes device URIs as urn:mqtt-ca:device:<id> only):
 * NATS 2.9 with an empty users list admits every verified certificate, so the list is never empty.
 */
export const NATS_NOBODY = 'urn:mqtt-ca:nobody';

/** A NATS configuration string, quoted. */
const q = (s: string) => JSON.stringify(s);

/**
 * The users file the connector writes (and broker-setup's first one, with no device yet): one
 * verify_and_map user per identity that may connect, by its SAN URI. Permissions come from
 * nats.conf's default_permissions; the placeholder user may do nothing.
 */
export function natsUsersFile(identities: string[]): string {
  return [
    '# Written by mqtt-ca (its NATS connector, BROKER_NATS_USERS_FILE): the devices with an active certificate, minus the',
    '# blocked ones, by the SAN URI NATS maps their certificates to (verify_and_map). Rewritten whole: do not edit.',
    'users = [',
    `  { user: ${q(NATS_NOBODY)}, permissions: { publish: { deny: [">"] }, subscribe: { deny: [">"] } } }`,
    ...identities.map((u) => `  { user: ${q(u)} }`),
    ']',
    '',
  ].join('\n');
}

/**
 * NATS 2.9: an MQTT listener (needs JetStream and a server_name) with mutual TLS mapping each
 * client certificate's SAN URI to a user of the users file the NATS connector keeps (verify_and_map),
 * OCSP stapling of the broker's own certificate (`mode: always`: the server shuts down once its
 * certificate is revoked), a monitoring port for the connector's confirmations, and a PID file for
 * its reloads. NATS 2.9 checks no revocation of client certificates: the users file is the allowlist.
 */
export function natsSetup(i: BrokerSetupInput): BrokerSetupPlan {
  const usersFile = `${i.brokerDir}/${NATS_USERS_FILE}`;
  const pidFile = `${i.brokerDir}/${NATS_PID_FILE}`;
  const bind = i.bindAddress ?? '0.0.0.0';
  return {
    files: [
      {
        name: NATS_USERS_FILE,
        content: natsUsersFile([]),
        what: 'the allowlist the NATS connector rewrites (BROKER_NATS_USERS_FILE); included by nats.conf',
      },
      {
        name: 'nats.conf',
        content: [
          '# mqtt-ca: nats-server -c nats.conf (NATS 2.9). Client, monitor and JetStream paths may be overridden on the',
          '# command line (-p, -m, -sd, -P).',
          'server_name: "mqtt-ca-nats"',
          'host: "127.0.0.1"',
          'port: 4222',
          `http: "127.0.0.1:${NATS_MONITOR_PORT}"`,
          `pid_file: ${q(pidFile)}`,
          '# MQTT needs JetStream (sessions, retained messages, QoS 1).',
          `jetstream { store_dir: ${q(`${i.brokerDir}/jetstream`)} }`,
          '',
          '# The NATS client port takes the same certificates: NATS 2.9 staples OCSP only for this top-level tls (not for the',
          "# MQTT listener's), and without verify_and_map here a client could log in as a device's user with no password.",
          'tls {',
          `  cert_file: ${q(i.files.cert)}`,
          `  key_file: ${q(i.files.key)}`,
          `  ca_file: ${q(i.files.ca)}`,
          '  verify_and_map: true',
          '  timeout: 5',
          '}',
          '# Staple an OCSP answer for the broker certificate from this CA; re-checked at half its remaining validity.',
          '# A revoked broker certificate shuts the whole server down (MQTT listener included). The OCSP issuer is taken',
          "# from ca_file (ca.pem: roots first, the broker certificate's issuing CA last). `mode: must` acts only on",
          '# must-staple certificates and does no more than `always`; the MQTT listener staples nothing in 2.9, so do not',
          '# give it a must-staple certificate (an MQTT client enforcing must-staple would refuse it).',
          `ocsp { mode: always, url: ${q(`${i.publicUrl}/pki/ocsp`)} }`,
          '',
          'authorization {',
          '  # The identities that may connect (verify_and_map users), kept by mqtt-ca; reread on reload (SIGHUP).',
          '  # NATS resolves an include relative to this file (even a path starting with /): keep it beside nats.conf.',
          `  include ${q(NATS_USERS_FILE)}`,
          '  # What every device may do. MQTT topic a/b is NATS subject a.b; a subscription to a/# also subscribes to a.',
          "  # MQTT subscribers need $MQTT.sub.> for QoS 1 deliveries (NATS's internal subjects). Narrow to your topic tree.",
          '  default_permissions {',
          '    publish: { allow: [">"], deny: ["$MQTT.>", "$JS.>", "$SYS.>", "$KV.>", "_INBOX.>"] }',
          '    subscribe: { allow: [">"], deny: ["$JS.>", "$SYS.>", "$KV.>"] }',
          '  }',
          '}',
          '',
          'mqtt {',
          `  host: ${q(bind)}`,
          `  port: ${i.port}`,
          '  tls {',
          `    cert_file: ${q(i.files.cert)}`,
          `    key_file: ${q(i.files.key)}`,
          `    ca_file: ${q(i.files.ca)}`,
          "    # The client certificate's SAN URI (urn:mqtt-ca:device:<id>) is its user; no user, no connection.",
          '    verify_and_map: true',
          '    timeout: 5',
          '  }',
          '}',
          '',
        ].join('\n'),
        what: 'the NATS server configuration (MQTT listener, OCSP stapling, the users include, monitoring, PID file)',
      },
    ],
    readme: [
      'NATS 2.9 verifies each MQTT client certificate against ca.pem and maps it to a user by its SAN URI',
      '(urn:mqtt-ca:device:<id>; verify_and_map matches a SAN or the whole subject DN such as "CN=<id>", never the bare CN).',
      'It checks NO revocation of client certificates (no CRL, no OCSP). Revocation reaches it only',
      `through ${NATS_USERS_FILE}: mqtt-ca's NATS connector writes there the devices with an active certificate, minus the`,
      'blocked ones, and signals a reload, which closes the sessions of the identities it removed and refuses their next',
      'connection. NATS maps identities, not certificates: a device that still holds another active certificate keeps',
      'its identity after one certificate is revoked. Set on mqtt-ca (docs/brokers/nats.md):',
      `  BROKER_NATS_USERS_FILE=${usersFile}`,
      `  BROKER_NATS_PID_FILE=${pidFile}   (or BROKER_NATS_RELOAD_COMMAND to reload it elsewhere)`,
      `  BROKER_NATS_MONITOR_URL=http://127.0.0.1:${NATS_MONITOR_PORT}`,
      `The first ${NATS_USERS_FILE} admits no device until the connector has written it.`,
      '',
      'NATS staples an OCSP answer for its own certificate (ocsp { mode: always }) on its client port (2.9 staples nothing on',
      'the MQTT listener), asks again at half the answer’s remaining validity (OCSP_BROKER_VALIDITY_MINUTES), and shuts the',
      'whole server down, MQTT included, when its certificate is revoked. ca.pem is ordered roots first, the issuing CA last:',
      'keep that order. The client port (4222, 127.0.0.1) also maps certificates (verify_and_map): the same users, no passwords.',
      '',
      'Start and reload:',
      `  nats-server -c ${i.brokerDir}/nats.conf`,
      `  nats-server --signal reload=$(cat ${pidFile})`,
    ],
  };
}
