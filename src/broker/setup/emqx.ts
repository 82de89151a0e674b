import type { BrokerSetupInput, BrokerSetupPlan } from './plan.js';

/**
 * EMQX 5: an `ssl` listener requiring client certificates from this CA, its CRL check (EMQX fetches
 * each client certificate's distribution point and keeps it in its crl_cache), and OCSP stapling of
 * its own certificate. EMQX enforces only CRLs with an Issuing Distribution Point, which every CRL
 * here carries.
 */
export function emqxSetup(i: BrokerSetupInput): BrokerSetupPlan {
  const issuer = i.caChain[i.caChain.length - 1]!;
  const issuerFile = `${i.brokerDir}/ocsp-issuer.pem`;
  const q = (s: string) => JSON.stringify(s);
  return {
    files: [
      { name: 'ocsp-issuer.pem', content: issuer, what: "ssl_options.ocsp.issuer_pem: the CA that issued the broker's certificate" },
      {
        name: 'emqx.conf',
        content: [
          '# mqtt-ca: append to emqx.conf (or base.hocon); EMQX reads it at start.',
          '# A mutual-TLS listener: the client certificate CN is the MQTT username (the device id).',
          'listeners.ssl.default {',
          `  bind = ${q(`${i.bindAddress ?? '0.0.0.0'}:${i.port}`)}`,
          '  ssl_options {',
          `    cacertfile = ${q(i.files.ca)}`,
          `    certfile = ${q(i.files.cert)}`,
          `    keyfile = ${q(i.files.key)}`,
          '    verify = verify_peer',
          '    fail_if_no_peer_cert = true',
          "    # Each client certificate's CRL, fetched from its distribution point and cached (crl_cache below).",
          '    enable_crl_check = true',
          '    # Staple an OCSP answer for the broker certificate (refetched every refresh_interval).',
          '    ocsp {',
          '      enable_ocsp_stapling = true',
          `      responder_url = ${q(`${i.publicUrl}/pki/ocsp`)}`,
          `      issuer_pem = ${q(issuerFile)}`,
          '      refresh_interval = 5m',
          '      refresh_http_timeout = 15s',
          '    }',
          '  }',
          '}',
          'mqtt.peer_cert_as_username = cn',
          '# How long a revoked device can still get in: the CRL cache is refreshed this often (EMQX default 15m).',
          'crl_cache {',
          '  refresh_interval = 1m',
          '  http_timeout = 15s',
          '}',
          '',
        ].join('\n'),
        what: 'listener, CRL check and OCSP stapling settings to append to emqx.conf',
      },
    ],
    readme: [
      'EMQX checks each client certificate against its CRL (fetched from the certificate’s distribution point and cached for',
      'crl_cache.refresh_interval) at the handshake; live sessions stay up until kicked. It staples an OCSP answer for its own certificate.',
      'EMQX cannot sign its webhooks: let `mqtt-ca bus-relay` carry its events to POST /v1/bus-events (docs/bus-watch.md, EMQX),',
      'and give the incident actions a receiver through BROKER_WEBHOOK_URL (docs/brokers/emqx.md).',
    ],
  };
}
