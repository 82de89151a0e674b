import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { parseCertificate } from '../ca/x509/inspect.js';
import { nodeSignHash } from '../ca/x509/encode.js';
import type { Clock } from '../shared/clock.js';
import { DomainError, isDomainError } from '../shared/errors.js';
import { serialFromBytes } from '../shared/ids.js';
import type { CertificateStore } from '../store/certificate-store.js';
import type { Db } from '../store/db.js';
import type { ReplayStore } from '../store/replay-store.js';
import type { SessionKeyStore } from '../store/session-key-store.js';

const unauthenticated = (msg: string) => new DomainError('Unauthenticated', msg);
const forbidden = (msg: string) => new DomainError('Forbidden', msg);

/** How a device proves it holds its current certificate's key. */
export type DeviceCredential =
  /** The TLS client certificate (TLS listener): the handshake proved the key. */
  | { kind: 'client-certificate'; der: Buffer }
  /** Behind a TLS-terminating proxy: the certificate, a time, and a signature by its key over sessionKeysSigningInput(signedAt). */
  | { kind: 'signed'; certificateDer: Buffer; signedAt: string; signature: Buffer };

/** How far a signed request's time may be from ours (as for signed renewals). */
export const SIGNED_REQUEST_SKEW_MS = 5 * 60_000;

/**
 * The text a device signs to fetch its session keys. Its own prefix (a renewal signs
 * `mqtt-ca-renewal\n...`), so a signature made for one purpose never verifies for the other.
 */
export function sessionKeysSigningInput(signedAt: string): Buffer {
  return Buffer.from(`mqtt-ca-session-keys\nGET /v1/session-keys\n${signedAt}`);
}

/** A device authenticated by its current certificate. */
export interface AuthenticatedDevice {
  deviceId: string;
  serial: Buffer;
  publicKey: KeyObject;
}

/**
 * Device authentication by the current certificate, as the renewal methods do it: the
 * certificate must be one this CA issued (byte for byte the stored DER), issued (not revoked or
 * on hold), within its validity (no grace: an expired device renews first), the device's current
 * certificate, and its device active. A signed request is checked like a signed renewal: 5 minutes'
 * skew, and each signature accepted once (the replay guard, in its own namespace).
 */
export class DeviceCertificateAuth {
  constructor(
    private readonly db: Db,
    private readonly certificates: CertificateStore,
    private readonly store: SessionKeyStore,
    private readonly replay: ReplayStore,
    private readonly clock: Clock,
  ) {}

  async authenticate(c: DeviceCredential | undefined): Promise<AuthenticatedDevice> {
    if (!c) throw unauthenticated('a current device certificate is required: the TLS client certificate, or Authorization: MQTT-CA-SessionKeys cert="...", signed-at="...", signature="..."');
    const der = c.kind === 'client-certificate' ? c.der : c.certificateDer;
    let presented;
    try {
      presented = parseCertificate(der, 'device certificate');
    } catch (e) {
      if (isDomainError(e)) throw unauthenticated(e.message);
      throw e;
    }
    const serial = Buffer.from(presented.serialHex, 'hex');
    const row = await this.certificates.get(this.db, serial);
    if (!row || !row.der || !row.der.equals(presented.der)) throw unauthenticated('the certificate was not issued by this CA');
    const name = serialFromBytes(serial);
    if (row.status === 'revoked') throw forbidden(`certificate ${name} is ${row.revocationReason === 'certificateHold' ? 'on hold' : 'revoked'}`);
    if (row.status !== 'issued' || !row.deviceId) throw forbidden(`certificate ${name} does not authenticate a device`);
    const now = this.clock.now();
    if (row.notAfter.getTime() <= now.getTime()) throw forbidden(`certificate ${name} expired at ${row.notAfter.toISOString()}: renew it first`);
    if (row.notBefore.getTime() > now.getTime()) throw forbidden(`certificate ${name} is not valid before ${row.notBefore.toISOString()}`);
    const publicKey = createPublicKey({ key: presented.spki, format: 'der', type: 'spki' });
    if (c.kind === 'signed') await this.checkSignature(c, publicKey, now);
    const [device] = await this.store.devices(this.db, [row.deviceId]);
    if (!device) throw forbidden(`device ${row.deviceId} is not in the inventory`);
    if (device.status !== 'active') throw forbidden(`device ${row.deviceId} is ${device.status}`);
    if (!device.currentSerial?.equals(serial)) throw forbidden(`certificate ${name} is not device ${row.deviceId}'s current certificate`);
    return { deviceId: row.deviceId, serial, publicKey };
  }

  private async checkSignature(c: Extract<DeviceCredential, { kind: 'signed' }>, key: KeyObject, now: Date): Promise<void> {
    const at = Date.parse(c.signedAt);
    if (Number.isNaN(at) || Math.abs(now.getTime() - at) > SIGNED_REQUEST_SKEW_MS) {
      throw unauthenticated('the request signature is stale or its time is not ISO-8601 (allowed skew: 5 minutes)');
    }
    let ok = false;
    try {
      const hash = key.asymmetricKeyType === 'ed25519' ? null : key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? nodeSignHash('ecdsa-with-SHA384') : 'sha256';
      ok = verify(hash, sessionKeysSigningInput(c.signedAt), { key, dsaEncoding: 'der' }, c.signature);
    } catch {
      ok = false;
    }
    if (!ok) throw unauthenticated("the request signature does not verify with the certificate's key");
    const digest = createHash('sha256').update('mqtt-ca-session-keys\n').update(c.signature).digest();
    if (!(await this.replay.useOnce(this.db, digest, new Date(now.getTime() + 2 * SIGNED_REQUEST_SKEW_MS)))) {
      throw unauthenticated('this signed request was already used (replay)');
    }
  }
}
