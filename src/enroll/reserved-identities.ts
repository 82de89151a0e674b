import { isIP } from 'node:net';
import { DomainError } from '../shared/errors.js';

/** The settings the service's own identities are named by (Config's fields, passed by the composition root). */
export interface OwnIdentitySettings {
  /** BROKER_CLIENT_CN: the connector's certificate CN and DNS name, its username on the broker (the dynamic-security admin). */
  brokerClientCn: string;
  /** PUBLIC_URL: its host is the subject of the service's own TLS server certificate. */
  publicUrl: string;
}

/** The CN prefix of the service's delegated OCSP responders (OcspResponders: `OCSP Responder <caId>`). */
const RESPONDER_CN_PREFIX = 'ocsp responder';

/** Loopback names every host has: a broker on the service's machine may carry them too. */
const LOOPBACK = new Set(['localhost']);

/** Case, width and compatibility forms folded, a trailing DNS dot dropped: `MQTT-CA-Connector.` is the connector. */
const fold = (name: string): string => name.normalize('NFKC').toLowerCase().trim().replace(/\.$/, '');

/**
 * The identities the service uses itself: the broker connector's name, its TLS server
 * certificate's host, its OCSP responders' subjects. No device, broker, token or certificate
 * request may carry one (as a device id, CN or DNS name), or it could act as the service: the
 * connector is the broker's dynamic-security admin, the TLS name is the API's, a responder vouches
 * for revocation. The one list, derived from the settings.
 */
export class ReservedIdentities {
  private readonly names: ReadonlySet<string>;

  constructor(names: Iterable<string>) {
    this.names = new Set([...names].map(fold));
  }

  static of(s: OwnIdentitySettings): ReservedIdentities {
    const host = new URL(s.publicUrl).hostname.replace(/^\[|\]$/g, '');
    const tlsName = isIP(host) === 0 && !LOOPBACK.has(fold(host)) ? [host] : [];
    return new ReservedIdentities([s.brokerClientCn, ...tlsName]);
  }

  isReserved(name: string): boolean {
    const f = fold(name);
    return this.names.has(f) || f.startsWith(RESPONDER_CN_PREFIX);
  }

  /** The first of these names that is reserved, if any. */
  firstReserved(names: readonly (string | undefined)[]): string | undefined {
    return names.find((n): n is string => n !== undefined && this.isReserved(n));
  }

  /** Throws Forbidden when a request for `what` names one of the service's own identities. */
  refuse(names: readonly (string | undefined)[], what: string): void {
    const taken = this.firstReserved(names);
    if (taken !== undefined) {
      throw new DomainError('Forbidden', `${JSON.stringify(taken)} is reserved for the service's own identity: no ${what} may carry it`);
    }
  }
}

/** Reserves nothing: for inventories built outside the service (tests of the store alone). */
export const NO_RESERVED_IDENTITIES = new ReservedIdentities([]);
