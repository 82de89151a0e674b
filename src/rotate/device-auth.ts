import type { KeyObject } from 'node:crypto';
import type { Clock } from '../shared/clock.js';
import { DomainError } from '../shared/errors.js';
import type { Db } from '../store/db.js';
import type { SessionKeyStore } from '../store/session-key-store.js';
import { sessionKeysSigningInput, type DeviceCertificateAuthenticator, type DeviceProof } from '../enroll/device-certificate-auth.js';

const unauthenticated = (msg: string) => new DomainError('Unauthenticated', msg);
const forbidden = (msg: string) => new DomainError('Forbidden', msg);

/** How a device proves it holds its current certificate's key (a signed one signs sessionKeysSigningInput). */
export type DeviceCredential = DeviceProof;

/** A device authenticated by its current certificate. */
export interface AuthenticatedDevice {
  deviceId: string;
  serial: Buffer;
  publicKey: KeyObject;
}

/**
 * The device behind a session-key fetch: authenticated by its certificate (the one way, with
 * renewal's), which must also be within its validity (no grace: an expired device renews first)
 * and the device's current certificate, and the device active.
 */
export class CurrentDeviceAuth {
  constructor(
    private readonly db: Db,
    private readonly certificates: DeviceCertificateAuthenticator,
    private readonly store: SessionKeyStore,
    private readonly clock: Clock,
  ) {}

  async authenticate(c: DeviceCredential | undefined): Promise<AuthenticatedDevice> {
    if (!c)
      throw unauthenticated(
        'a current device certificate is required: the TLS client certificate, or Authorization: MQTT-CA-SessionKeys cert="...", signed-at="...", signature="..."',
      );
    const { row, serial, name, publicKey } = await this.certificates.authenticate(c, sessionKeysSigningInput);
    const now = this.clock.now();
    if (row.notAfter.getTime() <= now.getTime())
      throw forbidden(`certificate ${name} expired at ${row.notAfter.toISOString()}: renew it first`);
    if (row.notBefore.getTime() > now.getTime()) throw forbidden(`certificate ${name} is not valid before ${row.notBefore.toISOString()}`);
    const [device] = await this.store.devices(this.db, [row.deviceId]);
    if (!device) throw forbidden(`device ${row.deviceId} is not in the inventory`);
    if (device.status !== 'active') throw forbidden(`device ${row.deviceId} is ${device.status}`);
    if (!device.currentSerial?.equals(serial)) throw forbidden(`certificate ${name} is not device ${row.deviceId}'s current certificate`);
    return { deviceId: row.deviceId, serial, publicKey };
  }
}
