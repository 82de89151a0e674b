import type { ParsedCsr } from '../ca/x509/csr.js';
import { deviceUri, type LeafProfileName } from '../ca/profiles.js';
import { DomainError, policyViolation } from '../shared/errors.js';
import type { DeviceFacts } from '../store/token-store.js';
import { ENROLLABLE_STATUSES, type IssueDraft, type PolicyStep } from './methods.js';

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
    if (extra.length)
      throw policyViolation(`the CSR asks for extensions the profile does not grant: ${extra.map((e) => e.oid).join(', ')}`);
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
    if (other.length)
      throw forbidden(`the CSR asks for names this device may not have: ${other.map((n) => `${n.type}:${n.value}`).join(', ')}`);
  },
};

/**
 * Issuance for a device obeys the device's state, whatever the route: the device is in the
 * inventory, of the kind the profile is for (a client takes device certificates, a broker broker
 * ones), and registered or active — never suspended, revoked, decommissioned or unknown. `device` is
 * what the method read of it. (A token's spend checks the same in the statement that spends it:
 * refusalOf in tokens.ts.)
 */
export function deviceStanding(deviceId: string, device: DeviceFacts | undefined, profile: LeafProfileName): PolicyStep {
  return {
    kind: 'enforce',
    name: 'device-standing',
    apply() {
      if (!device)
        throw new DomainError('Forbidden', `device ${deviceId} is not in the inventory: register it first`, {
          refusal: 'unknown-identity',
        });
      const kind = profile === 'broker' ? 'broker' : 'client';
      if (device.kind !== kind) throw forbidden(`device ${deviceId} is a ${device.kind}: it takes no ${profile} certificate`);
      if (!ENROLLABLE_STATUSES.has(device.status))
        throw forbidden(`device ${deviceId} is ${device.status}: it gets no certificate until an operator re-admits it`);
    },
  };
}

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
      if (other.length)
        throw forbidden(`the CSR asks for names this broker token does not allow: ${other.map((n) => `${n.type}:${n.value}`).join(', ')}`);
      draft.commonName = draft.deviceId;
      draft.dnsNames = allowed.dnsNames;
      draft.ipAddresses = allowed.ipAddresses;
    },
  };
}
