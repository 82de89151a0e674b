/**
 * Revocation at fleet scale: one bulk request that revokes a whole production lot of 100,000
 * certificates (the certificates, their devices, 200,000 audit entries and the new CRL), against
 * single revocations one at a time measured in the same run.
 */
import 'reflect-metadata';
import { performance } from 'node:perf_hooks';
import { serialFromBytes } from '../src/shared/ids.js';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase, SEEDED_KEY_TYPE, steadyState } from './db.js';
import { Revocations } from '../src/revoke/revocation.js';
import { CertificateStore } from '../src/store/certificate-store.js';
import { systemClock } from '../src/shared/clock.js';

export const description =
  'Bulk revocation: `Revocations.revokeMany` with `{ lot }` revoking a production lot of 100,000 issued certificates whose ' +
  'devices are active — the certificates (one statement), their devices (one statement), one audit entry per certificate and ' +
  "per device (200,000, hash-chained) and the issuing CA's new delta CRL, all before it returns (the full CRL is rebuilt in " +
  'the background). Baseline from the same run: single revocations (`Revocations.revoke`, keyCompromise, a delta CRL published ' +
  'each time) one after another, on 300 certificates of another lot. Then single-revoke latency (p50, p99) with 1,000,000 ' +
  'revoked certificates of the same CA (seeded set-based, the full CRL built once before measuring; a change has it rebuilt ' +
  'in the background no sooner than ten times its last build took) against the same figures with none revoked; target: p99 within 1.5×. ' +
  'Then, on a database of its own: one request revoking a 1,000,000-certificate lot in chunks (a bulk revocation run), ' +
  'against the one-transaction path of before on 100,000 in the same store (both lots seeded first, so both revocations work on the same 1,100,000-row tables). Every seeding is followed by VACUUM (ANALYZE) and a ' +
  'CHECKPOINT, so each figure is taken in the steady state of its fleet, not during the autovacuum of a bulk insert.';

const LOT_SIZE = 100_000;
const SINGLES = 300;
const REVOKED_TOTAL = 1_000_000;

const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;

/**
 * Revoked certificates (and their devices), set-based, so that the CA has `n` more revoked: each
 * takes a value of the revocation clock, as a revocation does (migration 0008).
 */
async function seedRevoked(db: import('knex').Knex, caId: string, lot: string, n: number): Promise<void> {
  await db.transaction(async (tx) => {
    const after = BigInt((await tx.raw('update revocation_epoch set seq = seq + ? returning seq', [n])).rows[0].seq);
    const from = (after - BigInt(n)).toString();
    await tx.raw(
      `insert into devices (id, kind, lot, status, labels, created_at, updated_at, activated_at)
       select ? || '-' || i, 'client', ?, 'revoked', '{}', now(), now(), now() from generate_series(1, ?::int) as i`,
      [lot, lot, n],
    );
    await tx.raw(
      `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, tbs_der, der, spki_sha256, key_type, not_before, not_after, created_at,
                                 issued_at, revoked_at, revocation_reason, revocation_seq)
       select decode(md5(? || i), 'hex'), ?, 'device', 'revoked', ? || '-' || i, ? || '-' || i, '\\x00', '\\x00', '\\x00', ?,
              now() - interval '1 day', now() + interval '365 days', now(), now(), now() - interval '1 hour', 'superseded', ?::bigint + i
         from generate_series(1, ?::int) as i`,
      [lot, caId, lot, lot, SEEDED_KEY_TYPE, from, n],
    );
  });
  await steadyState(db);
}

async function singleLatencies(svc: import('../src/main.js').Service, serials: ReturnType<typeof serialFromBytes>[]): Promise<number[]> {
  const ms: number[] = [];
  for (const s of serials) {
    const t = performance.now();
    await svc.revocations.revoke(s, { reason: 'keyCompromise' }, { actor: 'bench' });
    ms.push(performance.now() - t);
  }
  return ms;
}

async function lotSerials(db: import('knex').Knex, lot: string) {
  return (
    await db('certificates').where({ status: 'issued' }).whereIn('device_id', db('devices').select('id').where({ lot })).select('serial')
  ).map((r: { serial: Uint8Array }) => serialFromBytes(Buffer.from(r.serial)));
}

