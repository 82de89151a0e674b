// The console's only way to the API: same-origin fetch with the session cookie, the CSRF token on
// every state-changing request, and problem+json turned into ApiError (its detail and the field it names).
// The shapes of its answers that the service and the CLI share come from src/shared/api-views.ts,
// by type only (the one module of src/ the console may name; nothing of it enters the bundle).

import type { DeviceStatus } from '../../src/shared/api-views.js';
export type { DeviceStatus, DeviceView } from '../../src/shared/api-views.js';

export type Role = 'admin' | 'operator' | 'provisioner' | 'auditor';

export interface Session {
  keyId: string;
  name: string;
  role: Role;
  createdAt: string;
  idleExpiresAt: string;
  expiresAt: string;
  csrfToken: string;
}

export const DEVICE_STATUSES: readonly DeviceStatus[] = ['registered', 'active', 'suspended', 'revoked', 'decommissioned'];

export interface Certificate {
  serial: string;
  status: 'pending' | 'issued' | 'failed' | 'revoked';
  caId: string;
  profile: string;
  subject: string;
  deviceId?: string | null;
  notBefore: string;
  notAfter: string;
  createdAt: string;
  issuedAt?: string | null;
  renewedFrom?: string | null;
  revocation?: { reason: string; revokedAt: string } | null;
}

export interface AuditEntry {
  seq: number;
  at: string;
  actor: string;
  action: string;
  targetType: string;
  targetId: string;
  details: Record<string, unknown>;
}

export interface SecurityEvent {
  id: number;
  at: string;
  kind: string;
  severity: 'info' | 'warning' | 'critical';
  source: string | null;
  subject: string | null;
  details: Record<string, unknown>;
}

export interface EnrollmentToken {
  id: string;
  name?: string | null;
  deviceId: string | null;
  lot: string | null;
  profile: 'device' | 'broker';
  maxUses: number;
  uses: number;
  expiresAt: string;
  createdAt: string;
  createdBy: string;
  revokedAt: string | null;
  lastUsedAt?: string | null;
  status: 'active' | 'expired' | 'used-up' | 'revoked';
}

/** POST /v1/devices/import?dryRun=true: what the import would register. */
export interface ImportPreview {
  dryRun: true;
  wouldImport: number;
  lot: string | null;
  preview: {
    row: number;
    id: string;
    kind: 'client' | 'broker';
    model: string | null;
    hardwareRevision: string | null;
    firmwareVersion: string | null;
    site: string | null;
    lot: string | null;
    labels: Record<string, string>;
  }[];
}

