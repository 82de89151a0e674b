import type { Executor } from './db.js';

/** What the expiry sweeps mark: certificates that ran out unrenewed, enrollment tokens past their time. */
export class ExpiryStore {
  /**
   * Marks up to `limit` current certificates of devices (issued, not renewed: still the device's
   * current one) that reached notAfter; returns them. Two sweeps never mark one twice.
   */
  async markExpiredCertificates(
    tx: Executor,
    now: Date,
    limit: number,
  ): Promise<{ serial: Buffer; deviceId: string; notAfter: Date; profile: string }[]> {
    const r = await tx.raw(
      `update certificates c set expired_at = ?
        where c.serial in (select c2.serial from certificates c2 join devices d on d.current_serial = c2.serial
                            where c2.status = 'issued' and c2.not_after <= ? and c2.expired_at is null
                            order by c2.not_after limit ? for update of c2 skip locked)
        returning c.serial, c.device_id, c.not_after, c.profile`,
      [now, now, limit],
    );
    return (r.rows as Record<string, unknown>[]).map((x) => ({
      serial: Buffer.from(x.serial as Uint8Array),
      deviceId: x.device_id as string,
      notAfter: new Date(x.not_after as string),
      profile: x.profile as string,
    }));
  }

  async markExpiredTokens(
    tx: Executor,
    now: Date,
    limit: number,
  ): Promise<{ id: string; deviceId: string | null; lot: string | null; uses: number; maxUses: number }[]> {
    const r = await tx.raw(
      `update enrollment_tokens t set expired_at = ?
        where t.id in (select id from enrollment_tokens where expires_at <= ? and expired_at is null and revoked_at is null
                        order by expires_at limit ? for update skip locked)
        returning t.id, t.device_id, t.lot, t.uses, t.max_uses`,
      [now, now, limit],
    );
    return (r.rows as Record<string, unknown>[]).map((x) => ({
      id: x.id as string,
      deviceId: (x.device_id as string | null) ?? null,
      lot: (x.lot as string | null) ?? null,
      uses: Number(x.uses),
      maxUses: Number(x.max_uses),
    }));
  }
}
