import type { AuditLog } from '../audit/audit-log.js';
import type { SecurityEvents } from '../detect/security-events.js';
import type { Clock } from '../shared/clock.js';
import { serialFromBytes } from '../shared/ids.js';
import type { Db } from '../store/db.js';
import type { ExpiryStore } from '../store/expiry-store.js';

const CHUNK = 2000;

/**
 * The expiry sweeps: a device certificate that reached notAfter without being renewed is marked
 * expired and raises a `certificate-expired` alert; an enrollment token past its time is marked
 * expired. Each mark commits with its audit entries; a sweep that runs twice marks nothing twice.
 */
export class ExpirySweeps {
  constructor(
    private readonly db: Db,
    private readonly store: ExpiryStore,
    private readonly audit: AuditLog,
    private readonly events: SecurityEvents,
    private readonly clock: Clock,
  ) {}

  async certificates(): Promise<{ expired: number }> {
    let expired = 0;
    for (;;) {
      const { n, recorded } = await this.db.transaction(async (tx) => {
        const rows = await this.store.markExpiredCertificates(tx, this.clock.now(), CHUNK);
        if (rows.length === 0) return { n: 0, recorded: [] };
        const recorded = await this.events.recordIn(
          tx,
          rows.map((r) => ({
            kind: 'certificate-expired',
            severity: 'warning' as const,
            subject: r.deviceId,
            details: { serial: serialFromBytes(r.serial), notAfter: r.notAfter.toISOString(), profile: r.profile, renewed: false },
          })),
          rows.map((r) => ({
            actor: 'system:rotation',
            action: 'certificate.expired',
            targetType: 'certificate',
            targetId: serialFromBytes(r.serial),
            details: { deviceId: r.deviceId, notAfter: r.notAfter.toISOString() },
          })),
        );
        return { n: rows.length, recorded };
      });
      await this.events.announce(recorded);
      expired += n;
      if (n < CHUNK) return { expired };
    }
  }

  async tokens(): Promise<{ expired: number }> {
    let expired = 0;
    for (;;) {
      const n = await this.db.transaction(async (tx) => {
        const rows = await this.store.markExpiredTokens(tx, this.clock.now(), CHUNK);
        if (rows.length > 0) {
          await this.audit.append(
            tx,
            rows.map((t) => ({
              actor: 'system:rotation',
              action: 'enrollment-token.expired',
              targetType: 'enrollment-token',
              targetId: t.id,
              details: { deviceId: t.deviceId, lot: t.lot, uses: t.uses, maxUses: t.maxUses },
            })),
          );
        }
        return rows.length;
      });
      expired += n;
      if (n < CHUNK) return { expired };
    }
  }
}
