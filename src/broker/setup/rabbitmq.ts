import { randomBytes } from 'node:crypto';
import type { BrokerSetupInput, BrokerSetupPlan } from './plan.js';

/** How RabbitMQ gets the CRLs its Erlang `crl_check` needs. */
export type RabbitCrlMode = 'http' | 'hash-dir';
export const RABBIT_CRL_MODES: readonly RabbitCrlMode[] = ['hash-dir', 'http'];

/** The hashed CRL directory broker-setup fills and `crl-sync --hash-dir` keeps, under the broker's directory. */
export const RABBIT_CRL_DIR = 'crls';
/** The management user's password, for the service (BROKER_RABBITMQ_PASSWORD_FILE). */
export const RABBIT_PASSWORD_FILE = 'rabbitmq-connector.password';

/** An Erlang string literal. */
const erl = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

/**
 * RabbitMQ 3.10+ with its MQTT plugin: a mutual-TLS MQTT listener whose logins are the client
 * certificate's CN (`ssl_cert_login`), Erlang's `crl_check` on every certificate of the chain with
 * the CRLs fetched over HTTP at each handshake or read from a hashed directory, and the management
 * listener the service's connector (src/broker/rabbitmq-connector.ts) uses.
 */
export function rabbitmqSetup(i: BrokerSetupInput): BrokerSetupPlan {
  const mode = i.rabbitmq?.crlMode ?? 'hash-dir';
  const mgmtPort = i.rabbitmq?.managementPort ?? 15672;
  const crlDir = `${i.brokerDir}/${RABBIT_CRL_DIR}`;
  const user = i.connector.cn;
  const password = randomBytes(24).toString('base64url');
  const bind = i.bindAddress;
  const crlCache =
    mode === 'http' ? '{ssl_crl_cache, {internal, [{http, 5000}]}}' : `{ssl_crl_hash_dir, {internal, [{dir, ${erl(crlDir)}}]}}`;
  return {
    crlHashDir: mode === 'hash-dir' ? RABBIT_CRL_DIR : undefined,
    files: [
      {
        name: 'rabbitmq.conf',
        content: [
          '# mqtt-ca: RABBITMQ_CONFIG_FILE (or merge into /etc/rabbitmq/rabbitmq.conf). The TLS options and the CRL check are in advanced.config.',
          '# MQTT over TLS only: devices log in with their certificate, whose CN is the RabbitMQ user (the device id).',
          'mqtt.listeners.tcp = none',
          bind ? `mqtt.listeners.ssl.default = ${bind}:${i.port}` : `mqtt.listeners.ssl.default = ${i.port}`,
          'mqtt.ssl_cert_login = true',
          'ssl_cert_login_from = common_name',
          'mqtt.allow_anonymous = false',
          'mqtt.vhost = /',
          'mqtt.exchange = amq.topic',
          '# AMQP 0-9-1 for this host only (the MQTT plugin needs none; set listeners.tcp = none if nothing else uses it).',
          'listeners.tcp.default = 127.0.0.1:5672',
          'loopback_users.guest = true',
          '# The management API, for the mqtt-ca connector (BROKER_RABBITMQ_URL). Put TLS or a firewall in front of it off this host.',
          `management.tcp.port = ${mgmtPort}`,
          'management.tcp.ip = 127.0.0.1',
          '# The connector sees a new connection once the management plugin collected its statistics: every second, not 5.',
          'collect_statistics_interval = 1000',
          '# The connector user, created on the first start of an empty node only (otherwise: README.txt).',
          `default_user = ${user}`,
          `default_pass = ${password}`,
          'default_user_tags.administrator = true',
          'default_permissions.configure = .*',
          'default_permissions.read = .*',
          'default_permissions.write = .*',
          '',
        ].join('\n'),
        // It holds the connector's password: the broker's user alone reads it (chown it).
        mode: 0o600,
        what: "RABBITMQ_CONFIG_FILE: the MQTT TLS listener, certificate logins, the management listener and the connector user (0600: chown it to the broker's user)",
      },
      {
        name: 'advanced.config',
        content: [
          `%% mqtt-ca: RABBITMQ_ADVANCED_CONFIG_FILE. CRL mode: ${mode}.`,
          '%% The TLS options of every RabbitMQ TLS listener (the MQTT one included): this CA for client certificates,',
          '%% a certificate required, and Erlang crl_check on each certificate of the chain (the root CA’s CRL and the issuing CA’s).',
          '[',
          '  {rabbit, [',
          '    {ssl_options, [',
          `      {cacertfile, ${erl(i.files.ca)}},`,
          `      {certfile, ${erl(i.files.cert)}},`,
          `      {keyfile, ${erl(i.files.key)}},`,
          '      {verify, verify_peer},',
          '      {fail_if_no_peer_cert, true},',
          '      {depth, 4},',
          "      {versions, ['tlsv1.3', 'tlsv1.2']},",
          '      {crl_check, true},',
          mode === 'http'
            ? "      %% Each handshake fetches the CRLs from the certificates' distribution points (5 s timeout): no cache."
            : '      %% <issuer hash>.r0, .r1 ... read at each handshake from this directory, kept by mqtt-ca crl-sync --hash-dir.',
          `      {crl_cache, ${crlCache}}`,
          '    ]}',
          '  ]}',
          '].',
          '',
        ].join('\n'),
        what: `RABBITMQ_ADVANCED_CONFIG_FILE: TLS options and Erlang crl_check (${mode === 'http' ? 'CRLs over HTTP at every handshake' : `CRLs from ${RABBIT_CRL_DIR}/`})`,
      },
      {
        name: 'enabled_plugins',
        content: '[rabbitmq_mqtt,rabbitmq_management].\n',
        what: 'RABBITMQ_ENABLED_PLUGINS_FILE: the MQTT plugin and the management API',
      },
      {
        name: RABBIT_PASSWORD_FILE,
        content: `${password}\n`,
        mode: 0o600,
        what: `the management password of "${user}", for mqtt-ca (BROKER_RABBITMQ_PASSWORD_FILE; keep it on the service's host only)`,
      },
    ],
    readme: [
      `RabbitMQ (3.10+, plugins rabbitmq_mqtt and rabbitmq_management). Start it with:`,
      `  RABBITMQ_CONFIG_FILE=${i.brokerDir}/rabbitmq.conf RABBITMQ_ADVANCED_CONFIG_FILE=${i.brokerDir}/advanced.config \\`,
      `  RABBITMQ_ENABLED_PLUGINS_FILE=${i.brokerDir}/enabled_plugins rabbitmq-server`,
      '(the Debian wrapper runs it as the rabbitmq user: chown rabbitmq the key, rabbitmq.conf and the CRL directory).',
      '',
      `CRL mode: ${mode} (broker-setup --crl-mode hash-dir|http). Erlang checks every certificate of the client's chain at the`,
      'handshake (the issuing CA against the root’s CRL, the device against the issuing CA’s) and fails closed without a CRL.',
      '  hash-dir: the CRLs are files in a local directory, read at each handshake: no fetch, and the broker keeps accepting',
      '            valid devices (and refusing revoked ones) while the CA is away, until a CRL’s nextUpdate passes. It needs',
      '            crl-sync running beside the broker (no reload: RabbitMQ reads the files at each handshake):',
      `    mqtt-ca crl-sync --url ${i.publicUrl}/pki/crl/bundle.pem --hash-dir ${crlDir} --cafile ${i.files.ca} --interval 60`,
      '            A revoked device is refused once crl-sync has fetched the CRL that lists it (its interval, plus the CA’s',
      '            coalescing of CRL builds).',
      "  http:     nothing to run, the next handshake after a revocation is refused; but each handshake fetches the root's and",
      "            the issuing CA's CRL from the certificates' distribution points (no cache): the CRL endpoint carries the",
      '            fleet’s whole connection rate, and while it is unreachable every device is refused (bad_crls, no_relevant_crls).',
      'Choose hash-dir for a fleet; http only where the CA is always reachable and connections are few.',
      'Either way a live session is not re-checked: the connector closes it (block/disconnect).',
      '',
      'Devices: with ssl_cert_login the certificate CN (the device id) must exist as a RabbitMQ user (no password: it can only',
      'log in with its certificate) with permissions on the vhost. Create each, e.g. through the management API:',
      `  curl -u ${user}:$(cat ${RABBIT_PASSWORD_FILE}) -X PUT -H 'content-type: application/json' \\`,
      `    -d '{"password_hash":"","tags":""}' http://127.0.0.1:${mgmtPort}/api/users/<device id>`,
      `  curl -u ${user}:... -X PUT -H 'content-type: application/json' \\`,
      `    -d '{"configure":"^mqtt-subscription-<device id>","write":"^(amq\\\\.topic|mqtt-subscription-<device id>.*)$","read":"^(amq\\\\.topic|mqtt-subscription-<device id>.*)$"}' \\`,
      `    http://127.0.0.1:${mgmtPort}/api/permissions/%2F/<device id>`,
      '(or rabbitmqctl add_user <id> <random>; rabbitmqctl clear_password <id>; rabbitmqctl set_permissions -p / <id> ...).',
      'A device that sends an MQTT username and password logs in with those instead: give devices no passwords.',
      '',
      `The connector: management user "${user}" (administrator), created by default_user on the first start of an empty node`,
      `(else: rabbitmqctl add_user ${user} "$(cat ${RABBIT_PASSWORD_FILE})"; rabbitmqctl set_user_tags ${user} administrator;`,
      `rabbitmqctl set_permissions -p / ${user} ".*" ".*" ".*"). Then set on mqtt-ca:`,
      `  BROKER_RABBITMQ_URL=http://<broker host>:${mgmtPort} BROKER_RABBITMQ_USERNAME=${user} BROKER_RABBITMQ_PASSWORD_FILE=<copy of ${RABBIT_PASSWORD_FILE}>`,
      'block takes away the user’s permissions (kept in a global parameter, mqtt-ca-blocked.<user>, for unblock) and closes its',
      'connections; unblock puts them back. docs/brokers/rabbitmq.md.',
    ],
  };
}
