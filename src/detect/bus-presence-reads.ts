// Presence on the bus, read: a device's presence, the devices gone silent, the network map.

import type { BusMapBroker, BusMapCounts, BusMapView, DevicePresenceView } from '../shared/api-views.js';
import type { Clock } from '../shared/clock.js';
import { FreshRead } from '../shared/single-flight.js';
import type { Db } from '../store/db.js';
import type { BusPresenceStore, PresenceRow, SilentDevice } from '../store/bus-presence-store.js';
import type { DeviceKind, DeviceStatus } from '../store/device-store.js';

/** The map's `seen24h`: identities seen this long before the map was read. */
export const MAP_SEEN_WINDOW_MS = 24 * 3_600_000;

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString());

export function presenceView(r: PresenceRow): DevicePresenceView {
  return {
    broker: r.broker,
    connected: r.connected,
    lastConnectAt: iso(r.lastConnectAt),
    lastDisconnectAt: iso(r.lastDisconnectAt),
    lastDisconnectReason: r.lastDisconnectReason,
    lastDisconnectDetail: r.lastDisconnectDetail,
    source: r.source,
    clientId: r.clientId,
    username: r.username,
    protocol: r.protocol,
    keepAliveSeconds: r.keepAliveSeconds,
    sessions: r.connectsTotal,
    lastActivityAt: iso(r.lastActivityAt),
    lastSeenAt: r.lastSeenAt.toISOString(),
  };
}

/**
 * Devices have no profile of their own: a client device's certificates are of the `device`
 * profile and a broker's of the `broker` profile (src/ca/profiles.ts), so a profile selects by
 * the device's kind. Rotation policies are per profile and per lot the same way.
 */
const KIND_OF_PROFILE: Readonly<Record<'device' | 'broker', DeviceKind>> = { device: 'client', broker: 'broker' };

export interface SilentOptions {
  /** Last seen (on every broker) before this time and connected nowhere now. */
  before: Date;
  lot?: string | undefined;
  site?: string | undefined;
  /** `device` (client devices) or `broker`. */
  profile?: 'device' | 'broker' | undefined;
  /** Default: every status but revoked and decommissioned. */
  statuses?: readonly DeviceStatus[] | undefined;
  after?: { lastSeenAt: Date; deviceId: string } | undefined;
  limit: number;
}

/** What the API and the detectors read of presence (bus_presence, written by PresenceRecorder). */
export class BusPresenceReads {
  private readonly mapRead: FreshRead<BusMapView>;

  constructor(
    private readonly db: Db,
    private readonly store: BusPresenceStore,
    private readonly clock: Clock,
  ) {
    // One pass over the table: operators asking at once share the next one.
    this.mapRead = new FreshRead(() => this.readMap());
  }

  /** The device on each broker it was seen on (none: never seen), by broker. */
  async ofDevice(deviceId: string): Promise<DevicePresenceView[]> {
    return (await this.store.ofIdentity(this.db, deviceId)).map(presenceView);
  }

  /** Devices seen on the bus that went silent: connected nowhere, last seen before `before`; oldest silence first. */
  async silent(q: SilentOptions): Promise<SilentDevice[]> {
    return this.store.silent(this.db, {
      before: q.before,
      lot: q.lot,
      site: q.site,
      kind: q.profile === undefined ? undefined : KIND_OF_PROFILE[q.profile],
      statuses: q.statuses,
      after: q.after,
      limit: q.limit,
    });
  }

  /** Brokers → devices by site and lot, with connected / seen in 24 h / known counts. */
  map(): Promise<BusMapView> {
    return this.mapRead.get();
  }

  private async readMap(): Promise<BusMapView> {
    const now = this.clock.now();
    const seenSince = new Date(now.getTime() - MAP_SEEN_WINDOW_MS);
    const brokers = new Map<string, BusMapBroker>();
    const zero = (): BusMapCounts => ({ connected: 0, seen24h: 0, known: 0 });
    const add = (to: BusMapCounts, r: { connected: number; seen: number; known: number }) => {
      to.connected += r.connected;
      to.seen24h += r.seen;
      to.known += r.known;
    };
    for (const r of await this.store.map(this.db, seenSince)) {
      let b = brokers.get(r.broker);
      if (!b) {
        b = { broker: r.broker, ...zero(), groups: [], unregistered: zero() };
        brokers.set(r.broker, b);
      }
      add(b, r);
      if (r.unregistered) add(b.unregistered, r);
      else b.groups.push({ site: r.site, lot: r.lot, connected: r.connected, seen24h: r.seen, known: r.known });
    }
    return { at: now.toISOString(), seenSince: seenSince.toISOString(), brokers: [...brokers.values()] };
  }
}
