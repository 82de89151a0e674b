/**
 * A million devices: the same figures on a store of 1,000 devices and then, in the same run and
 * the same database, on a store of 1,000,000 devices and their certificates, seeded set-based
 * (generate_series, as bench/revocation.ts does). What should not grow with the fleet (a page of
 * the device list, one device, one OCSP answer, one enrollment) is compared as it is; what must
 * (the posture report, backup and restore, the database) per device or per row.
 */
import 'reflect-metadata';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { AuditLog } from '../src/audit/audit-log.js';
import { deriveKey, parseKek } from '../src/ca/kek.js';
import { encodeOcspRequest } from '../src/ca/x509/ocsp-request.js';
import { keyTypeLabel, spkiOfCertificate } from '../src/ca/x509/spki.js';
import { encodeCertId, nameHash, publicKeyHash } from '../src/ca/x509/ocsp-response.js';
import { listen, type Service } from '../src/main.js';
import { restoreBackup } from '../src/respond/backups.js';
import { systemClock } from '../src/shared/clock.js';
import { timeIdCursor } from '../src/shared/page.js';
import { AuditStore } from '../src/store/audit-store.js';
import { BackupStore } from '../src/store/backup-store.js';
import type { Db } from '../src/store/db.js';
import { csrBody } from './enrollment.js';
import { result, type BenchResult } from './lib.js';
import { benchService, freshDatabase, NO_RATE_LIMITS, steadyState } from './db.js';
import { bestOf, checked, requestFile, wrk, type WrkOptions, type WrkRequest, type WrkResult } from './wrk.js';

const SMALL = 1_000;
/** BENCH_FLEET_DEVICES: a smaller fleet for a quick look; the page's figures are at a million. */
const LARGE = Number(process.env.BENCH_FLEET_DEVICES ?? 1_000_000);
export const LOTS = 20;
/** Devices seeded per statement: one generate_series of a million rows holds one transaction for minutes. */
const SEED_CHUNK = 250_000;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
/** Each HTTP read figure is the fastest of this many windows (this machine's neighbours come and go). */
const ROUNDS = 3;
/** Few connections: the figures are latencies of one request, not of a queue on two cores. */
const CONNECTIONS = 8;
const ENROLL_CONNECTIONS = 32;
const ENROLL_WARMUP_DEVICES = 6_000;
const ENROLL_DEVICES = 12_000;
const ENROLL_SECONDS = 4;
const OCSP_SERIALS = 5_000;
const GET_IDS = 2_000;
/** The device list's pages: full on both stores (see where they are measured). */
const LIST_STATUS = 'active';
const LIST_PAGE = 30;

export const description =
  `A fleet of ${LARGE.toLocaleString('en-US')} devices against one of ${SMALL.toLocaleString('en-US')}, in the same run and the same ` +
  `PostgreSQL database: the small store is seeded and measured, then grown to the large one and measured again. Seeded set-based ` +
  `(generate_series), each seeding followed by VACUUM (ANALYZE) and a CHECKPOINT, as is the backup and restore before the enrollment figure ` +
  `(so that no figure is taken in the autovacuum or the checkpoint of a bulk write): ${LOTS} production lots; 8% of devices revoked (their certificates revoked), 3% suspended, 3% registered ` +
  `without a certificate, the rest active; 5% of certificates past their notAfter; model, firmware, site and labels on every device; ` +
  `every certificate real DER (an issued P-256 certificate, its last 32 bytes made distinct per row). Over HTTP (the service in this ` +
  `process, wrk unpinned beside it, ${CONNECTIONS} connections, 1 s of warm-up, then the fastest of ${ROUNDS} ${SECONDS}-second windows; on the small store, in a fresh process, each load runs once uncounted first): GET /v1/devices?lot=&status=${LIST_STATUS}&limit=${LIST_PAGE} (full pages on both stores: a small-store lot has only 43 active devices), ` +
  `first pages and pages 90% deep by cursor; GET /v1/devices/{id} on ${GET_IDS.toLocaleString('en-US')} random devices; POST /pki/ocsp ` +
  `for up to ${OCSP_SERIALS.toLocaleString('en-US')} random certificates with the in-memory cache held to one entry (every answer ` +
  `read from PostgreSQL, after a first poll that signed and stored them); GET /v1/posture?fresh=true once (the fleet counted, not a count reused); POST /v1/enroll as bench/enrollment.ts ` +
  `(${ENROLL_CONNECTIONS} connections, a lot token, a distinct CSR per device, one ${ENROLL_SECONDS}-second round after 2 s of warm-up); rate limits off. Then a backup ` +
  `(Backups.create) and its restore into a fresh database, and pg_database_size. Baselines: the same figure on the ` +
  `${SMALL.toLocaleString('en-US')}-device store.`;

