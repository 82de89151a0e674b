/**
 * The shapes of the API's answers that the service, the CLI (src/cli) and the web console
 * (console/src/api.ts) all use, declared once (openapi.yaml, components/schemas). Types only, and
 * no imports: the console imports this one module with `import type`, so none of the service's
 * code enters its bundle.
 */

export type DeviceKind = 'client' | 'broker';
export type DeviceStatus = 'registered' | 'active' | 'suspended' | 'revoked' | 'decommissioned';

/** A device as the API shows it: times in UTC ISO-8601, the serial in lowercase hex. */
export interface DeviceView {
  id: string;
  kind: DeviceKind;
  model: string | null;
  hardwareRevision: string | null;
  firmwareVersion: string | null;
  site: string | null;
  lot: string | null;
  status: DeviceStatus;
  labels: Record<string, string>;
  currentSerial: string | null;
  currentNotAfter: string | null;
  createdAt: string;
  activatedAt: string | null;
  suspendedAt: string | null;
  revokedAt: string | null;
  decommissionedAt: string | null;
  updatedAt: string;
}
