import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';
import { csvField } from '../../src/shared/csv.js';

type Agent = ReturnType<typeof request>;
const ROLES: Role[] = ['admin', 'operator', 'provisioner', 'auditor'];

for (const target of dbTargets) {
  describe(`device inventory API on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    const keys = {} as Record<Role, string>;
    before(async () => {
      // Every response below is checked against openapi.yaml by the validator (a mismatch is a 500).
      const made = await makeApiService(target);
      ({ svc, api } = made);
      Object.assign(keys, made.keys);
    });
    after(async () => svc?.dispose());

    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });
    const count = async () => Number((await svc.db('devices').count({ n: 'id' }))[0]!.n);
    const csv = (rows: string[][]) => rows.map((r) => r.map(csvField).join(',')).join('\r\n') + '\r\n';

    it('registers a device and reads it back', async () => {
      const res = await api
        .post('/v1/devices')
        .set(auth('provisioner'))
        .send({ id: 'api-dev-1', kind: 'broker', model: 'GW-1', site: 'berlin', labels: { rack: 'r1' } })
        .expect(201);
      assert.equal(res.body.status, 'registered');
      assert.equal(res.body.kind, 'broker');
      assert.deepEqual(res.body.labels, { rack: 'r1' });
      // As registered, with its presence on the bus (none yet: never seen).
      assert.deepEqual((await api.get('/v1/devices/api-dev-1').set(auth('auditor')).expect(200)).body, { ...res.body, presence: [] });
      assertProblem(await api.post('/v1/devices').set(auth('admin')).send({ id: 'api-dev-1' }), 409);
      assertProblem(await api.get('/v1/devices/nobody').set(auth('auditor')), 404);
    });

    it('imports a CSV manifest with quoted commas and quotes, CRLF and a BOM', async () => {
      const body =
        '\uFEFF' +
        csv([
          ['id', 'kind', 'model', 'hardwareRevision', 'firmwareVersion', 'site', 'lot', 'labels.note'],
          ['csv-1', 'client', 'TH-200, outdoor', 'rev-B', '1.4.2', 'plant "north"', '', 'a,b'],
          ['csv-2', '', 'TH-200', '', '1.4.2', 'plant-south', 'OWN', ''],
        ]);
      const res = await api
        .post('/v1/devices/import')
        .query({ lot: 'LOT-CSV' })
        .set(auth('provisioner'))
        .type('text/csv')
        .send(body)
        .expect(201);
      assert.deepEqual(res.body, { imported: 2, lot: 'LOT-CSV' });
      const d1 = (await api.get('/v1/devices/csv-1').set(auth('operator')).expect(200)).body;
      assert.deepEqual(
        [d1.model, d1.site, d1.lot, d1.hardwareRevision, d1.labels],
        ['TH-200, outdoor', 'plant "north"', 'LOT-CSV', 'rev-B', { note: 'a,b' }],
      );
      const d2 = (await api.get('/v1/devices/csv-2').set(auth('operator')).expect(200)).body;
      assert.deepEqual([d2.kind, d2.lot, d2.hardwareRevision, d2.labels], ['client', 'OWN', null, {}]);
      // LF only, no BOM, snake_case header.
      await api
        .post('/v1/devices/import')
        .set(auth('admin'))
        .type('text/csv; charset=utf-8')
        .send('id,firmware_version\ncsv-3,9.9\n')
        .expect(201);
      assert.equal((await api.get('/v1/devices/csv-3').set(auth('admin'))).body.firmwareVersion, '9.9');
      const trail = (await api.get('/v1/audit').query({ targetType: 'device', targetId: 'csv-1' }).set(auth('auditor')).expect(200)).body
        .items;
      assert.deepEqual(
        trail.map((e: { action: string }) => e.action),
        ['device.registered'],
      );
    });

    it('imports JSON manifests: { lot, devices } and a bare array with ?lot=, 10,000 rows beyond BODY_LIMIT', async () => {
      const a = await api
        .post('/v1/devices/import')
        .set(auth('provisioner'))
        .send({
          lot: 'LOT-JSON',
          devices: [
            { id: 'json-1', model: 'M' },
            { id: 'json-2', kind: 'broker' },
          ],
        })
        .expect(201);
      assert.deepEqual(a.body, { imported: 2, lot: 'LOT-JSON' });
      const b = await api
        .post('/v1/devices/import')
        .query({ lot: 'LOT-ARR' })
        .set(auth('admin'))
        .send([{ id: 'json-3' }])
        .expect(201);
      assert.deepEqual(b.body, { imported: 1, lot: 'LOT-ARR' });
      const c = await api
        .post('/v1/devices/import')
        .set(auth('admin'))
        .send([
          { id: 'json-4', lot: 'X' },
          { id: 'json-5', lot: 'Y' },
        ])
        .expect(201);
      assert.deepEqual(c.body, { imported: 2, lot: null });

      const big = {
        lot: 'LOT-BIG',
        devices: Array.from({ length: 10_000 }, (_, i) => ({
          id: `big-${i}`,
          model: 'TH-200',
          firmwareVersion: '1.0.0',
          site: 'plant-north',
        })),
      };
      assert.ok(JSON.stringify(big).length > 64 * 1024, 'larger than BODY_LIMIT');
      const r = await api.post('/v1/devices/import').set(auth('provisioner')).send(big).expect(201);
      assert.deepEqual(r.body, { imported: 10_000, lot: 'LOT-BIG' });
      const page = await api.get('/v1/devices').query({ lot: 'LOT-BIG', limit: 500 }).set(auth('auditor')).expect(200);
      assert.equal(page.body.items.length, 500);
      assert.ok(page.body.nextCursor);
    });

    it('answers a bad manifest with 400 and its errors by row, and imports nothing', async () => {
      const before = await count();
      const res = await api
        .post('/v1/devices/import')
        .set(auth('provisioner'))
        .send({
          devices: [
            { id: 'bad-1' },
            { id: 'bad-1' },
            { id: 'no spaces' },
            { id: 'bad-4', kind: 'toaster', colour: 'red' },
            { id: 'csv-1' },
            7,
          ],
        });
      assertProblem(res, 400, /nothing was imported/);
      assert.deepEqual(
        res.body.errors.map((e: { row: number; id?: string; field?: string }) => [e.row, e.id ?? null, e.field ?? null]),
        [
          [2, 'bad-1', 'id'],
          [3, 'no spaces', 'id'],
          [4, 'bad-4', 'colour'],
          [4, 'bad-4', 'kind'],
          [5, 'csv-1', 'id'],
          [6, null, null],
        ],
      );
      for (const e of res.body.errors) assert.equal(typeof e.message, 'string');

      const fromCsv = await api
        .post('/v1/devices/import')
        .set(auth('provisioner'))
        .type('text/csv')
        .send('id,model\nc-ok,m\nc-short\nc-ok,dup\n"c-open,never closed\n');
      assertProblem(fromCsv, 400);
      assert.deepEqual(
        fromCsv.body.errors.map((e: { row: number }) => e.row),
        [2, 3, 4],
      );
      assert.equal(await count(), before);
      assertProblem(await api.get('/v1/devices/c-ok').set(auth('admin')), 404);
      // Each refused manifest is a security event, and in the audit log.
      const events = (await api.get('/v1/events').query({ kind: 'manifest.refused' }).set(auth('auditor')).expect(200)).body.items;
      assert.ok(events.length >= 2);
      assert.equal(events[1].details.rows, 6);
      assert.equal(
        (await api.get('/v1/audit').query({ action: 'security.manifest.refused' }).set(auth('auditor')).expect(200)).body.items.length,
        events.length,
      );
    });

    it('answers a dry run of an import with what it would register, the same errors as the import, and writes nothing', async () => {
      const auditCount = async () => Number((await svc.db('audit_log').count({ n: 'seq' }))[0]!.n);
      const refusedEvents = async () =>
        (await api.get('/v1/events').query({ kind: 'manifest.refused', limit: 500 }).set(auth('auditor')).expect(200)).body.items.length;
      const devicesBefore = await count();
      const auditBefore = await auditCount();
      const eventsBefore = await refusedEvents();

      const good = csv([
        ['id', 'model', 'site', 'labels.note'],
        ...Array.from({ length: 25 }, (_, i) => [`dry-${i}`, 'EM-3', i === 0 ? '<b>north</b>' : 'north', i === 1 ? 'a,b' : '']),
      ]);
      const dry = await api
        .post('/v1/devices/import')
        .query({ lot: 'LOT-DRY', dryRun: true })
        .set(auth('provisioner'))
        .type('text/csv')
        .send(good)
        .expect(200);
      assert.equal(dry.body.dryRun, true);
      assert.equal(dry.body.wouldImport, 25);
      assert.equal(dry.body.lot, 'LOT-DRY');
      assert.equal(dry.body.preview.length, 20, 'the first 20 rows');
      assert.deepEqual(dry.body.preview[0], {
        row: 1,
        id: 'dry-0',
        kind: 'client',
        model: 'EM-3',
        hardwareRevision: null,
        firmwareVersion: null,
        site: '<b>north</b>',
        lot: 'LOT-DRY',
        labels: {},
      });
      assert.deepEqual(dry.body.preview[1].labels, { note: 'a,b' });
      const json = await api
        .post('/v1/devices/import?dryRun=true')
        .set(auth('admin'))
        .send({
          lot: 'LOT-DRY-J',
          devices: [
            { id: 'dry-j1', kind: 'broker' },
            { id: 'dry-j2', lot: 'OWN' },
          ],
        })
        .expect(200);
      assert.deepEqual(
        json.body.preview.map((r: { id: string; kind: string; lot: string }) => [r.id, r.kind, r.lot]),
        [
          ['dry-j1', 'broker', 'LOT-DRY-J'],
          ['dry-j2', 'client', 'OWN'],
        ],
      );
      assert.equal(await count(), devicesBefore, 'a dry run registers nothing');
      assert.equal(await auditCount(), auditBefore, 'and audits nothing');
      assertProblem(await api.get('/v1/devices/dry-0').set(auth('auditor')), 404);

      // A bad manifest: the dry run's 400 is the import's, error for error; still nothing written.
      const bad = {
        devices: [
          { id: 'dry-b1' },
          { id: 'dry-b1' },
          { id: 'no spaces' },
          { id: 'dry-b4', kind: 'toaster', colour: 'red' },
          { id: 'csv-1' },
          7,
        ],
      };
      const badCsv = 'id,model\ndry-c1,m\ndry-c2\ndry-c1,dup\n"dry-open,never closed\n';
      for (const [type, body] of [
        ['application/json', bad],
        ['text/csv', badCsv],
      ] as const) {
        const dryBad = await api.post('/v1/devices/import').query({ dryRun: 'true' }).set(auth('provisioner')).type(type).send(body);
        assertProblem(dryBad, 400, /nothing was imported/);
        assert.ok(dryBad.body.errors.length >= 3);
        const real = await api.post('/v1/devices/import').set(auth('provisioner')).type(type).send(body);
        assertProblem(real, 400);
        assert.equal(dryBad.body.detail, real.body.detail);
        assert.deepEqual(dryBad.body.errors, real.body.errors);
      }
      // A manifest wrong as a whole is refused the same way too.
      assertProblem(
        await api.post('/v1/devices/import').query({ dryRun: true }).set(auth('provisioner')).type('text/csv').send('id,colour\nx,red\n'),
        400,
        /header/,
      );
      assertProblem(await api.post('/v1/devices/import').query({ dryRun: true }).set(auth('provisioner')).send([]), 400, /no devices/);
      assertProblem(
        await api
          .post('/v1/devices/import')
          .query({ dryRun: 'maybe' })
          .set(auth('provisioner'))
          .send([{ id: 'dry-x' }]),
        400,
      );
      assert.equal(await count(), devicesBefore);
      // Only the real imports' refusals are security events (two), not the dry runs'.
      assert.equal(await refusedEvents(), eventsBefore + 2);
      // Who may import may preview; nobody else.
      for (const role of ['operator', 'auditor'] as const) {
        assertProblem(
          await api
            .post('/v1/devices/import')
            .query({ dryRun: true })
            .set(auth(role))
            .send([{ id: 'dry-role' }]),
          403,
          new RegExp(role),
        );
      }
      assertProblem(
        await api
          .post('/v1/devices/import')
          .query({ dryRun: true })
          .send([{ id: 'dry-role' }]),
        401,
      );
      // The import after a clean preview registers what the preview showed.
      await api.post('/v1/devices/import').query({ lot: 'LOT-DRY' }).set(auth('provisioner')).type('text/csv').send(good).expect(201);
      assert.equal((await api.get('/v1/devices/dry-0').set(auth('auditor')).expect(200)).body.site, '<b>north</b>');
      assert.equal(await count(), devicesBefore + 25);
    });

    it('keeps each role inside its boundary, and refuses every route without a key', async () => {
      let n = 0;
      const cases: { name: string; send: (h: Record<string, string>) => request.Test; allowed: Role[]; ok: number }[] = [
        {
          name: 'POST /v1/devices',
          send: (h) =>
            api
              .post('/v1/devices')
              .set(h)
              .send({ id: `role-${++n}` }),
          allowed: ['admin', 'provisioner'],
          ok: 201,
        },
        {
          name: 'POST /v1/devices/import (JSON)',
          send: (h) =>
            api
              .post('/v1/devices/import')
              .set(h)
              .send([{ id: `role-${++n}` }]),
          allowed: ['admin', 'provisioner'],
          ok: 201,
        },
        {
          name: 'POST /v1/devices/import (CSV)',
          send: (h) => api.post('/v1/devices/import').set(h).type('text/csv').send(`id\nrole-${++n}\n`),
          allowed: ['admin', 'provisioner'],
          ok: 201,
        },
        { name: 'GET /v1/devices', send: (h) => api.get('/v1/devices').set(h), allowed: ROLES, ok: 200 },
        { name: 'GET /v1/devices/{id}', send: (h) => api.get('/v1/devices/api-dev-1').set(h), allowed: ROLES, ok: 200 },
        {
          name: 'PATCH /v1/devices/{id}',
          send: (h) =>
            api
              .patch('/v1/devices/api-dev-1')
              .set(h)
              .send({ site: `s-${++n}` }),
          allowed: ['admin', 'provisioner', 'operator'],
          ok: 200,
        },
        {
          name: 'POST /v1/devices/{id}/decommission',
          send: (h) => api.post('/v1/devices/json-5/decommission').set(h),
          allowed: ['admin', 'operator'],
          ok: 200,
        },
      ];
      for (const c of cases) {
        for (const role of ROLES) {
          const res = await c.send(auth(role));
          if (c.allowed.includes(role)) assert.equal(res.status, c.ok, `${c.name} as ${role}: ${res.text}`);
          else assertProblem(res, 403, new RegExp(role));
        }
        assertProblem(await c.send({}), 401);
        assertProblem(await c.send({ Authorization: 'Bearer mqca_nope_nope' }), 401);
      }
      // "import" names the import path (paths match without case), so it cannot be a device id in any case.
      for (const id of ['import', 'Import', 'IMPORT']) {
        assertProblem(await api.post('/v1/devices').set(auth('admin')).send({ id }), 400, /reserved/);
        assertProblem(await api.post('/v1/devices/import').set(auth('admin')).send([{ id }]), 400, /nothing was imported/);
      }
      assertProblem(await api.get('/v1/devices/import').set(auth('auditor')), 405);
      await api.post('/v1/devices').set(auth('admin')).send({ id: 'imports' }).expect(201);
      assert.equal((await api.get('/v1/devices/imports').set(auth('auditor')).expect(200)).body.id, 'imports');
    });

    it('filters and pages the list', async () => {
      await svc.db.transaction((tx) =>
        svc.devices.recordIssued(tx, 'json-1', { serial: randomBytes(16), notAfter: new Date('2026-03-01T00:00:00Z') }, { actor: 'test' }),
      );
      const ids = async (query: Record<string, string | number>) =>
        (
          await api
            .get('/v1/devices')
            .query({ limit: 500, ...query })
            .set(auth('auditor'))
            .expect(200)
        ).body.items
          .map((d: { id: string }) => d.id)
          .sort();
      assert.deepEqual(await ids({ lot: 'LOT-JSON' }), ['json-1', 'json-2']);
      assert.deepEqual(await ids({ lot: 'LOT-JSON', kind: 'broker' }), ['json-2']);
      assert.deepEqual(await ids({ lot: 'LOT-JSON', status: 'active' }), ['json-1']);
      assert.deepEqual(await ids({ lot: 'LOT-JSON', model: 'M' }), ['json-1']);
      assert.deepEqual(await ids({ lot: 'LOT-CSV', site: 'plant "north"' }), ['csv-1']);
      assert.deepEqual(await ids({ firmwareVersion: '9.9' }), ['csv-3']);
      assert.deepEqual(await ids({ expiringBefore: '2026-04-01T00:00:00Z' }), ['json-1']);
      assert.deepEqual(await ids({ status: 'decommissioned' }), ['json-5']);

      const all = new Set<string>();
      let cursor: string | undefined;
      let pages = 0;
      do {
        const res = await api
          .get('/v1/devices')
          .query({ lot: 'LOT-BIG', limit: 333, ...(cursor ? { cursor } : {}) })
          .set(auth('operator'))
          .expect(200);
        for (const d of res.body.items) {
          assert.ok(!all.has(d.id), `${d.id} twice`);
          all.add(d.id);
        }
        cursor = res.body.nextCursor ?? undefined;
        pages++;
      } while (cursor);
      assert.equal(all.size, 10_000);
      assert.equal(pages, Math.ceil(10_000 / 333));
    });

    it('patches descriptive fields and decommissions (terminal, idempotent)', async () => {
      const p = await api
        .patch('/v1/devices/json-2')
        .set(auth('operator'))
        .send({ model: 'GW-2', firmwareVersion: '5.1', labels: { zone: 'a' } })
        .expect(200);
      assert.deepEqual([p.body.model, p.body.firmwareVersion, p.body.labels], ['GW-2', '5.1', { zone: 'a' }]);
      const cleared = await api.patch('/v1/devices/json-2').set(auth('provisioner')).send({ model: null }).expect(200);
      assert.equal(cleared.body.model, null);
      const d = await api.post('/v1/devices/json-2/decommission').set(auth('operator')).expect(200);
      assert.equal(d.body.status, 'decommissioned');
      assert.ok(d.body.decommissionedAt);
      assert.deepEqual((await api.post('/v1/devices/json-2/decommission').set(auth('admin')).expect(200)).body, d.body);
      assertProblem(await api.patch('/v1/devices/json-2').set(auth('admin')).send({ model: 'again' }), 409);
      const trail = (await api.get('/v1/audit').query({ targetType: 'device', targetId: 'json-2' }).set(auth('auditor')).expect(200)).body
        .items;
      assert.deepEqual(
        trail.map((e: { action: string }) => e.action),
        ['device.decommissioned', 'device.updated', 'device.updated', 'device.registered'],
      );
      assert.deepEqual(trail[2].details.changed, ['model', 'firmwareVersion', 'labels']);
      assertProblem(await api.post('/v1/devices/nobody/decommission').set(auth('admin')), 404);
      assertProblem(await api.patch('/v1/devices/nobody').set(auth('admin')).send({ model: 'x' }), 404);
    });

    it('answers bad input with 4xx problem+json, never a 500', async () => {
      const h = auth('admin');
      const before = await count();
      // Unknown fields, bad ids, bad values.
      assertProblem(await api.post('/v1/devices').set(h).send({ id: 'x-1', colour: 'red' }), 400);
      assertProblem(await api.post('/v1/devices').set(h).send({ id: 'bad id' }), 400);
      assertProblem(
        await api
          .post('/v1/devices')
          .set(h)
          .send({ id: 'x'.repeat(65) }),
        400,
      );
      assertProblem(await api.post('/v1/devices').set(h).send({ id: 'x-2', kind: 'toaster' }), 400);
      assertProblem(
        await api
          .post('/v1/devices')
          .set(h)
          .send({ id: 'x-3', labels: { 'bad key': 'v' } }),
        400,
      );
      assertProblem(await api.post('/v1/devices').set(h).send({ id: 'x-4', model: 'tab\tinside' }), 400);
      assertProblem(await api.post('/v1/devices').set(h).send({}), 400);
      assertProblem(await api.post('/v1/devices').set(h).set('Content-Type', 'application/json').send('{"id": '), 400);
      assertProblem(await api.post('/v1/devices').set(h).set('Content-Type', 'text/plain').send('id=x'), 415);
      assertProblem(
        await api
          .post('/v1/devices')
          .set(h)
          .set('Content-Type', 'application/json')
          .send(JSON.stringify({ id: 'x-5', model: 'm'.repeat(70_000) })),
        413,
      );
      assertProblem(await api.patch('/v1/devices/api-dev-1').set(h).send({ lot: 'x' }), 400);
      assertProblem(await api.patch('/v1/devices/api-dev-1').set(h).send({ kind: 'client' }), 400);
      assertProblem(await api.patch('/v1/devices/api-dev-1').set(h).send({}), 400);
      assertProblem(await api.get('/v1/devices/bad%20id').set(h), 400);
      assertProblem(await api.get(`/v1/devices/${'x'.repeat(65)}`).set(h), 400);
      // List queries.
      assertProblem(await api.get('/v1/devices').query({ status: 'lost' }).set(h), 400);
      assertProblem(await api.get('/v1/devices').query({ kind: 'toaster' }).set(h), 400);
      assertProblem(await api.get('/v1/devices').query({ limit: 100000 }).set(h), 400);
      assertProblem(await api.get('/v1/devices').query({ limit: 0 }).set(h), 400);
      assertProblem(await api.get('/v1/devices').query({ cursor: 'garbage' }).set(h), 400);
      assertProblem(await api.get('/v1/devices').query({ expiringBefore: 'tomorrow' }).set(h), 400);
      assertProblem(await api.get('/v1/devices').query({ colour: 'red' }).set(h), 400);
      // Manifests.
      const imp = () => api.post('/v1/devices/import').set(h);
      assertProblem(await imp().type('text/csv').send(''), 400);
      assertProblem(await imp().type('text/csv').send('\u0000\u0001\u0002garbage"\xff'), 400);
      assertProblem(await imp().type('text/csv').send('model,site\nm,s\n'), 400, /header/);
      assertProblem(await imp().type('text/csv').send('id\n'), 400, /no devices/);
      assertProblem(await imp().type('text/csv; charset=klingon').send('id\nx\n'), 415);
      assertProblem(await imp().type('text/plain').send('id\nx\n'), 415);
      assertProblem(await imp().set('Content-Type', 'application/json').send('[{"id": "x"'), 400);
      assertProblem(await imp().send({ devices: [{ id: 'x-6' }], extra: 1 }), 400);
      assertProblem(await imp().send({ lot: 'A', devices: 'nope' }), 400);
      assertProblem(await imp().send({ lot: 'A', devices: [] }), 400);
      assertProblem(await imp().send('"just a string"').set('Content-Type', 'application/json'), 400);
      assertProblem(
        await imp()
          .query({ lot: 'B' })
          .send({ lot: 'A', devices: [{ id: 'x-7' }] }),
        400,
        /differ/,
      );
      assertProblem(
        await imp()
          .query({ lot: '' })
          .send([{ id: 'x-8' }]),
        400,
      );
      const huge = 'id,model\n' + `${'y'.repeat(60)},${'m'.repeat(60)}\n`.repeat(90_000);
      assert.ok(huge.length > 5 * 1024 * 1024);
      assertProblem(await imp().type('text/csv').send(huge), 413);
      assertProblem(await imp().send([{ id: 'x-9', model: 'm'.repeat(6 * 1024 * 1024) }]), 413);
      // Without a key, nothing is read: 401, not 413.
      assertProblem(await api.post('/v1/devices/import').type('text/csv').send(huge), 401);
      assert.equal(await count(), before);
    });
  });
}