interface Figures {
  devices: number;
  listFirst: WrkResult;
  listDeep: WrkResult;
  get: WrkResult;
  ocspFirstPoll: number;
  ocsp: WrkResult;
  postureS: number;
  postureCerts: number;
  backupS: number;
  restoreS: number;
  backupRows: number;
  backupBytes: number;
  dbBytes: number;
  enroll: WrkResult;
}

/**
 * Devices `from`..`to` (1-based) of the fleet, and a certificate for each one that is not
 * `registered`. The 1-based index decides everything, so the small store is the first 1,000 devices of the large one.
 */
export async function seedFleet(db: Db, caId: string, der: Buffer, base: Date, from: number, to: number): Promise<void> {
  // Recorded as issuance records it (migration 0029): the sample's key, which every seeded certificate shares.
  const keyType = keyTypeLabel(spkiOfCertificate(der));
  for (let lo = from; lo <= to; lo += SEED_CHUNK) {
    const hi = Math.min(to, lo + SEED_CHUNK - 1);
    // status by (i / LOTS) % 100, lot by i % LOTS: every lot has every status in the same shares.
    await db.raw(
      `insert into devices (id, kind, model, hardware_revision, firmware_version, site, lot, status, labels, current_serial, current_not_after,
                            created_at, updated_at, activated_at, suspended_at, revoked_at)
       select 'meter-' || lpad(i::text, 7, '0'), 'client', 'M' || (i % 3), 'r' || (i % 2), '1.' || (i % 5), 'site-' || (i % 100),
              'LOT-' || lpad((i % ${LOTS})::text, 2, '0'), s.status,
              jsonb_build_object('region', 'r' || (i % 7), 'batch', (i / 1000)::text),
              case when s.status <> 'registered' then decode(md5('fleet' || i), 'hex') end,
              case when s.status <> 'registered' then c.not_after end,
              c.created, c.created, case when s.status <> 'registered' then c.created end,
              case when s.status = 'suspended' then c.created end, case when s.status = 'revoked' then c.created end
         from generate_series(?::int, ?::int) as i,
              lateral (select case when (i / ${LOTS}) % 100 < 8 then 'revoked' when (i / ${LOTS}) % 100 < 11 then 'suspended'
                                   when (i / ${LOTS}) % 100 < 14 then 'registered' else 'active' end as status) s,
              lateral (select ?::timestamptz + i * interval '1 millisecond' as created,
                              case when (i / 7) % 20 = 0 then now() - interval '10 days' else now() + interval '355 days' end as not_after) c`,
      [lo, hi, base],
    );
    await db.raw(
      `insert into certificates (serial, ca_id, profile, status, subject_cn, device_id, der, spki_sha256, key_type, not_before, not_after,
                                 created_at, issued_at, revoked_at, revocation_reason, revocation_seq, expired_at)
       select d.current_serial, ?, 'device', case when d.status = 'revoked' then 'revoked' else 'issued' end, d.id, d.id,
              overlay(?::bytea placing decode(md5('a' || d.id) || md5('b' || d.id), 'hex') from length(?::bytea) - 31),
              sha256(d.id::bytea), ?, d.current_not_after - interval '365 days', d.current_not_after, d.created_at, d.created_at,
              d.revoked_at, case when d.status = 'revoked' then 'keyCompromise' end,
              case when d.status = 'revoked' then nextval('fleet_revocation_seq') end,
              case when d.current_not_after < now() then d.current_not_after end
         from devices d
        where d.id between 'meter-' || lpad(?::text, 7, '0') and 'meter-' || lpad(?::text, 7, '0') and d.current_serial is not null`,
      [caId, der, der, keyType, lo, hi],
    );
  }
  await db.raw(`update revocation_epoch set seq = (select coalesce(max(revocation_seq), 0) from certificates)`);
  await db.raw('analyze');
}

