import type { SecurityEvents } from './security-events.js';

/** What the event says about a revoked certificate: whose it was and why it was revoked. */
export type RevokedLookup = (serial: Buffer) => Promise<{ deviceId: string | null; reason: string | null } | undefined>;

/** Serials remembered at most; beyond it the oldest memory is dropped (a flood of distinct serials is bounded). */
const REMEMBERED_MAX = 100_000;

/**
 * OCSP queries about revoked certificates: a broker checking a certificate that is revoked is a
 * revoked device still trying to get in. One event (`ocsp.revoked-queried`, subject the device)
 * per certificate per `quietMs`, however many brokers ask: brokers poll, and a device retries.
 * Called on the OCSP hot path, so it returns at once and records in the background.
 */
export class RevokedQueryWatch {
  private readonly lastReported = new Map<string, number>();

  constructor(
    private readonly events: SecurityEvents,
    private readonly lookup: RevokedLookup,
    private readonly onError: (e: unknown) => void = () => undefined,
    private readonly quietMs = 3_600_000,
    private readonly now: () => number = Date.now,
  ) {}

  queried(serials: Buffer[], requester: string): void {
    const now = this.now();
    for (const serial of serials) {
      const hex = serial.toString('hex');
      const last = this.lastReported.get(hex);
      if (last !== undefined && now - last < this.quietMs) continue;
      if (this.lastReported.size >= REMEMBERED_MAX) this.lastReported.delete(this.lastReported.keys().next().value!);
      this.lastReported.delete(hex); // re-inserted last: the map stays in report order
      this.lastReported.set(hex, now);
      this.report(serial, hex, requester).catch((e) => this.onError(e));
    }
  }

  private async report(serial: Buffer, hex: string, requester: string): Promise<void> {
    const cert = await this.lookup(serial);
    await this.events.record({
      kind: 'ocsp.revoked-queried',
      severity: 'warning',
      source: requester,
      subject: cert?.deviceId ?? hex,
      details: { serial: hex, reason: cert?.reason ?? null },
    });
  }
}
