import type { KeyUsageFlag } from './x509/extensions.js';
import type { GeneralName } from './x509/names.js';
import { OID } from './x509/oids.js';
import type { KeyAlgorithm } from './keys.js';

export const PROFILE_NAMES = ['device', 'broker', 'ocsp-responder'] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];
export const isProfileName = (s: string): s is ProfileName => (PROFILE_NAMES as readonly string[]).includes(s);

/**
 * The profiles a request may ask for: end-entity certificates. The others (`ocsp-responder`) are
 * authority certificates the service makes only for its own keys (OcspResponders), never for a request.
 */
export const LEAF_PROFILES = ['device', 'broker'] as const;
export type LeafProfileName = (typeof LEAF_PROFILES)[number];
export const isLeafProfile = (s: string): s is LeafProfileName => (LEAF_PROFILES as readonly string[]).includes(s);

export type SanType = GeneralName['type'];

/**
 * What a certificate of each kind may hold. Issuance builds every extension from the profile;
 * nothing from a CSR reaches a certificate except the public key and the names the profile allows.
 */
export interface Profile {
  name: ProfileName;
  defaultValidityDays: number;
  maxValidityDays: number;
  keyAlgorithms: readonly KeyAlgorithm[];
  sanTypes: readonly SanType[];
  /** Most SANs a certificate may carry. */
  maxSans: number;
  extendedKeyUsage: readonly string[];
  keyUsage: readonly KeyUsageFlag[];
  /** Extra key usage for RSA subject keys (TLS 1.2 RSA key transport). */
  rsaKeyUsage: readonly KeyUsageFlag[];
  ocspNoCheck: boolean;
  /** Whether a request may ask for the TLS Feature status_request extension (RFC 7633, "must-staple"): servers only. */
  mustStaple: boolean;
  /** How long after expiry a holder may still renew with the expired certificate (devices that were offline). */
  renewalGraceDays: number;
}

const ALL_LEAF_KEYS: readonly KeyAlgorithm[] = ['EC-P256', 'EC-P384', 'Ed25519', 'RSA-2048', 'RSA-3072', 'RSA-4096'];

export const PROFILES: Readonly<Record<ProfileName, Profile>> = {
  device: {
    name: 'device',
    defaultValidityDays: 365,
    maxValidityDays: 825,
    keyAlgorithms: ALL_LEAF_KEYS,
    sanTypes: ['uri'],
    maxSans: 1,
    extendedKeyUsage: [OID.clientAuth],
    keyUsage: ['digitalSignature'],
    rsaKeyUsage: ['keyEncipherment'],
    ocspNoCheck: false,
    mustStaple: false,
    renewalGraceDays: 30,
  },
  broker: {
    name: 'broker',
    defaultValidityDays: 365,
    maxValidityDays: 825,
    keyAlgorithms: ALL_LEAF_KEYS,
    sanTypes: ['dns', 'ip'],
    maxSans: 100,
    extendedKeyUsage: [OID.serverAuth, OID.clientAuth],
    keyUsage: ['digitalSignature'],
    rsaKeyUsage: ['keyEncipherment'],
    ocspNoCheck: false,
    mustStaple: true,
    renewalGraceDays: 7,
  },
  'ocsp-responder': {
    name: 'ocsp-responder',
    defaultValidityDays: 30,
    maxValidityDays: 90,
    keyAlgorithms: ['EC-P256', 'EC-P384', 'Ed25519', 'RSA-2048', 'RSA-3072', 'RSA-4096'],
    sanTypes: [],
    maxSans: 0,
    extendedKeyUsage: [OID.ocspSigning],
    keyUsage: ['digitalSignature'],
    rsaKeyUsage: [],
    ocspNoCheck: true,
    mustStaple: false,
    renewalGraceDays: 0,
  },
};

/** The SAN URI that carries a device's identity. */
export const deviceUri = (deviceId: string) => `urn:mqtt-ca:device:${deviceId}`;

/** Device ids are MQTT identities: they go into the CN, a URI and topic names. */
export const DEVICE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;