async function deviceCount(db: Db): Promise<number> {
  return Number((await db('devices').count({ n: '*' }))[0]!.n);
}

async function fetchJson(port: number, path: string, key: string): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { Authorization: `Bearer ${key}` } });
  if (res.status !== 200) throw new Error(`GET ${path}: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

export async function run(): Promise<BenchResult[]> {
  const store = await freshDatabase(16);
  const dir = mkdtempSync(join(tmpdir(), 'mqttca-bench-fleet-'));
  let svc: Service | undefined;
  let server: Awaited<ReturnType<typeof listen>> | undefined;
  try {
    const started = await benchService(store.db, { dataDir: dir, env: { PORT: '0', ...NO_RATE_LIMITS, OCSP_CACHE_ENTRIES: '1' } });
    svc = started.svc;
    const s = started.svc;
    const issuingId = started.issuingId;
    const ctx = { actor: 'bench' };
    const key = (await s.apiKeys.create({ name: 'fleet bench', role: 'operator' }, ctx)).key;
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    const der = (await s.issuance.issue({ profile: 'device', deviceId: 'fleet-sample', subjectPublicKeyInfo: spki }, ctx)).der;
    await store.db.raw('create sequence fleet_revocation_seq');
    const issuer = await s.hierarchy.issuer(issuingId);
    const ocspRequest = (serial: Buffer) =>
      encodeOcspRequest([
        encodeCertId({
          hashAlgorithm: 'sha1',
          issuerNameHash: nameHash(issuer.subjectDer, 'sha1'),
          issuerKeyHash: publicKeyHash(issuer.signer.publicKey, 'sha1'),
          serial,
        }),
      ]);
    server = await listen(s);
    const port = (server.address() as { port: number }).port;
    const auth = [`Authorization: Bearer ${key}`];
    const load = (o: Partial<WrkOptions> & { file: string }) =>
      wrk({ port, method: 'GET', connections: CONNECTIONS, seconds: SECONDS, warmup: 1, pinned: false, headers: auth, ...o });
    const get = async (name: string, requests: WrkRequest[], extra: Partial<WrkOptions> = {}) => {
      const file = requestFile(dir, name, requests);
      await load({ file, ...extra, seconds: 1, warmup: 0 });
      return bestOf(ROUNDS, () => load({ file, warmup: 0, ...extra }));
    };
    const base = new Date(Math.floor(Date.now() / 1000) * 1000 - 30 * 86_400_000);

    const measure = async (label: string, fresh: boolean): Promise<Figures> => {
      const devices = await deviceCount(store.db);
      console.log(`  ${label}: ${devices.toLocaleString('en-US')} devices`);
      // A fresh process (its JIT, pool and PostgreSQL backends) ran each HTTP read slower than later on: in a fresh
      // process each of them runs once, uncounted, before it is measured.
      const settled = async (f: () => Promise<WrkResult>) => {
        if (fresh) await f();
        return f();
      };
      // ---- the device list: full pages of every lot, first and 90% deep -------------------------------
      // Pages of the same size on both stores, or the figure compares unlike work: on the small store a lot
      // holds 50 devices, 36 of them active (the first 1,000 devices take the revoked, suspended and registered shares first), so only active pages of
      // LIST_PAGE are full there; a deep page starts 90% in, or LIST_PAGE from the end when that is sooner.
      const first: WrkRequest[] = [];
      const deep: WrkRequest[] = [];
      for (let lot = 0; lot < LOTS; lot++) {
        const l = `LOT-${String(lot).padStart(2, '0')}`;
        const path = `/v1/devices?lot=${l}&status=${LIST_STATUS}&limit=${LIST_PAGE}`;
        first.push({ path });
        const r = await store.db.raw(
          `select created_at, id from devices where lot = ? and status = ? order by created_at desc, id desc
            offset (select least(count(*) * 9 / 10, count(*) - ? - 1)::int from devices where lot = ? and status = ?) limit 1`,
          [l, LIST_STATUS, LIST_PAGE, l, LIST_STATUS],
        );
        const row = (r.rows as { created_at: Date; id: string }[])[0];
        if (row) deep.push({ path: `${path}&cursor=${timeIdCursor(new Date(row.created_at), row.id)}` });
      }
      for (const probe of [first[0]!, deep[0]!]) {
        const page = (await fetchJson(port, probe.path, key)) as { items: unknown[] };
        if (page.items.length !== LIST_PAGE) throw new Error(`${probe.path} answered ${page.items.length} devices, not a full page`);
      }
      const listFirst = checked('list first pages', await settled(() => get('list-first', first)));
      const listDeep = checked('list deep pages', await settled(() => get('list-deep', deep)));

      // ---- one device ------------------------------------------------------------------------------
      const ids = (await store.db.raw(`select id from devices where id like 'meter-%' order by random() limit ?`, [GET_IDS])).rows as {
        id: string;
      }[];
      const one = checked(
        'GET device',
        await settled(() =>
          get(
            'get',
            ids.map((r) => ({ path: `/v1/devices/${r.id}` })),
          ),
        ),
      );

      // ---- OCSP outside the in-memory cache ----------------------------------------------------------
      const serials = (
        (
          await store.db.raw(
            `select serial from certificates where profile = 'device' and status in ('issued', 'revoked') order by random() limit ?`,
            [OCSP_SERIALS],
          )
        ).rows as {
          serial: Uint8Array;
        }[]
      ).map((r) => Buffer.from(r.serial));
      const bodies = serials.map(ocspRequest);
      // The first poll signs and stores each answer; then every answer comes from PostgreSQL.
      let next = 0;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: CONNECTIONS }, async () => {
          while (next < bodies.length) {
            const a = await s.ocsp.respond(bodies[next++]!);
            if (a.error) throw new Error(`OCSP first poll: ${a.error}`);
          }
        }),
      );
      const ocspFirstPoll = bodies.length / ((performance.now() - t0) / 1000);
      const ocsp = checked(
        'OCSP',
        await settled(() =>
          get(
            'ocsp',
            bodies.map((body) => ({ path: '/pki/ocsp', body })),
            { method: 'POST', contentType: 'application/ocsp-request', headers: [] },
          ),
        ),
      );

      // ---- the posture report ------------------------------------------------------------------------
      const t1 = performance.now();
      const posture = (await fetchJson(port, '/v1/posture?fresh=true', key)) as {
        figures: { crypto: { certificatesByKey: Record<string, number> } };
      };
      const postureS = (performance.now() - t1) / 1000;
      const postureCerts = Object.values(posture.figures.crypto.certificatesByKey).reduce((a, b) => a + b, 0);
      const valid = Number(
        (
          (await store.db.raw(`select count(*) as n from certificates where status = 'issued' and profile <> 'ca' and not_after > now()`))
            .rows as { n: string }[]
        )[0]!.n,
      );
      if (postureCerts !== valid) throw new Error(`the posture report counted ${postureCerts} certificates, the store has ${valid} valid`);

      // ---- backup, and restore into a fresh database -------------------------------------------------
      const t2 = performance.now();
      const b = await s.backups.create(ctx);
      const backupS = (performance.now() - t2) / 1000;
      const backupRows = Object.values(b.rowCounts).reduce((n, x) => n + x, 0);
      const target = await freshDatabase();
      let restoreS: number;
      try {
        await target.db.raw('drop schema public cascade');
        await target.db.raw('create schema public');
        const kek = parseKek(started.env.MQTT_CA_KEK!, 'bench');
        const audit = new AuditLog(new AuditStore(target.db), deriveKey(kek, 'audit chain'), systemClock);
        const t3 = performance.now();
        await restoreBackup(
          { db: target.db, store: new BackupStore(), kek, audit, clock: systemClock },
          join(s.backups.dir, b.fileName),
          ctx,
        );
        restoreS = (performance.now() - t3) / 1000;
        const restored = await deviceCount(target.db);
        if (restored !== b.rowCounts.devices) throw new Error(`restored ${restored} devices, the backup has ${b.rowCounts.devices}`);
      } finally {
        await target.drop();
      }
      rmSync(join(s.backups.dir, b.fileName), { force: true });
      const dbBytes = Number(((await store.db.raw('select pg_database_size(current_database()) as n')).rows as { n: string }[])[0]!.n);

      // ---- enrollment, last: it adds devices of its own -----------------------------------------------
      // Not in the aftermath of the backup and restore (pages dirtied, a vacuum due).
      await steadyState(store.db);
      const lot = `ENROLL-${devices}`;
      const enrollIds = Array.from(
        { length: ENROLL_WARMUP_DEVICES + ENROLL_DEVICES },
        (_, i) => `enroll-${devices}-${String(i).padStart(6, '0')}`,
      );
      for (let i = 0; i < enrollIds.length; i += 20_000)
        await s.devices.importManifest(
          enrollIds.slice(i, i + 20_000).map((id) => ({ id, kind: 'client' as const })),
          ctx,
          { lot },
        );
      const token = await s.tokens.create({ lot, maxUses: enrollIds.length }, ctx);
      const enrollFile = (name: string, from: number, to: number) =>
        requestFile(
          dir,
          name,
          enrollIds.slice(from, to).map((id) => ({ path: '/v1/enroll', body: csrBody(id) })),
        );
      const post = {
        method: 'POST' as const,
        contentType: 'application/json',
        headers: [`Authorization: Bearer ${token.token}`],
        connections: ENROLL_CONNECTIONS,
        warmup: 0,
      };
      checked(
        'enrollment warm-up',
        await load({ ...post, file: enrollFile('enroll-warmup', 0, ENROLL_WARMUP_DEVICES), seconds: 2 }),
        ENROLL_WARMUP_DEVICES,
      );
      const enroll = checked(
        'enrollment',
        await load({ ...post, file: enrollFile('enroll', ENROLL_WARMUP_DEVICES, enrollIds.length), seconds: ENROLL_SECONDS }),
        ENROLL_DEVICES,
      );
      // wrk leaves with enrollments still in the service: let them finish before the store grows or closes.
      for (let i = 0; i < 200; i++) {
        const pending = Number((await store.db('certificates').where({ status: 'pending' }).count({ n: '*' }))[0]!.n);
        if (pending === 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }

      return {
        devices,
        listFirst,
        listDeep,
        get: one,
        ocspFirstPoll,
        ocsp,
        postureS,
        postureCerts,
        backupS,
        restoreS,
        backupRows,
        backupBytes: b.sizeBytes,
        dbBytes,
        enroll,
      };
    };

    await seedFleet(store.db, issuingId, der, base, 1, SMALL);
    await steadyState(store.db);
    const small = await measure('small store', true);
    let t = performance.now();
    await seedFleet(store.db, issuingId, der, base, SMALL + 1, LARGE);
    const seedS = (performance.now() - t) / 1000;
    await steadyState(store.db);
    t = performance.now();
    const large = await measure('large store', false);
    const measureS = (performance.now() - t) / 1000;

    const n = (x: number) => x.toLocaleString('en-US');
    const at = (f: Figures) => `${n(f.devices)} devices`;
    const lat = (what: string, pick: (f: Figures) => WrkResult, extra = '') => {
      const b = { name: `${what}, p99, ${at(small)}`, value: pick(small).p99 };
      return [
        result(
          `${what}, p99, ${at(large)}`,
          'ms',
          pick(large).p99,
          b,
          `p50 ${pick(large).p50.toFixed(1)} ms (${pick(small).p50.toFixed(1)} ms small)${extra}`,
        ),
        result(
          `${what}, throughput, ${at(large)}`,
          'requests/s',
          pick(large).rps,
          { name: `the same, ${at(small)}`, value: pick(small).rps },
          `${CONNECTIONS} connections`,
        ),
      ];
    };
    const mib = (x: number) => `${(x / 2 ** 20).toFixed(1)} MiB`;
    return [
      ...lat(`GET /v1/devices?lot=&status=${LIST_STATUS}&limit=${LIST_PAGE}, first pages`, (f) => f.listFirst),
      ...lat(`GET /v1/devices?lot=&status=${LIST_STATUS}&limit=${LIST_PAGE}, full pages 90% deep by cursor`, (f) => f.listDeep),
      ...lat('GET /v1/devices/{id}', (f) => f.get),
      ...lat('POST /pki/ocsp, uncached serials (answer stored in PostgreSQL)', (f) => f.ocsp),
      result(
        `OCSP first poll (sign and store), ${at(large)}`,
        'responses/s',
        large.ocspFirstPoll,
        { name: `the same, ${at(small)}`, value: small.ocspFirstPoll },
        `in process, ${CONNECTIONS} in flight`,
      ),
      result(
        `POST /v1/enroll, ${at(large)}`,
        'enrollments/s',
        large.enroll.rps,
        { name: `the same, ${at(small)}`, value: small.enroll.rps },
        `p99 ${large.enroll.p99.toFixed(1)} ms (${small.enroll.p99.toFixed(1)} ms small); ${ENROLL_CONNECTIONS} connections`,
      ),
      result(
        `GET /v1/posture, ${at(large)}`,
        'certificates/s',
        large.postureCerts / large.postureS,
        { name: `the same, ${at(small)}`, value: small.postureCerts / small.postureS },
        `${large.postureS.toFixed(2)} s for ${n(large.postureCerts)} certificates (${(small.postureS * 1000).toFixed(0)} ms for ${n(small.postureCerts)})`,
      ),
      result(
        `backup (Backups.create), ${at(large)}`,
        'rows/s',
        large.backupRows / large.backupS,
        { name: `the same, ${at(small)}`, value: small.backupRows / small.backupS },
        `${large.backupS.toFixed(1)} s, ${n(large.backupRows)} rows, file ${mib(large.backupBytes)} (${small.backupS.toFixed(2)} s, ${n(small.backupRows)} rows small)`,
      ),
      result(
        `restore into a fresh database, ${at(large)}`,
        'rows/s',
        large.backupRows / large.restoreS,
        { name: `the same, ${at(small)}`, value: small.backupRows / small.restoreS },
        `${large.restoreS.toFixed(1)} s (${small.restoreS.toFixed(2)} s small)`,
      ),
      result(
        `database size (pg_database_size), ${at(large)}`,
        'MiB',
        large.dbBytes / 2 ** 20,
        { name: `the same, ${at(small)}`, value: small.dbBytes / 2 ** 20 },
        `${n(Math.round((large.dbBytes - small.dbBytes) / (large.devices - small.devices)))} bytes per device added (device, certificate, indexes)`,
      ),
      result(
        `seeding ${n(LARGE - SMALL)} devices and their certificates`,
        's',
        seedS,
        { name: `measuring every figure at ${at(large)}`, value: measureS },
        `${store.label}; generate_series, ${n(SEED_CHUNK)} devices a statement, then analyze`,
      ),
    ];
  } finally {
    if (server) {
      server.close();
      server.closeAllConnections();
    }
    await svc?.close();
    await store.drop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const r of await run())
    console.log(
      `${r.name}: ${r.value.toFixed(1)} ${r.unit} (ratio ${r.ratio.toFixed(3)} to ${r.baselineName})${r.note ? ` — ${r.note}` : ''}`,
    );
}
