import type { ParsedCsr } from '../ca/x509/csr.js';
import type { LeafProfileName } from '../ca/profiles.js';
import type { Executor } from '../store/db.js';
import type { DeviceFacts } from '../store/token-store.js';

/** What a client presented to enroll. */
export type Credential =
  | { kind: 'bearer'; value: string }
  /** HTTP Basic (EST); `overTls`: whether it came over TLS, as RFC 7030 §3.2.3 requires (the password is the token, in clear otherwise). */
  | { kind: 'basic'; user: string; password: string; overTls: boolean }
  | { kind: 'client-certificate'; der: Buffer }
  | { kind: 'signed-renewal'; certificateDer: Buffer; signedAt: string; signature: Buffer }
  /** The service itself renewing a certificate whose key it generated (a staged credential); never built from a request. */
  | { kind: 'staged-renewal'; certificateDer: Buffer }
  /** An operator or provisioner with an API key, naming the certificate in the request itself. */
  | { kind: 'operator'; actor: string; request: Omit<IssueDraft, 'renews'> };

export interface EnrollmentContext {
  source: string;
  requestId: string;
}

/** The certificate a request will get, as the policy steps shape and check it. */
export interface IssueDraft {
  /** Requests get end-entity certificates only; the service makes its authority certificates itself. */
  profile: LeafProfileName;
  deviceId?: string | undefined;
  commonName?: string | undefined;
  dnsNames?: string[] | undefined;
  ipAddresses?: string[] | undefined;
  renews?: Buffer | undefined;
  /** Only an operator may pick the issuing CA or a shorter validity. */
  caId?: string | undefined;
  validityDays?: number | undefined;
  /** broker only: the TLS Feature status_request extension (must-staple); a renewal keeps the renewed certificate's. */
  mustStaple?: boolean | undefined;
}

/**
 * Which CA issues a draft, asked after the policy steps: the CA that replaced the one a renewed
 * certificate came from (an issuing-CA rollover), or the draft's own caId; undefined = the default
 * issuer. Throws (Conflict) when the draft names a CA that takes no new issuance.
 */
export interface IssuerRouting {
  issuerFor(draft: Pick<IssueDraft, 'caId' | 'renews'>): Promise<string | undefined>;
}

/**
 * One step of enrollment policy. Steps run in a fixed order of kinds — modify (shape the
 * draft), then validate (names, key, extensions), then enforce (state and limits) — whatever
 * order methods list them in.
 */
export interface PolicyStep {
  kind: 'modify' | 'validate' | 'enforce';
  name: string;
  apply(draft: IssueDraft, csr: ParsedCsr): Promise<void> | void;
}

/** What a method grants after checking the credential. */
export interface Authorization {
  method: string;
  /** Whose retries share Idempotency-Keys: the token, or the certificate renewing. */
  scope: string;
  /** Who acts, for the audit log. */
  actor: string;
  /** The subject of security events about this request: the device the credential names. */
  subject: string;
  /**
   * Whether the credential still speaks for `subject` (a lot token for a device of its lot, not
   * used up): asked only when the request is refused. Its refusals count against the device only
   * then, else against the credential (`actor`). Absent: always (a device's own certificate).
   */
  claimsSubject?(): Promise<boolean>;
  draft: IssueDraft;
  steps: PolicyStep[];
  /**
   * Spends the credential once for this device (a token use); throws DomainError (Forbidden, with
   * the reason) when it cannot. May say the device's status as it saw it, for issuance to plan on.
   */
  spend(): Promise<{ deviceStatus?: string }>;
  refund(): Promise<void>;
}

/** A way to enroll (token, lot token, EST basic, mTLS renewal, signed renewal): chosen by the credential it accepts. */
export interface EnrollmentMethod {
  readonly name: string;
  accepts(credential: Credential): boolean;
  /** Checks the credential against the CSR's claims; throws DomainError (Unauthenticated, Forbidden, ...) with the reason. */
  authorize(credential: Credential, csr: ParsedCsr, ctx: EnrollmentContext): Promise<Authorization>;
}

/** What enrollment needs to know of a device. */
export interface DeviceDirectory {
  deviceFacts(db: Executor, deviceId: string): Promise<DeviceFacts | undefined>;
}

export const ENROLLABLE_STATUSES = new Set(['registered', 'active']);
