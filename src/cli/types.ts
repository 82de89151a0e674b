/**
 * The shapes of the API's answers the readable output uses (openapi.yaml, components/schemas),
 * as far as the tables need them. `--json` prints the answers whole. Those the console shows too
 * are declared once, in src/shared/api-views.ts (a device: DeviceView).
 */
export interface ApiRevocation {
  reason: string;
  revokedAt: string;
  invalidityDate: string | null;
}

export interface ApiCertificate {
  serial: string;
  status: string;
  caId: string;
  profile: string;
  subject: string;
  deviceId?: string | null;
  notBefore: string;
  notAfter: string;
  issuedAt?: string | null;
  renewedFrom?: string | null;
  revocation?: ApiRevocation | null;
}

export interface ApiToken {
  id: string;
  token?: string;
  deviceId: string | null;
  lot: string | null;
  profile: string;
  maxUses: number;
  uses: number;
  expiresAt: string;
  status: string;
}

export interface ApiParty {
  keyId: string;
  name: string;
  role: string;
}

export interface ApiApproval {
  id: string;
  action: string;
  status: string;
  summary: string;
  targets: unknown;
  note: string | null;
  proposedBy: ApiParty;
  proposedAt: string;
  expiresAt: string;
  decidedBy: ApiParty | null;
  decidedAt: string | null;
  reason: string | null;
  result: unknown;
  error: { kind: string; message: string } | null;
  secrets?: Record<string, unknown>;
}

export interface ApiIncident {
  id: string;
  kind: string;
  title: string;
  description: string | null;
  status: string;
  targets: { devices: string[]; lots: string[]; brokers: string[]; caId: string | null };
  openedBy: string;
  openedAt: string;
  closedBy: string | null;
  closedAt: string | null;
  summary: string | null;
  timeline?: ApiIncidentStep[];
}

export interface ApiIncidentStep {
  id: string;
  seq: number;
  action: string;
  dryRun: boolean;
  status: string;
  actor: string;
  startedAt: string;
  finishedAt: string | null;
  touchedCount: number;
  touched: { type: string; id: string }[];
  result: Record<string, unknown> | null;
  error: string | null;
  retryOf?: string | null;
  approvalId: string | null;
  secrets?: Record<string, unknown>;
}

export interface ApiPostureOutcome {
  function: string;
  category: string;
  subcategory: string;
  status: string;
  evidence: string;
  remedy: string;
  currentTier?: number;
  targetTier?: number;
}

export interface ApiPosture {
  generatedAt: string;
  current: Record<string, { tier: number; name: string; met: number; partial: number; unmet: number }>;
  target: Record<string, number>;
  outcomes: ApiPostureOutcome[];
  gaps: ApiPostureOutcome[];
}
