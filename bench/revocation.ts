/**
 * Revocation at fleet scale: one bulk request that revokes a whole production lot of 100,000
 * certificates (the certificates, their devices, 200,000 audit entries and the new CRL), against
 * single revocations one at a time measured in the same run.
 */
import 'reflect-metadata';
import { performance } from 'node:perf_hooks';
import { serialFromBytes } from '../src/shared/ids.js';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase } from './db.js';

export const description =
  'Bulk revocation: `Revocations.revokeMany` with `{ lot }` revoking a production lot of 100,000 issued certificates whose ' +
  'devices are active — the certificates (one statement), their devices (one statement), one audit entry per certificate and ' +
  "per device (200,000, hash-chained) and the issuing CA's new CRL, all before it returns. Baseline from the same run: " +
  'single revocations (`Revocations.revoke`, keyCompromise, CRL republished each time) one after another, on 300 certificates ' +
  'of another lot.';

const LOT_SIZE = 100_000;
const SINGLES = 300;

/** Devices and their issued certificates, set-based: what is measured is the revocation. */
async function seedLot(db: import('knex').Knex, caId: string, lot: string, n: number): Promise<void> {
  await db.raw(
    `insert into devices (id, kind, lot, status, labels, created_at, updated_at, activated_at)
     select ? || '-' || i, 'client', ?, 'active', '{}', now(), now(), now() from generate_series(1, ?::int) as i`,
    [lot, lot, n],
  );
  await db.raw(
    `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, tbs_der, der, spki_sha256, not_before, not_after, created_at, issued_at)
     select decode(md5(? || i), 'hex'), ?, 'device', 'issued', ? || '-' || i, ? || '-' || i, '\\x00', '\\x00', '\\x00',
            now() - interval '1 day', now() + interval '365 days', now(), now()
       from generate_series(1, ?::int) as i`,
    [lot, caId, lot, lot, n],
  );
  await db.raw(`update devices d set current_serial = c.serial from certificates c where c.device_id = d.id and d.lot = ?`, [lot]);
}

export async function run(): Promise<BenchResult[]> {
  const { db, label, drop } = await freshDatabase();
  try {
    const { svc, issuingId: caId } = await benchService(db);
    const ctx = { actor: 'bench' };

    await seedLot(db, caId, 'SINGLE', SINGLES);
    const singles = (
      await db('certificates')
        .where({ status: 'issued' })
        .whereIn('device_id', db('devices').select('id').where({ lot: 'SINGLE' }))
        .select('serial')
    ).map((r: { serial: Uint8Array }) => serialFromBytes(Buffer.from(r.serial)));
    let t0 = performance.now();
    for (const s of singles) await svc.revocations.revoke(s, { reason: 'keyCompromise' }, ctx);
    const singleRate = singles.length / ((performance.now() - t0) / 1000);

    await seedLot(db, caId, 'BULK', LOT_SIZE);
    t0 = performance.now();
    const out = await svc.revocations.revokeMany({ selector: { lot: 'BULK' }, reason: 'keyCompromise' }, ctx);
    const seconds = (performance.now() - t0) / 1000;
    if (out.revoked !== LOT_SIZE) throw new Error(`bulk revocation revoked ${out.revoked}, expected ${LOT_SIZE}`);
    const base = { name: 'single revocations one at a time (each with its CRL)', value: singleRate };
    await svc.close();
    return [
      result(base.name, 'certificates/s', singleRate, base, `${label}; ${SINGLES} certificates`),
      result(
        `bulk revocation of a ${LOT_SIZE.toLocaleString('en-US')}-certificate lot, one request`,
        'certificates/s',
        LOT_SIZE / seconds,
        base,
        `${label}; ${seconds.toFixed(2)} s including devices, audit and the new CRL`,
      ),
    ];
  } finally {
    await drop();
  }
}