/** One entry of a problem's `errors`: a field's (path) or a manifest row's (row, id, field). */
export interface ProblemError {
  path?: string;
  row?: number;
  id?: string;
  field?: string;
  message?: string;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export const REVOCATION_REASONS = [
  'unspecified',
  'keyCompromise',
  'affiliationChanged',
  'superseded',
  'cessationOfOperation',
  'privilegeWithdrawn',
] as const;

/** A refused request: the API's problem+json, with the field it names when it names one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly fields: Record<string, string>,
    readonly errors: ProblemError[] = [],
  ) {
    super(detail || title);
  }
}

let csrfToken: string | undefined;
let onSignedOut: (() => void) | undefined;

/** Kept in memory only: never in storage or the URL. */
export const setCsrfToken = (t: string | undefined) => {
  csrfToken = t;
};
export const whenSignedOut = (f: () => void) => {
  onSignedOut = f;
};

/** The field a problem's errors[].path names: `/body/site` → `site`, `/body/targets/devices/3` → `devices`. */
const fieldOf = (path: unknown) =>
  typeof path === 'string'
    ? (path
        .split('/')
        .filter((s) => s && !/^[0-9]+$/.test(s))
        .pop() ?? '')
    : '';

/**
 * A new Idempotency-Key, a random (v4) UUID: one per user intent. crypto.randomUUID exists only in
 * secure contexts (HTTPS, localhost); over plain HTTP elsewhere the same UUID comes from getRandomValues.
 */
export function newIdempotencyKey(): string {
  if ('randomUUID' in crypto && window.isSecureContext) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * A user intent's Idempotency-Key (issue #25): made when the intent is first sent (a form
 * submitted, a confirmation opened), sent again with every try of the same intent (a second click,
 * a retry after an error), and renewed once the API has answered it with success, so the next
 * submit is a new intent. The API runs a request once per key and answers a repeat with the first
 * answer (docs/api.md).
 */
export class Intent {
  private current: string | undefined;
  get key(): string {
    return (this.current ??= newIdempotencyKey());
  }
  /** Done: the next request is a new intent. */
  done(): void {
    this.current = undefined;
  }
}

/** Requests that carry an Idempotency-Key: the API's state-changing routes take it (the others ignore it). */
const KEYED = new Set(['POST', 'PATCH']);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * `body` is sent as JSON, or as it is when `contentType` names another type (a CSV manifest).
 * POST and PATCH carry an Idempotency-Key: `intent`'s (a key, or an Intent, renewed on success),
 * else a new one for this call. A 409 that says the same key is still running (Retry-After) is
 * waited for and asked again with the same key: the answer is then the first request's.
 */
export async function api<T>(
  method: string,
  path: string,
  body?: unknown,
  contentType = 'application/json',
  intent?: Intent | string,
): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = contentType;
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  if (KEYED.has(method) && path !== '/v1/console/session')
    headers['Idempotency-Key'] = intent instanceof Intent ? intent.key : (intent ?? newIdempotencyKey());
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : contentType === 'application/json' ? JSON.stringify(body) : String(body),
    });
    const retryAfter = Number(res.headers.get('Retry-After') ?? NaN);
    if (res.status === 409 && headers['Idempotency-Key'] && attempt < 5 && retryAfter > 0 && retryAfter <= 5) {
      await res.body?.cancel();
      await sleep(retryAfter * 1000);
      continue;
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const p = (json ?? {}) as { title?: string; detail?: string; errors?: ProblemError[] };
      const fields: Record<string, string> = {};
      for (const e of p.errors ?? []) {
        const f = fieldOf(e.path);
        if (f && e.message) fields[f] = e.message;
      }
      if (res.status === 401 && path !== '/v1/console/session') onSignedOut?.();
      throw new ApiError(res.status, p.title ?? res.statusText, p.detail ?? '', fields, Array.isArray(p.errors) ? p.errors : []);
    }
    if (intent instanceof Intent) intent.done();
    return json as T;
  }
}

export const INCIDENT_KINDS = ['device-compromise', 'lost-device', 'credential-leak', 'broker-compromise', 'ca-compromise'] as const;
export type IncidentKind = (typeof INCIDENT_KINDS)[number];

export interface IncidentTargets {
  devices: string[];
  lots: string[];
  brokers: string[];
  caId: string | null;
}

export interface Incident {
  id: string;
  kind: IncidentKind;
  title: string;
  description: string | null;
  status: 'open' | 'closed';
  targets: IncidentTargets;
  openedBy: string;
  openedAt: string;
  closedBy: string | null;
  closedAt: string | null;
  summary: string | null;
}

export type StepStatus = 'running' | 'succeeded' | 'unconfirmed' | 'failed' | 'proposed' | 'rejected';

export interface IncidentStep {
  id: string;
  seq: number;
  action: string;
  params: Record<string, unknown>;
  dryRun: boolean;
  status: StepStatus;
  actor: string;
  startedAt: string;
  finishedAt: string | null;
  touchedCount: number;
  touched: { type: string; id: string }[];
  result: Record<string, unknown> | null;
  error: string | null;
  retryOf: string | null;
  approvalId: string | null;
  /** Only in the answer that ran it (reissue's enrollment tokens): shown once, never fetched again. */
  secrets?: Record<string, unknown>;
}

