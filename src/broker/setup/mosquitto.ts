import { CONNECTOR_ROLE, dynsecSeed, mosquittoConf } from '../mosquitto-setup.js';
import type { BrokerSetupPlan, BrokerSetupInput } from './plan.js';

/** Mosquitto 2: a mutual-TLS listener with a crlfile, the dynamic-security plugin seeded for the connector, the log on $SYS. */
export function mosquittoSetup(i: BrokerSetupInput): BrokerSetupPlan {
  const dynsecFile = `${i.brokerDir}/dynamic-security.json`;
  const c = i.connector;
  return {
    files: [
      {
        name: 'dynamic-security.json',
        // Mosquitto rewrites this file on every change: it must stay writable by the broker.
        content: JSON.stringify(
          dynsecSeed({ connectorCn: c.cn, denyRole: c.denyRole, notifyTopic: c.notifyTopic, ...(i.mosquitto?.seed ?? {}) }),
          null,
          2,
        ),
        mode: 0o600,
        what: 'plugin_opt_config_file (seed; the broker rewrites it, keep it writable by the broker)',
      },
      {
        name: 'mosquitto.conf',
        content: mosquittoConf({
          port: i.port,
          ...(i.bindAddress ? { bindAddress: i.bindAddress } : {}),
          caFile: i.files.ca,
          crlFile: i.files.crl,
          dynsecFile,
          certFile: i.files.cert,
          keyFile: i.files.key,
          ...(i.mosquitto?.pluginPath ? { pluginPath: i.mosquitto.pluginPath } : {}),
        }),
        what: 'a listener snippet to include or merge',
      },
    ],
    readme: [
      `mqtt-ca broker connector identity: certificate CN "${c.cn}" (its MQTT username with use_identity_as_username).`,
      `It holds the dynsec role ${CONNECTOR_ROLE} (administer $CONTROL/dynamic-security/v1, read $SYS/broker/log/#, publish ${c.notifyTopic}/#).`,
      `Blocked clients get role ${c.denyRole}.`,
      'The bus watch reads the broker log on $SYS/broker/log/# with the same identity (mosquitto.conf: log_dest topic and the log_type',
      'lines); for denied publishes and subscribes it follows a log file with log_type debug (BUS_WATCH_LOG_FILE, see mosquitto.conf).',
      '',
      'Mosquitto checks each client certificate against crlfile at the handshake and rereads it on SIGHUP; live sessions stay up',
      '(the connector kicks them). Keep crl.pem fresh:',
      `  mqtt-ca crl-sync --url ${i.publicUrl}/pki/crl/bundle.pem --out ${i.files.crl} --cafile ${i.files.ca} --reload 'kill -HUP <mosquitto pid>' --interval 60`,
      '',
      "Then set on mqtt-ca: BROKER_MQTT_URL=mqtts://<broker host>:<port> (and BROKER_CA_FILE if the broker's server certificate is not from this CA).",
    ],
  };
}