/** Devices and their issued certificates, set-based: what is measured is the revocation. */
async function seedLot(db: import('knex').Knex, caId: string, lot: string, n: number): Promise<void> {
  await db.raw(
    `insert into devices (id, kind, lot, status, labels, created_at, updated_at, activated_at)
     select ? || '-' || i, 'client', ?, 'active', '{}', now(), now(), now() from generate_series(1, ?::int) as i`,
    [lot, lot, n],
  );
  await db.raw(
    `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, tbs_der, der, spki_sha256, key_type, not_before, not_after, created_at,
                               issued_at)
     select decode(md5(? || i), 'hex'), ?, 'device', 'issued', ? || '-' || i, ? || '-' || i, '\\x00', '\\x00', '\\x00', ?,
            now() - interval '1 day', now() + interval '365 days', now(), now()
       from generate_series(1, ?::int) as i`,
    [lot, caId, lot, lot, SEEDED_KEY_TYPE, n],
  );
  await db.raw(`update devices d set current_serial = c.serial from certificates c where c.device_id = d.id and d.lot = ?`, [lot]);
  await steadyState(db);
}

export async function run(): Promise<BenchResult[]> {
  const { db, label, drop } = await freshDatabase();
  try {
    const { svc, issuingId: caId } = await benchService(db);
    const ctx = { actor: 'bench' };

    await seedLot(db, caId, 'SINGLE', SINGLES);
    await seedLot(db, caId, 'SINGLE-1M', SINGLES);
    const singles = await lotSerials(db, 'SINGLE');
    let t0 = performance.now();
    const emptyMs = await singleLatencies(svc, singles);
    const singleRate = singles.length / ((performance.now() - t0) / 1000);
    await svc.crls.settled();

    await seedLot(db, caId, 'BULK', LOT_SIZE);
    t0 = performance.now();
    const out = await svc.revocations.revokeMany({ selector: { lot: 'BULK' }, reason: 'keyCompromise' }, ctx);
    const seconds = (performance.now() - t0) / 1000;
    if (out.revoked !== LOT_SIZE) throw new Error(`bulk revocation revoked ${out.revoked}, expected ${LOT_SIZE}`);
    await svc.crls.settled();

    const revokedNow = Number((await db('certificates').where({ ca_id: caId, status: 'revoked' }).count({ n: '*' }))[0]!.n);
    await seedRevoked(db, caId, 'REVOKED', REVOKED_TOTAL - revokedNow);
    t0 = performance.now();
    const { full } = await svc.crls.publish(caId);
    const fullSeconds = (performance.now() - t0) / 1000;
    if (full.entries < REVOKED_TOTAL) throw new Error(`the full CRL lists ${full.entries}, expected at least ${REVOKED_TOTAL}`);
    const bigMs = await singleLatencies(svc, await lotSerials(db, 'SINGLE-1M'));
    const revoked = Number((await db('certificates').where({ ca_id: caId, status: 'revoked' }).count({ n: '*' }))[0]!.n);
    if (revoked !== REVOKED_TOTAL + SINGLES) throw new Error(`${revoked} revoked, expected ${REVOKED_TOTAL + SINGLES}`);
    await svc.crls.settled();
    const rebuilt = (await svc.crls.current(caId))!;
    if (rebuilt.entries !== revoked) throw new Error(`the rebuilt full CRL lists ${rebuilt.entries}, expected ${revoked}`);

    const base = { name: 'single revocations one at a time (each with its delta CRL)', value: singleRate };
    const p50Base = { name: 'single revoke p50, nothing revoked', value: percentile(emptyMs, 0.5) };
    const p99Base = { name: 'single revoke p99, nothing revoked', value: percentile(emptyMs, 0.99) };
    const million = REVOKED_TOTAL.toLocaleString('en-US');
    await svc.close();
    return [
      result(base.name, 'certificates/s', singleRate, base, `${label}; ${SINGLES} certificates`),
      result(
        `bulk revocation of a ${LOT_SIZE.toLocaleString('en-US')}-certificate lot, one request`,
        'certificates/s',
        LOT_SIZE / seconds,
        base,
        `${label}; ${seconds.toFixed(2)} s including devices, audit and the new delta CRL`,
      ),
      result(p50Base.name, 'ms', p50Base.value, p50Base, `${label}; ${SINGLES} certificates, the first revocations of the CA`),
      result(p99Base.name, 'ms', p99Base.value, p99Base, `${label}; ${SINGLES} certificates`),
      result(`single revoke p50, ${million} revoked`, 'ms', percentile(bigMs, 0.5), p50Base, `${label}; ${SINGLES} certificates`),
      result(
        `single revoke p99, ${million} revoked`,
        'ms',
        percentile(bigMs, 0.99),
        p99Base,
        `${label}; ${SINGLES} certificates, each with its delta; the full CRL's rebuild waits 10× its last build, so none runs among them; target ratio <= 1.5`,
      ),
      result(
        `full CRL build, ${million} revoked (off the request path)`,
        's',
        fullSeconds,
        { name: 'full CRL build, ' + million + ' revoked', value: fullSeconds },
        `${label}; ${(full.der.length / 1e6).toFixed(1)} MB`,
      ),
      ...(await bulkMillion()),
    ];
  } finally {
    await drop();
  }
}

