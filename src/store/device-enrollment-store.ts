import type { Executor } from './db.js';
import type { DeviceFacts } from './token-store.js';

/**
 * What enrollment reads and writes of the device inventory: a device's facts, and the set-based
 * update that records a batch of issued certificates (current certificate, first activation).
 */
export class DeviceEnrollmentStore {
  async facts(db: Executor, id: string): Promise<DeviceFacts | undefined> {
    const r = await db('devices').select('kind', 'lot', 'status').where({ id }).first();
    return r ? { kind: r.kind, lot: r.lot ?? null, status: r.status } : undefined;
  }

  /**
   * One statement for the batch: each device's newest certificate, and `registered` → `active`
   * (the lifecycle's only move here; DeviceInventory owns the others). Returns the ids it
   * activated. Unknown devices, and devices suspended, revoked or decommissioned meanwhile, are skipped.
   * Planned on every call, not prepared, like CertificateStore.completeIssued: the general path.
   */
  async recordIssued(db: Executor, rows: { deviceId: string; serial: Buffer; notAfter: Date }[], now: Date): Promise<string[]> {
    if (rows.length === 0) return [];
    const result = await db.raw(
      `with v(id, serial, not_after) as (select * from unnest(?::text[], ?::bytea[], ?::timestamptz[])),
            before as (select d.id, d.status from devices d join v on v.id = d.id for update of d)
       update devices d
          set current_serial = v.serial,
              current_not_after = v.not_after,
              status = case when d.status = 'registered' then 'active' else d.status end,
              activated_at = case when d.status = 'registered' then ?::timestamptz else d.activated_at end,
              updated_at = ?::timestamptz
         from v join before b on b.id = v.id
        where d.id = v.id and d.status in ('registered', 'active')
        returning d.id, b.status as previous`,
      [rows.map((r) => r.deviceId), rows.map((r) => r.serial), rows.map((r) => r.notAfter), now, now],
    );
    return (result.rows as { id: string; previous: string }[]).filter((r) => r.previous === 'registered').map((r) => r.id);
  }
}
