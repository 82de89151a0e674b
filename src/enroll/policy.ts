import type { ParsedCsr } from '../ca/x509/csr.js';
import { deviceUri } from '../ca/profiles.js';
import { DomainError, policyViolation } from '../shared/errors.js';
import type { IssueDraft, PolicyStep } from './methods.js';

const SAN = '2.5.29.17';
const BASIC_CONSTRAINTS = '2.5.29.19';
const KEY_USAGE = '2.5.29.15';
const SKI = '2.5.29.14';
/** Extensions a CSR may carry without being refused; the profile, not the CSR, decides what the certificate gets. */
const TOLERATED = new Set([SAN, BASIC_CONSTRAINTS, KEY_USAGE, SKI]);

const ORDER = { modify: 0, validate: 1, enforce: 2 } as const;

export async function runSteps(steps: PolicyStep[], draft: IssueDraft, csr: ParsedCsr): Promise<void> {
  const ordered = [...steps].sort((a, b) => ORDER[a.kind] - ORDER[b.kind]);
  for (const step of ordered) await step.apply(draft, csr);
}

const forbidden = (msg: string) => new DomainError('Forbidden', msg);

/** No CA rights and no extensions beyond the tolerated ones. */
export const noSmuggledExtensions: PolicyStep = {
  kind: 'validate',
  name: 'no-smuggled-extensions',
  apply(_draft, csr) {
    if (csr.requestsCaRights) throw policyViolation('the CSR asks for CA rights (basicConstraints CA or keyCertSign/cRLSign)');
    const extra = csr.requestedExtensions.filter((e) => !TOLERATED.has(e.oid));
    if (extra.length) throw policyViolation(`the CSR asks for extensions the profile does not grant: ${extra.map((e) => e.oid).join(', ')}`);
  },
};

/** A device may only ask for its own identity: CN absent or its id; SANs absent or exactly its URI. */
export const deviceIdentity: PolicyStep = {
  kind: 'validate',
  name: 'device-identity',
  apply(draft, csr) {
    if (!draft.deviceId) throw new Error('device-identity needs a device id in the draft');
    if (csr.commonName !== undefined && csr.commonName !== draft.deviceId) {
      throw forbidden(`the CSR asks for the name ${JSON.stringify(csr.commonName)}, but this credential is for device ${draft.deviceId}`);
    }
    const own = deviceUri(draft.deviceId);
    const other = csr.requestedSans.filter((n) => !(n.type === 'uri' && n.value === own));
    if (other.length) throw forbidden(`the CSR asks for names this device may not have: ${other.map((n) => `${n.type}:${n.value}`).join(', ')}`);
  },
};

/** A broker may ask only for names its token allows; it gets all of them, with its id as CN. */
export function brokerIdentity(allowed: { dnsNames: string[]; ipAddresses: string[] }): PolicyStep {
  return {
    kind: 'validate',
    name: 'broker-identity',
    apply(draft: IssueDraft, csr: ParsedCsr) {
      const ok = new Set([...allowed.dnsNames.map((d) => `dns:${d}`), ...allowed.ipAddresses.map((i) => `ip:${i}`)]);
      const names = [draft.deviceId, ...allowed.dnsNames, ...allowed.ipAddresses];
      if (csr.commonName !== undefined && !names.includes(csr.commonName.toLowerCase()) && csr.commonName !== draft.deviceId) {
        throw forbidden(`the CSR asks for the name ${JSON.stringify(csr.commonName)}, which this broker token does not allow`);
      }
      const other = csr.requestedSans.filter((n) => !ok.has(`${n.type}:${n.type === 'dns' ? n.value.toLowerCase() : n.value}`));
      if (other.length) throw forbidden(`the CSR asks for names this broker token does not allow: ${other.map((n) => `${n.type}:${n.value}`).join(', ')}`);
      draft.commonName = draft.deviceId;
      draft.dnsNames = allowed.dnsNames;
      draft.ipAddresses = allowed.ipAddresses;
    },
  };
}

/**
 * A certificate bound to a registered device is of the device's kind: a broker certificate only for
 * a broker, a device certificate never for one. Otherwise a broker certificate naming a client
 * device (which an operator may issue) would become that device's current certificate, and with it
 * its session keys.
 */
export function profileFitsDevice(kind: 'client' | 'broker'): PolicyStep {
  return {
    kind: 'validate',
    name: 'profile-fits-device',
    apply(draft) {
      const wants = draft.profile === 'broker' ? 'broker' : draft.profile === 'device' ? 'client' : undefined;
      if (wants && wants !== kind) {
        throw forbidden(`device ${draft.deviceId} is a ${kind === 'broker' ? 'broker' : 'client device'}: it gets no ${draft.profile} certificate`);
      }
    },
  };
}
