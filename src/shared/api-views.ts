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
  /** On GET /v1/devices/{id} only: the device on each broker the bus watch has seen it on. */
  presence?: DevicePresenceView[];
}

/** A device (an identity) on one broker, as the bus watch last saw it (docs/bus-watch.md#presence). */
export interface DevicePresenceView {
  broker: string;
  connected: boolean;
  lastConnectAt: string | null;
  lastDisconnectAt: string | null;
  /** The DisconnectReason of src/broker/bus-events.ts (client, keepalive-timeout, connection-lost, ...). */
  lastDisconnectReason: string | null;
  lastDisconnectDetail: string | null;
  /** The address of its latest connect; the port is null where the broker logs the host only. */
  source: { host: string; port: number | null } | null;
  /** The MQTT client id of its latest connect. */
  clientId: string | null;
  /** The username of its latest connect: the certificate CN under use_identity_as_username. */
  username: string | null;
  protocol: string | null;
  keepAliveSeconds: number | null;
  /** Connects seen (sessions begun). */
  sessions: number;
  /** Its latest subscribe, publish or other act within a session (minute resolution). */
  lastActivityAt: string | null;
  /** The latest of its connect, disconnect and activity. */
  lastSeenAt: string;
}

/** Identities on a broker: connected now, seen in the map's window (or connected), known at all. */
export interface BusMapCounts {
  connected: number;
  seen24h: number;
  known: number;
}

/** The devices of one site and lot on a broker (null: the devices without one). */
export interface BusMapGroup extends BusMapCounts {
  site: string | null;
  lot: string | null;
}

export interface BusMapBroker extends BusMapCounts {
  broker: string;
  groups: BusMapGroup[];
  /** Identities on the broker that are no device of the inventory (another client id or username). */
  unregistered: BusMapCounts;
}

/** GET /v1/bus/map: brokers → devices by site and lot. */
export interface BusMapView {
  at: string;
  /** `seen24h` counts identities seen since this time. */
  seenSince: string;
  brokers: BusMapBroker[];
}
