/** RFC 5280 §5.3.1 CRLReason names and their codes (8, removeFromCRL, belongs to delta CRLs; 10, aACompromise, to attribute certificates). */
export const REASON_CODES = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  privilegeWithdrawn: 9,
} as const;

export type RevocationReason = keyof typeof REASON_CODES;

export const REVOCATION_REASONS = Object.keys(REASON_CODES) as RevocationReason[];

export function isRevocationReason(s: unknown): s is RevocationReason {
  return typeof s === 'string' && Object.hasOwn(REASON_CODES, s);
}

/**
 * What revoking a device's current certificate does to the device: a hold suspends it; a
 * replacement or retirement leaves it as it is; anything that says the identity can no longer be
 * trusted revokes it, so it can neither enroll nor renew until an operator re-admits it.
 */
export function deviceEffectOf(reason: RevocationReason): 'suspended' | 'revoked' | null {
  switch (reason) {
    case 'certificateHold':
      return 'suspended';
    case 'superseded':
    case 'cessationOfOperation':
      return null;
    default:
      return 'revoked';
  }
}
