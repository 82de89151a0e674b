import type { ActorContext } from '../shared/actor.js';
import type { Revocations } from './revocation.js';

/** The inventory's side of a decommission (DeviceInventory in production). */
export interface DecommissionPort<D> {
  /** NotFound when there is no such device. */
  get(id: string): Promise<unknown>;
  decommission(id: string, ctx: ActorContext): Promise<D>;
}

/**
 * Takes a device out of service for good: first its certificates still issued are revoked
 * (cessationOfOperation: published to OCSP and the CRLs like any revocation, so a broker refuses
 * the retired device's certificate), then the device is decommissioned. A failure between the two
 * leaves the device in service with its certificates revoked; repeating the call finishes it. A
 * device decommissioned before this had its certificates revoked gets them revoked now.
 */
export class DeviceRetirement<D = unknown> {
  constructor(
    private readonly revocations: Pick<Revocations, 'revokeMany'>,
    private readonly devices: DecommissionPort<D>,
  ) {}

  async decommission(id: string, ctx: ActorContext): Promise<D> {
    await this.devices.get(id); // NotFound before anything is revoked
    await this.revocations.revokeMany({ selector: { deviceIds: [id] }, reason: 'cessationOfOperation' }, ctx);
    return this.devices.decommission(id, ctx);
  }
}
