import { DomainError } from '../shared/errors.js';
import type { Serial } from '../shared/ids.js';
import type { IncidentKind } from '../shared/security-terms.js';
import type { ResponsePorts } from './responses.js';

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
}

/**
 * The automatic responses' actions on devices and incidents. Never on a broker: holding its
 * certificate would cut off every client on it; that takes a person (the incident actions).
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
}
