import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import request from 'supertest';
import { postgresTarget } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import { Revocations, type BulkRunSettings, type RevocationChange, type RevocationListener } from '../../src/revoke/revocation.js';
import { CertificateStore } from '../../src/store/certificate-store.js';
import { BulkRevocationStore } from '../../src/store/bulk-revocation-store.js';
import { systemClock } from '../../src/shared/clock.js';

const p256Spki = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
const CHUNK = 100;

class Crash extends Error {}

// Chunked bulk revocations (#29 item 2), on real PostgreSQL: chunks of 100 here (BULK_REVOKE_CHUNK_SIZE).
describe(`chunked bulk revocations on ${postgresTarget.name}`, { skip: postgresTarget.skip }, () => {
  let svc: Service & { dispose(): Promise<void> };
  let api: ReturnType<typeof request>;
  let keys: Record<Role, string>;
  before(async () => {
    ({ svc, api, keys } = await makeApiService(postgresTarget, {
      env: { BULK_REVOKE_APPROVAL_THRESHOLD: '0', BULK_REVOKE_CHUNK_SIZE: String(CHUNK) },
    }));
  });
  after(async () => svc?.dispose());

  const ctx = { actor: 'test' };
  const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
  const issueLot = async (lot: string, n: number) => {
    const ids = Array.from({ length: n }, (_, i) => `${lot.toLowerCase()}-${String(i).padStart(4, '0')}`);
    await svc.devices.importManifest(
      ids.map((id) => ({ id, kind: 'client' as const })),
      ctx,
      { lot },
    );
    const issued = await svc.issuance.issueBatch(
      ids.map((deviceId) => ({ profile: 'device' as const, deviceId, subjectPublicKeyInfo: p256Spki() })),
      ctx,
    );
    return issued.map((c) => c.serial);
  };
  const statuses = async (serials: string[]) =>
    (
      await svc
        .db('certificates')
        .whereIn(
          'serial',
          serials.map((x) => Buffer.from(x, 'hex')),
        )
        .select('status')
    ).map((r: { status: string }) => r.status);
  /** How many times each of `serials` was audited as revoked. */
  const revokedTimes = async (serials: string[]) => {
    const rows = await svc
      .db('audit_log')
      .where({ action: 'certificate.revoked' })
      .whereIn('target_id', serials)
      .groupBy('target_id')
      .select('target_id', svc.db.raw('count(*)::int as n'));
    return new Map(rows.map((r: { target_id: string; n: number }) => [r.target_id, r.n]));
  };
  /** A second Revocations on the same database, as another process would have, with its own lease name and test hook. */
  const processWith = (owner: string, leaseMs: number, afterChunk?: BulkRunSettings['afterChunk'], also: RevocationListener[] = []) =>
    new Revocations(
      svc.db,
      new CertificateStore(),
      svc.devices,
      svc.audit,
      systemClock,
      [svc.ocsp, svc.crls, svc.sessionKeys, ...also],
      undefined,
      undefined,
      {
        store: new BulkRevocationStore(),
        chunkSize: CHUNK,
        leaseMs,
        owner,
        ...(afterChunk ? { afterChunk } : {}),
      },
    );

  it('revokes a multi-chunk selection exactly, in one request, with its progress readable and one summary entry', async () => {
    const lot = await issueLot('RUN-A', 450);
    const other = await issueLot('RUN-B', 5);
    const dry = (
      await api
        .post('/v1/revocations')
        .set(auth('operator'))
        .send({ selector: { lot: 'RUN-A' }, reason: 'superseded', dryRun: true })
        .expect(200)
    ).body;
    // A dry run is as before: no run recorded.
    assert.deepEqual([dry.dryRun, dry.revoked, dry.alreadyRevoked, dry.id], [true, 450, 0, undefined]);
    assert.equal(Number((await svc.db('bulk_revocations').count({ n: 'id' }))[0]!.n), 0);

    const done = (
      await api
        .post('/v1/revocations')
        .set(auth('operator'))
        .send({ selector: { lot: 'RUN-A' }, reason: 'superseded' })
        .expect(200)
    ).body;
    assert.deepEqual([done.dryRun, done.revoked, done.alreadyRevoked, done.truncated], [false, 450, 0, false]);
    assert.deepEqual(done.serials, [...lot].sort());
    assert.match(done.id, /^rvk_/);
    assert.deepEqual(new Set(await statuses(lot)), new Set(['revoked']));
    assert.deepEqual(new Set(await statuses(other)), new Set(['issued']));
    const times = await revokedTimes(lot);
    assert.equal(times.size, 450);
    assert.ok([...times.values()].every((n) => n === 1));

    const run = (await api.get(`/v1/revocations/${done.id}`).set(auth('operator')).expect(200)).body;
    assert.deepEqual(
      [run.status, run.matched, run.revoked, run.alreadyRevoked, run.chunks, run.lastSerial],
      ['done', 450, 450, 0, 5, run.lastSerial],
    );
    // The last serial of the last chunk: one of the lot's (chunks go in table order, not serial order).
    assert.ok(lot.includes(run.lastSerial));
    // The frozen selection is used up chunk by chunk.
    assert.equal(Number((await svc.db('bulk_revocation_serials').where({ run_id: done.id }).count({ n: 'serial' }))[0]!.n), 0);
    const summary = await svc.db('audit_log').where({ action: 'revocation.bulk-completed', target_id: done.id }).select('details');
    assert.equal(summary.length, 1);
    assert.equal((await svc.audit.verify(svc.db)).ok, true);

    // Small ones keep the single-transaction answer, without a run.
    const small = (
      await api
        .post('/v1/revocations')
        .set(auth('operator'))
        .send({ selector: { lot: 'RUN-B' }, reason: 'superseded' })
        .expect(200)
    ).body;
    assert.deepEqual([small.revoked, small.id], [5, undefined]);
  });

  it("tells the listeners, on each chunk's change but the last, that more chunks follow (the CRL publisher may defer its full rebuild)", async () => {
    for (const [lot, n, expected] of [
      ['HINT-A', 250, [true, true, false]],
      // An exact multiple: the last full chunk is the last one, not an empty one after it.
      ['HINT-B', 200, [true, false]],
    ] as const) {
      const serials = await issueLot(lot, n);
      const changes: RevocationChange[] = [];
      const published: number[] = [];
      const recorder: RevocationListener = {
        async onRevocationChanged(change) {
          changes.push(change);
          // Published before the next chunk starts: OCSP already answers revoked for every serial so far.
          published.push(
            Number(
              (await svc.db('certificates').whereIn('serial', change.serials).where({ status: 'revoked' }).count({ n: 'serial' }))[0]!.n,
            ),
          );
        },
      };
      const out = await processWith(`hint-${lot}`, 30_000, undefined, [recorder]).revokeMany(
        { selector: { lot }, reason: 'superseded' },
        ctx,
      );
      assert.equal(out.revoked, n);
      assert.deepEqual(
        changes.map((c) => c.moreToCome === true),
        expected,
      );
      assert.deepEqual(
        changes.map((c) => c.serials.length),
        published,
      );
      assert.equal(
        changes.reduce((k, c) => k + c.serials.length, 0),
        serials.length,
      );
    }
    // Whatever the hints deferred, the full CRL catches up with the run once it ended.
    await svc.crls.settled();
    const caId = (
      await svc
        .db('certificates')
        .where({ serial: Buffer.from((await issueLot('HINT-C', 1))[0]!, 'hex') })
        .first('ca_id')
    ).ca_id as string;
    const full = (await svc.crls.current(caId))!;
    const revoked = Number((await svc.db('certificates').where({ ca_id: caId, status: 'revoked' }).count({ n: 'serial' }))[0]!.n);
    assert.equal(full.entries, revoked);
  });

  it('resumes a run whose process died between chunks: every certificate revoked once, nothing issued meanwhile taken', async () => {
    const lot = await issueLot('RUN-C', 430);
    await svc.devices.importManifest([{ id: 'run-c-late', kind: 'client' }], ctx, { lot: 'RUN-C' });
    let late = '';
    // The first process issues a certificate into the lot after its first chunk, and dies after its second commits.
    const LEASE_MS = 3_000;
    const dying = processWith('dying', LEASE_MS, async (_id, chunk) => {
      if (chunk === 1)
        late = (await svc.issuance.issue({ profile: 'device', deviceId: 'run-c-late', subjectPublicKeyInfo: p256Spki() }, ctx)).serial;
      if (chunk === 2) throw new Crash('killed after chunk 2');
    });
    await assert.rejects(dying.revokeMany({ selector: { lot: 'RUN-C' }, reason: 'keyCompromise' }, ctx), Crash);
    const died = Date.now();
    // Another process does not take it while the dead one's lease holds.
    assert.deepEqual(await svc.revocations.resumeLapsed(), []);

    // Progress is readable while it is left running.
    const [row] = await svc.db('bulk_revocations').where({ lease_owner: 'dying' }).select('id');
    const id = (row as { id: string }).id;
    const mid = (await api.get(`/v1/revocations/${id}`).set(auth('admin')).expect(200)).body;
    assert.deepEqual([mid.status, mid.matched, mid.revoked, mid.chunks], ['running', 430, 200, 2]);
    assert.equal(Number((await svc.db('bulk_revocation_serials').where({ run_id: id }).count({ n: 'serial' }))[0]!.n), 230);
    assert.equal((await statuses(lot)).filter((s) => s === 'revoked').length, 200);

    // Once it lapsed, exactly one does.
    await new Promise((r) => setTimeout(r, Math.max(0, died + LEASE_MS + 100 - Date.now())));
    const resumer = processWith('resumer', 30_000);
    const resumed = await resumer.resumeLapsed();
    assert.deepEqual(
      resumed.map((r) => [r.id, r.status, r.revoked, r.chunks]),
      [[id, 'done', 430, 5]],
    );
    assert.deepEqual(await svc.revocations.resumeLapsed(), []);

    assert.deepEqual(new Set(await statuses(lot)), new Set(['revoked']));
    const times = await revokedTimes(lot);
    assert.equal(times.size, 430);
    assert.ok(
      [...times.values()].every((n) => n === 1),
      'no certificate revoked twice',
    );
    // Issued after the selection was frozen: not taken, though its device is in the lot.
    assert.deepEqual(await statuses([late]), ['issued']);
    assert.equal(
      Number((await svc.db('audit_log').where({ action: 'revocation.bulk-completed', target_id: id }).count({ n: 'seq' }))[0]!.n),
      1,
    );
    assert.equal((await svc.audit.verify(svc.db)).ok, true);
  });

  it('stops when another process took the run over, and answers that it did', async () => {
    const lot = await issueLot('RUN-F', 250);
    // Between chunks 1 and 2 the lease is taken by another process (as claimLapsed does once it lapsed).
    const slow = processWith('slow', 30_000, async (id, chunk) => {
      if (chunk === 1) await svc.db('bulk_revocations').where({ id }).update({ lease_owner: 'other' });
    });
    await assert.rejects(
      slow.revokeMany({ selector: { lot: 'RUN-F' }, reason: 'superseded' }, ctx),
      /taken over by another process after 100 certificates/,
    );
    assert.equal((await statuses(lot)).filter((s) => s === 'revoked').length, 100);
  });

  it('holds a multi-chunk revocation to atMost before anything changes', async () => {
    const lot = await issueLot('RUN-D', 250);
    await assert.rejects(
      svc.revocations.revokeMany({ selector: { lot: 'RUN-D' }, reason: 'superseded', atMost: 150 }, ctx),
      /more than 150/,
    );
    assert.deepEqual(new Set(await statuses(lot)), new Set(['issued']));
  });

  it("shows the runs an incident's revocation started in the incident, with their progress", async () => {
    const lot = await issueLot('RUN-E', 230);
    const inc = (
      await api
        .post('/v1/incidents')
        .set(auth('operator'))
        .send({ kind: 'device-compromise', title: 'lot E tampered', targets: { lots: ['RUN-E'] } })
        .expect(201)
    ).body as { id: string };
    const step = (
      await api.post(`/v1/incidents/${inc.id}/actions`).set(auth('operator')).send({ action: 'revoke-certificates' }).expect(201)
    ).body;
    assert.equal(step.status, 'succeeded');
    assert.equal(step.result.revoked, 230);
    assert.equal(step.result.revocations.length, 1);
    const shown = (await api.get(`/v1/incidents/${inc.id}`).set(auth('auditor')).expect(200)).body;
    assert.deepEqual(
      shown.revocations.map((r: { id: string; status: string; revoked: number; origin: string }) => [r.id, r.status, r.revoked, r.origin]),
      [[step.result.revocations[0], 'done', 230, `incident:${inc.id}`]],
    );
    assert.deepEqual(new Set(await statuses(lot)), new Set(['revoked']));
  });

  it('shows a run only to those who may revoke, and 404 for an unknown one', async () => {
    assertProblem(await api.get('/v1/revocations/rvk_00000000000000000000').set(auth('operator')), 404);
    assertProblem(await api.get('/v1/revocations/NOT-AN-ID').set(auth('operator')), 400);
    assertProblem(await api.get('/v1/revocations/rvk_00000000000000000000').set(auth('auditor')), 403);
    assertProblem(await api.get('/v1/revocations/rvk_00000000000000000000').set(auth('provisioner')), 403);
    assertProblem(await api.get('/v1/revocations/rvk_00000000000000000000'), 401);
  });
});
