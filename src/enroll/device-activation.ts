import type { Knex } from 'knex';
import type { AuditEntryInput } from '../audit/audit-log.js';
import type { IssuanceListener, IssuedToDevice } from '../ca/issuance.js';
import type { Clock } from '../shared/clock.js';
import type { DeviceIssuedRow } from '../store/certificate-store.js';
import type { DeviceEnrollmentStore } from '../store/device-enrollment-store.js';

/**
 * What issuing a device's certificate does to the device: the certificate becomes its current one,
 * and a registered device becomes active (audited as device.activated). Both commit with the
 * certificate itself, through Issuance's listener.
 */
export class DeviceActivation implements IssuanceListener {
  constructor(
    private readonly store: DeviceEnrollmentStore,
    private readonly clock: Clock,
  ) {}

  plan(issued: IssuedToDevice[]): { devices: DeviceIssuedRow[]; entries: AuditEntryInput[] } {
    const expected = (i: IssuedToDevice) => (i.deviceStatus === 'registered' ? 'registered' : 'active');
    return {
      devices: issued.map((i) => ({ deviceId: i.deviceId, serial: i.serial, notAfter: i.notAfter, expectedStatus: expected(i) })),
      entries: issued
        .filter((i) => expected(i) === 'registered')
        .map((i) => ({ ...i.ctx, action: 'device.activated', targetType: 'device', targetId: i.deviceId })),
    };
  }

  async onIssued(tx: Knex.Transaction, issued: IssuedToDevice[]): Promise<AuditEntryInput[]> {
    const activated = await this.store.recordIssued(tx, issued, this.clock.now());
    const ctxOf = new Map(issued.map((i) => [i.deviceId, i.ctx]));
    return activated.map((id) => ({ ...ctxOf.get(id)!, action: 'device.activated', targetType: 'device', targetId: id }));
  }
}