// ---- #29 item 2: a million certificates in one bulk request (chunked runs) ----

/**
 * One request revoking a 1,000,000-certificate lot (keyCompromise, devices active), chunked
 * (BULK_REVOKE_CHUNK_SIZE, default 20,000: each chunk one transaction with its audit entries and
 * published), against the same run's rate of the one-transaction path every bulk revocation took
 * before (Revocations without runs) on a 100,000-certificate lot, on a database of their own.
 * Both lots are seeded before either is revoked: the two rates are taken on the same tables (a
 * million rows more make each row's update dearer, whichever path does it).
 * (The sizes are parameters for a quick check of this function alone.)
 */
export async function bulkMillion(MILLION = 1_000_000, TODAY_LOT = 100_000): Promise<BenchResult[]> {
  const { db, label, drop } = await freshDatabase();
  try {
    const { svc, issuingId: caId } = await benchService(db);
    const ctx = { actor: 'bench' };
    const oneTransaction = new Revocations(db, new CertificateStore(), svc.devices, svc.audit, systemClock, [
      svc.ocsp,
      svc.crls,
      svc.sessionKeys,
    ]);
    await seedLot(db, caId, 'MILLION', MILLION);
    await seedLot(db, caId, 'TODAY', TODAY_LOT);
    let t0 = performance.now();
    const today = await oneTransaction.revokeMany({ selector: { lot: 'TODAY' }, reason: 'keyCompromise' }, ctx);
    const todaySeconds = (performance.now() - t0) / 1000;
    if (today.revoked !== TODAY_LOT || today.id !== undefined)
      throw new Error(`one-transaction bulk revoked ${today.revoked}, expected ${TODAY_LOT} without a run`);
    // Its CRL rebuild and its dead rows' vacuum are not the next figure's.
    await svc.crls.settled();
    await steadyState(db);

    t0 = performance.now();
    const out = await svc.revocations.revokeMany({ selector: { lot: 'MILLION' }, reason: 'keyCompromise' }, ctx);
    const seconds = (performance.now() - t0) / 1000;
    if (out.revoked !== MILLION || !out.id) throw new Error(`chunked bulk revocation revoked ${out.revoked}, expected ${MILLION} in a run`);
    const run = await svc.revocations.bulkRun(out.id);
    if (run.status !== 'done' || run.revoked !== MILLION) throw new Error(`run ${run.id} is ${run.status} with ${run.revoked} revoked`);
    const revoked = Number((await db('certificates').where({ status: 'revoked' }).count({ n: 'serial' }))[0]!.n);
    if (revoked !== MILLION + TODAY_LOT) throw new Error(`${revoked} certificates revoked, expected ${MILLION + TODAY_LOT}`);
    await svc.close();
    const base = {
      name: `one-transaction bulk revocation (before #29) of a ${TODAY_LOT.toLocaleString('en-US')}-certificate lot`,
      value: TODAY_LOT / todaySeconds,
    };
    return [
      result(base.name, 'certificates/s', base.value, base, `${label}; ${todaySeconds.toFixed(2)} s`),
      result(
        `chunked bulk revocation of a ${MILLION.toLocaleString('en-US')}-certificate lot, one request`,
        'certificates/s',
        MILLION / seconds,
        base,
        `${label}; ${seconds.toFixed(1)} s, ${run.chunks} chunks, including devices, audit, OCSP and CRLs per chunk`,
      ),
    ];
  } finally {
    await drop();
  }
}