export interface IncidentDetail extends Incident {
  timeline: IncidentStep[];
}

export type ApprovalStatus = 'pending' | 'approved' | 'executed' | 'failed' | 'rejected' | 'expired';
export const APPROVAL_STATUSES: ApprovalStatus[] = ['pending', 'approved', 'executed', 'failed', 'rejected', 'expired'];

export interface ApprovalParty {
  keyId: string;
  name: string;
  role: Role;
}

export interface Approval {
  id: string;
  action: string;
  status: ApprovalStatus;
  summary: string;
  targets: unknown;
  params?: unknown;
  secrets?: Record<string, unknown>;
  note: string | null;
  proposedBy: ApprovalParty;
  proposedAt: string;
  expiresAt: string;
  decidedBy: ApprovalParty | null;
  decidedAt: string | null;
  reason: string | null;
  finishedAt: string | null;
  result: unknown;
  error: { kind: string; message: string } | null;
}

/** GET /v1/revocation-health. */
export interface RevocationHealth {
  at: string;
  crls: {
    caId: string;
    caName: string;
    shard: number;
    full: {
      crlNumber: string;
      thisUpdate: string;
      nextUpdate: string;
      ageSeconds: number;
      secondsToNextUpdate: number;
      entries: number;
    } | null;
    delta: { crlNumber: string; baseNumber: string | null; thisUpdate: string; nextUpdate: string; entries: number } | null;
    stale: boolean;
  }[];
  ocsp: { since: string; total: number; answers: { status: string; source: string; count: number }[] };
  revocationVisible: {
    since: string;
    count: number;
    sumSeconds: number;
    buckets: { le: number; count: number }[];
    recent: { count: number; p50Seconds: number; p99Seconds: number } | null;
  };
}

/** Who may decide a proposal, by its action (as POST /v1/approvals/{id}/approve documents it). */
const DECIDERS: Record<string, Role[]> = {
  'ca.revoke': ['admin'],
  'revocation.bulk': ['admin', 'operator'],
  'incident.action': ['admin', 'operator'],
  'incident.ca-recovery': ['admin'],
  'incident.reissue': ['admin', 'provisioner'],
};

/** What a role may do, as the API's routes allow it (the API refuses the rest anyway). */
export const can = {
  revoke: (r: Role) => r === 'admin' || r === 'operator',
  decommission: (r: Role) => r === 'admin' || r === 'operator',
  editDevice: (r: Role) => r === 'admin' || r === 'operator' || r === 'provisioner',
  readAudit: (r: Role) => r === 'admin' || r === 'auditor',
  readEvents: (r: Role) => r === 'admin' || r === 'operator' || r === 'auditor',
  readIncidents: (r: Role) => r === 'admin' || r === 'operator' || r === 'auditor',
  actInIncidents: (r: Role) => r === 'admin' || r === 'operator',
  readApprovals: (r: Role) => r === 'admin' || r === 'operator' || r === 'auditor',
  readRevocationHealth: (r: Role) => r === 'admin' || r === 'operator' || r === 'auditor',
  /** Approve or reject: a role the action admits, and never the proposer (the API refuses both anyway). */
  decide: (r: Role, a: Approval, keyId: string) => a.proposedBy.keyId !== keyId && (DECIDERS[a.action] ?? []).includes(r),
  /** Import a lot, create enrollment tokens (DEVICE_CREDENTIAL_ROLES). */
  provision: (r: Role) => r === 'admin' || r === 'provisioner',
};

/** Turns an ApiError (or anything thrown) into the line shown to the user. */
export const reasonOf = (e: unknown) =>
  e instanceof ApiError ? e.detail || e.title : e instanceof Error ? e.message : 'The service did not answer.';

export const fmtTime = (iso: string | null | undefined) =>
  iso ? new Date(iso).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' : '—';
