import { DomainError } from '../shared/errors.js';
import type { Serial } from '../shared/ids.js';
import type { IncidentKind } from '../shared/security-terms.js';
import type { BrokerFanout } from '../broker/connector.js';
import type { BrokerActionOutcome, ResponsePorts } from './response-runner.js';

/** What the automatic responses need from the rest of the service: narrow views of the inventory, revocation and incidents. */
export interface ResponseDeps {
  /** A device as the inventory has it; a NotFound DomainError when it is not there. */
  device(deviceId: string): Promise<{ kind: string; status: string; currentSerial: string | null }>;
  /** The devices among `ids` that are in the inventory. */
  knownDevices(ids: string[]): Promise<{ id: string; kind: string }[]>;
  hold(serial: Serial, input: { reason: 'certificateHold' }, ctx: { actor: string }): Promise<unknown>;
  openIncident(
    input: { kind: IncidentKind; title: string; description: string; targets: { devices: string[] } },
    ctx: { actor: string },
  ): Promise<{ id: string }>;
  /** The service's own identities (ReservedIdentities.isReserved: the connector's CN, ...): never blocked or disconnected. */
  reserved?: (name: string) => boolean;
  /** The broker connectors (BrokerConnectors); absent or none configured: block-client and disconnect-client do nothing and say so. */
  brokers?: {
    readonly configured: boolean;
    block(clientIds: string[], reason: string): Promise<BrokerFanout>;
    disconnect(clientIds: string[], reason: string): Promise<BrokerFanout>;
  };
}

/**
 * The automatic responses' actions on devices, clients at the brokers and incidents. Never on a
 * broker: holding its certificate or blocking its identity would cut off every client on it; that
 * takes a person (the incident actions).
 */
export class DetectionResponsePorts implements ResponsePorts {
  constructor(private readonly deps: ResponseDeps) {}

  /** A device the failing-identity rule names is held: its certificate in use goes on certificateHold and the device follows to suspended. */
  async suspendDevice(deviceId: string): Promise<{ held: string | null; status: string }> {
    const device = await this.deps.device(deviceId).catch((e: unknown) => {
      if (e instanceof DomainError && e.kind === 'NotFound') return undefined;
      throw e;
    });
    if (!device) return { held: null, status: 'not in the inventory' };
    if (device.kind === 'broker') return { held: null, status: 'a broker: not held automatically' };
    if (!device.currentSerial || device.status !== 'active') return { held: null, status: device.status };
    await this.deps.hold(device.currentSerial as Serial, { reason: 'certificateHold' }, { actor: 'system:detection' });
    return { held: device.currentSerial, status: 'suspended' };
  }

  /** Opens an incident naming the devices that are in the inventory, brokers left out. */
  async openIncident(input: {
    kind: IncidentKind;
    title: string;
    description: string;
    devices: string[];
  }): Promise<{ incidentId: string }> {
    const known = (await this.deps.knownDevices(input.devices)).filter((d) => d.kind !== 'broker').map((d) => d.id);
    const incident = await this.deps.openIncident(
      { kind: input.kind, title: input.title, description: input.description, targets: { devices: known } },
      { actor: 'system:detection' },
    );
    return { incidentId: incident.id };
  }

  /** Blocks the clients at every broker (the dynsec deny role, then a kick, each confirmed); brokers' own identities are left out. */
  blockClients(clientIds: string[], reason: string): Promise<BrokerActionOutcome> {
    return this.atBrokers(clientIds, (b, ids) => b.block(ids, reason));
  }

  /** Ends the clients' sessions at every broker; brokers' own identities are left out. */
  disconnectClients(clientIds: string[], reason: string): Promise<BrokerActionOutcome> {
    return this.atBrokers(clientIds, (b, ids) => b.disconnect(ids, reason));
  }

  private async atBrokers(
    clientIds: string[],
    act: (brokers: NonNullable<ResponseDeps['brokers']>, ids: string[]) => Promise<BrokerFanout>,
  ): Promise<BrokerActionOutcome> {
    const none = (skipped: string): BrokerActionOutcome => ({ confirmed: false, connectors: [], failures: [], skipped });
    const brokers = this.deps.brokers;
    if (!brokers?.configured) return none('no broker connector configured');
    const isBroker = new Set((await this.deps.knownDevices(clientIds)).filter((d) => d.kind === 'broker').map((d) => d.id));
    const own = clientIds.filter((id) => this.deps.reserved?.(id));
    const ids = clientIds.filter((id) => !isBroker.has(id) && !own.includes(id));
    if (ids.length === 0) return none(own.length ? "the service's own identity: not acted on" : 'a broker: not acted on automatically');
    const fanout = await act(brokers, ids);
    const connectors = fanout.results.map((r) => ({
      connector: r.connector,
      effects: r.effects.map((e) => ({
        clientId: e.clientId,
        applied: e.applied,
        confirmed: e.confirmed,
        ...(e.detail ? { detail: e.detail } : {}),
        ...(e.sessionsEnded ? { sessionsEnded: e.sessionsEnded } : {}),
      })),
    }));
    const failures = fanout.failures.map((f) => ({ connector: f.connector, error: f.error.message }));
    const confirmed =
      failures.length === 0 &&
      connectors.length > 0 &&
      connectors.every((c) => c.effects.length > 0 && c.effects.every((e) => e.applied && e.confirmed));
    return { confirmed, connectors, failures, ...(isBroker.size ? { skipped: `brokers left out: ${[...isBroker].join(', ')}` } : {}) };
  }
}
