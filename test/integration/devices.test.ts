import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { AuditLog } from '../../src/audit/audit-log.js';
import type { DeviceInput } from '../../src/enroll/device-fields.js';
import { parseManifest } from '../../src/enroll/device-manifest.js';
import { DeviceInventory, type DeviceView } from '../../src/enroll/devices.js';
import { ManualClock } from '../../src/shared/clock.js';
import { DomainError } from '../../src/shared/errors.js';
import { AuditStore } from '../../src/store/audit-store.js';
import type { Db } from '../../src/store/db.js';
import { DeviceStore } from '../../src/store/device-store.js';
import { dbTargets, disposeDb } from '../helpers/db.js';

const CTX = { actor: 'api-key:ak_test', requestId: 'req-devices' };

/** Runs f, expects a DomainError of this kind, returns it. */
async function rejectsWith(kind: DomainError['kind'], f: () => Promise<unknown>): Promise<DomainError> {
  try {
    await f();
  } catch (e) {
    assert.ok(e instanceof DomainError, `expected a DomainError, got ${String(e)}`);
    assert.equal(e.kind, kind, e.message);
    return e;
  }
  assert.fail(`expected ${kind}`);
}

type RowError = { row?: number; id?: string; field?: string; message: string };
const rowErrors = (e: DomainError) => (e.details?.errors ?? []) as RowError[];

for (const target of dbTargets) {
  describe(`device inventory on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    let clock: ManualClock;
    let audit: AuditLog;
    let inv: DeviceInventory;

    before(async () => {
      db = await target.create();
      clock = new ManualClock(new Date('2026-06-01T08:00:00Z'));
      audit = new AuditLog(new AuditStore(db), randomBytes(32), clock);
      inv = new DeviceInventory(db, new DeviceStore(), audit, clock);
    });
    after(async () => {
      if (db) await disposeDb(db);
    });

    const auditFor = async (id: string) => (await audit.list({ limit: 100, targetType: 'device', targetId: id })).items;
    const countDevices = async () => Number((await db('devices').count({ n: 'id' }))[0]!.n);
    const tick = () => clock.advance(1000);

    it('registers a device with its fields, audits it, and refuses the same id again (Conflict)', async () => {
      const d = await inv.register(
        {
          id: 'sensor-1',
          model: 'TH-200',
          hardwareRevision: 'rev-B',
          firmwareVersion: '1.4.2',
          site: 'berlin',
          lot: 'L-1',
          labels: { color: 'red' },
        },
        CTX,
      );
      assert.deepEqual(d, {
        id: 'sensor-1',
        kind: 'client',
        model: 'TH-200',
        hardwareRevision: 'rev-B',
        firmwareVersion: '1.4.2',
        site: 'berlin',
        lot: 'L-1',
        status: 'registered',
        labels: { color: 'red' },
        currentSerial: null,
        currentNotAfter: null,
        createdAt: '2026-06-01T08:00:00.000Z',
        activatedAt: null,
        suspendedAt: null,
        revokedAt: null,
        decommissionedAt: null,
        updatedAt: '2026-06-01T08:00:00.000Z',
      });
      assert.deepEqual(await inv.get('sensor-1'), d);
      const entries = await auditFor('sensor-1');
      assert.deepEqual(
        entries.map((e) => [e.action, e.actor, e.requestId]),
        [['device.registered', CTX.actor, CTX.requestId]],
      );
      assert.equal(entries[0]!.details.lot, 'L-1');

      await rejectsWith('Conflict', () => inv.register({ id: 'sensor-1', kind: 'broker' }, CTX));
      assert.equal((await inv.get('sensor-1')).kind, 'client', 'the first registration stands');
      assert.equal((await auditFor('sensor-1')).length, 1);
      await rejectsWith('NotFound', () => inv.get('nobody'));
    });

    it('refuses bad input on register with field errors', async () => {
      for (const bad of [
        { id: 'has space' },
        { id: '-leading-dash' },
        { id: 'x'.repeat(65) },
        { id: 'ok-1', kind: 'gateway' },
        { id: 'ok-2', model: 'm'.repeat(129) },
        { id: 'ok-3', model: '' },
        { id: 'ok-4', site: 'tab\there' },
        { id: 'ok-5', labels: { 'bad key': 'v' } },
        { id: 'ok-6', labels: { k: 5 } },
        { id: 'ok-7', unexpected: true },
      ]) {
        const e = await rejectsWith('BadRequest', () => inv.register(bad as unknown as DeviceInput, CTX));
        assert.ok(rowErrors(e).length > 0, JSON.stringify(bad));
      }
      const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']));
      await rejectsWith('BadRequest', () => inv.register({ id: 'ok-8', labels: many }, CTX));
      assert.equal(await countDevices(), 1);
    });

    it('imports 10,000 devices in one call, all registered and each one in the audit log', async () => {
      tick();
      const rows: DeviceInput[] = Array.from({ length: 10_000 }, (_, i) => ({
        id: `bulk-${String(i).padStart(5, '0')}`,
        model: i % 2 ? 'TH-200' : 'TH-300',
        firmwareVersion: '2.0.0',
        ...(i === 0 ? { lot: 'OWN-LOT' } : {}),
      }));
      const result = await inv.importManifest(rows, CTX, { lot: 'LOT-BULK' });
      assert.deepEqual(result, { imported: 10_000, lot: 'LOT-BULK' });
      assert.equal(await countDevices(), 10_001);
      const lots = (await db('devices').select('lot').count({ n: 'id' }).whereLike('id', 'bulk-%').groupBy('lot').orderBy('lot')) as {
        lot: string;
        n: unknown;
      }[];
      assert.deepEqual(
        lots.map((l) => [l.lot, Number(l.n)]),
        [
          ['LOT-BULK', 9999],
          ['OWN-LOT', 1],
        ],
        'the lot applies to rows without one',
      );
      const registered = (
        await db('audit_log').count({ n: 'seq' }).where({ action: 'device.registered' }).whereLike('target_id', 'bulk-%')
      )[0]!;
      assert.equal(Number(registered.n), 10_000);
      for (const id of ['bulk-00000', 'bulk-04242', 'bulk-09999']) {
        const e = await auditFor(id);
        assert.deepEqual(
          e.map((x) => [x.action, x.details.source]),
          [['device.registered', 'import']],
        );
      }
      assert.equal((await audit.verify(db)).ok, true);
    });

    it('imports nothing when a manifest has a duplicate row and a malformed row, and reports both by row', async () => {
      tick();
      const before = await countDevices();
      const seqBefore = (await audit.list({ limit: 1 })).items[0]!.seq;
      const rows = [
        { id: 'mf-1' },
        { id: 'mf-2', kind: 'client' },
        { id: 'mf-1' }, // duplicate of row 1
        { id: 'bad id!' }, // malformed
        { id: 'mf-5', kind: 'toaster' },
        { id: 'sensor-1' }, // exists
        { id: 'mf-7', model: 'x'.repeat(200) },
        'not an object',
      ] as unknown as DeviceInput[];
      const e = await rejectsWith('BadRequest', () => inv.importManifest(rows, CTX));
      const errs = rowErrors(e);
      assert.deepEqual(
        errs.map((x) => [x.row, x.id ?? null, x.field ?? null]),
        [
          [3, 'mf-1', 'id'],
          [4, 'bad id!', 'id'],
          [5, 'mf-5', 'kind'],
          [6, 'sensor-1', 'id'],
          [7, 'mf-7', 'model'],
          [8, null, null],
        ],
      );
      assert.match(errs[0]!.message, /row 1/);
      assert.match(e.message, /nothing was imported/);
      assert.equal(await countDevices(), before);
      assert.equal((await audit.list({ limit: 1 })).items[0]!.seq, seqBefore, 'no audit entry either');

      // The same from CSV: a malformed row and a duplicate, numbered as data rows after the header.
      const m = parseManifest('id,model\ncsv-1,a\ncsv-2,b,extra\ncsv-1,c\n', 'text/csv');
      const e2 = await rejectsWith('BadRequest', () => inv.importManifest(m.devices, CTX, { parseErrors: m.errors }));
      assert.deepEqual(
        rowErrors(e2).map((x) => [x.row, x.id]),
        [
          [2, 'csv-2'],
          [3, 'csv-1'],
        ],
      );
      assert.equal(await countDevices(), before);

      await rejectsWith('BadRequest', () => inv.importManifest([], CTX));
      await rejectsWith('BadRequest', () => inv.importManifest([{ id: 'x' }], CTX, { lot: '' }));
    });

    it('rolls an import back when a row turns out to exist at insert time', async () => {
      const store = new DeviceStore();
      const racing = new DeviceInventory(db, store, audit, clock);
      // Simulate a registration that lands between the check and the insert.
      const original = store.existingIds.bind(store);
      store.existingIds = async (ex, ids) => {
        const found = await original(ex, ids);
        await inv.register({ id: 'race-2' }, CTX);
        return found;
      };
      const before = await countDevices();
      const e = await rejectsWith('BadRequest', () => racing.importManifest([{ id: 'race-1' }, { id: 'race-2' }, { id: 'race-3' }], CTX));
      assert.deepEqual(
        rowErrors(e).map((x) => [x.row, x.id]),
        [[2, 'race-2']],
      );
      assert.equal(await countDevices(), before + 1, 'only the racing registration landed');
      await rejectsWith('NotFound', () => inv.get('race-1'));
    });

    it('updates descriptive fields, audits the changed ones, and writes nothing for a no-op', async () => {
      tick();
      await inv.register({ id: 'upd-1', model: 'A', site: 's1', labels: { a: '1' } }, CTX);
      tick();
      const d = await inv.update('upd-1', { model: 'B', site: null, firmwareVersion: '3.0', labels: { a: '1', b: '2' } }, CTX);
      assert.deepEqual([d.model, d.site, d.firmwareVersion, d.labels], ['B', null, '3.0', { a: '1', b: '2' }]);
      assert.equal(d.updatedAt, clock.now().toISOString());
      const entries = await auditFor('upd-1');
      assert.equal(entries[0]!.action, 'device.updated');
      assert.deepEqual(entries[0]!.details, {
        changed: ['model', 'firmwareVersion', 'site', 'labels'],
        from: { model: 'A', firmwareVersion: null, site: 's1', labels: { a: '1' } },
        to: { model: 'B', firmwareVersion: '3.0', site: null, labels: { a: '1', b: '2' } },
      });
      const again = await inv.update('upd-1', { model: 'B', labels: { b: '2', a: '1' } }, CTX);
      assert.equal(again.updatedAt, d.updatedAt);
      assert.equal((await auditFor('upd-1')).length, 2, 'no entry for a patch that changes nothing');
      await rejectsWith('BadRequest', () => inv.update('upd-1', {}, CTX));
      await rejectsWith('BadRequest', () => inv.update('upd-1', { lot: 'x' } as never, CTX));
      await rejectsWith('BadRequest', () => inv.update('upd-1', { model: 'm'.repeat(129) }, CTX));
      await rejectsWith('NotFound', () => inv.update('nobody', { model: 'x' }, CTX));
    });

    it('decommissions once (idempotent, terminal): no change, update or certificate afterwards', async () => {
      tick();
      await inv.register({ id: 'dec-1' }, CTX);
      tick();
      const d = await inv.decommission('dec-1', CTX);
      assert.equal(d.status, 'decommissioned');
      assert.equal(d.decommissionedAt, clock.now().toISOString());
      tick();
      const again = await inv.decommission('dec-1', CTX);
      assert.deepEqual(again, d, 'idempotent');
      assert.deepEqual(
        (await auditFor('dec-1')).map((e) => e.action),
        ['device.decommissioned', 'device.registered'],
      );
      for (const to of ['registered', 'active', 'suspended', 'revoked'] as const) {
        await rejectsWith('Conflict', () => db.transaction((tx) => inv.transition(tx, 'dec-1', to, CTX)));
      }
      await rejectsWith('Conflict', () => inv.update('dec-1', { model: 'x' }, CTX));
      await rejectsWith('Conflict', () =>
        db.transaction((tx) => inv.recordIssued(tx, 'dec-1', { serial: randomBytes(16), notAfter: new Date('2027-01-01Z') }, CTX)),
      );
      await rejectsWith('NotFound', () => inv.decommission('nobody', CTX));
    });

    it('walks the lifecycle through transition(), auditing each move', async () => {
      tick();
      await inv.register({ id: 'life-1' }, CTX);
      const step = (to: Parameters<DeviceInventory['transition']>[2]) => db.transaction((tx) => inv.transition(tx, 'life-1', to, CTX));
      await rejectsWith('Conflict', () => step('suspended')); // registered → suspended is not a move
      tick();
      assert.equal((await step('active')).status, 'active');
      tick();
      const s = await step('suspended');
      assert.equal(s.suspendedAt?.toISOString(), clock.now().toISOString());
      tick();
      assert.equal((await step('active')).status, 'active');
      tick();
      assert.equal((await step('revoked')).status, 'revoked');
      await rejectsWith('Conflict', () => step('active')); // revoked → only decommissioned or re-admitted
      await rejectsWith('Conflict', () => step('suspended'));
      tick();
      assert.equal((await step('registered')).status, 'registered'); // operator re-admit
      tick();
      assert.equal((await step('decommissioned')).status, 'decommissioned');
      assert.deepEqual((await auditFor('life-1')).map((e) => e.action).reverse(), [
        'device.registered',
        'device.activated',
        'device.suspended',
        'device.reactivated',
        'device.revoked',
        'device.readmitted',
        'device.decommissioned',
      ]);
      await rejectsWith('NotFound', () => db.transaction((tx) => inv.transition(tx, 'nobody', 'active', CTX)));
    });

    it('recordIssued sets the current certificate and activates only the first time', async () => {
      tick();
      await inv.register({ id: 'iss-1', lot: 'L-ISS' }, CTX);
      tick();
      const first = { serial: randomBytes(16), notAfter: new Date('2027-06-01T00:00:00Z') };
      const r1 = await db.transaction((tx) => inv.recordIssued(tx, 'iss-1', first, CTX));
      assert.equal(r1.status, 'active');
      assert.equal(r1.activatedAt?.toISOString(), clock.now().toISOString());
      assert.ok(r1.currentSerial?.equals(first.serial));
      const activatedAt = r1.activatedAt!.toISOString();
      tick();
      const second = { serial: randomBytes(16), notAfter: new Date('2027-07-01T00:00:00Z') };
      const r2 = await db.transaction((tx) => inv.recordIssued(tx, 'iss-1', second, CTX));
      assert.equal(r2.activatedAt?.toISOString(), activatedAt, 'activated once');
      const v = await inv.get('iss-1');
      assert.equal(v.currentSerial, second.serial.toString('hex'));
      assert.equal(v.currentNotAfter, '2027-07-01T00:00:00.000Z');
      const actions = (await auditFor('iss-1')).map((e) => e.action);
      assert.deepEqual(actions, ['device.activated', 'device.registered']);
      const activated = (await auditFor('iss-1'))[0]!;
      assert.equal(activated.details.serial, first.serial.toString('hex'));

      // Rolled back with its transaction.
      await assert.rejects(
        db.transaction(async (tx) => {
          await inv.recordIssued(tx, 'iss-1', { serial: randomBytes(16), notAfter: new Date('2030-01-01Z') }, CTX);
          throw new Error('boom');
        }),
        /boom/,
      );
      assert.equal((await inv.get('iss-1')).currentSerial, second.serial.toString('hex'));
      await rejectsWith('NotFound', () => db.transaction((tx) => inv.recordIssued(tx, 'nobody', first, CTX)));

      // The enrollment helpers.
      await db.transaction(async (tx) => {
        assert.equal((await inv.getForUpdate(tx, 'iss-1'))?.id, 'iss-1');
        assert.equal(await inv.getForUpdate(tx, 'nobody'), undefined);
        assert.equal((await inv.findByLot(tx, 'L-ISS', 'iss-1'))?.lot, 'L-ISS');
        assert.equal(await inv.findByLot(tx, 'OTHER', 'iss-1'), undefined);
      });
    });

    it('narrows the list by each filter', async () => {
      tick();
      await inv.importManifest(
        [
          { id: 'f-1', kind: 'broker', model: 'FM-1', firmwareVersion: '1.0', site: 'paris' },
          { id: 'f-2', kind: 'client', model: 'FM-2', firmwareVersion: '1.0', site: 'paris' },
          { id: 'f-3', kind: 'client', model: 'FM-2', firmwareVersion: '2.0', site: 'lyon' },
        ],
        CTX,
        { lot: 'LOT-F' },
      );
      await db.transaction((tx) => inv.recordIssued(tx, 'f-1', { serial: randomBytes(16), notAfter: new Date('2026-07-01Z') }, CTX));
      await db.transaction((tx) => inv.recordIssued(tx, 'f-2', { serial: randomBytes(16), notAfter: new Date('2026-12-01Z') }, CTX));
      const ids = async (filter: Parameters<DeviceInventory['list']>[0]) =>
        (await inv.list({ lot: 'LOT-F', ...filter }, { limit: 500 })).items.map((d) => d.id).sort();
      assert.deepEqual(await ids({}), ['f-1', 'f-2', 'f-3']);
      assert.deepEqual(await ids({ kind: 'broker' }), ['f-1']);
      assert.deepEqual(await ids({ model: 'FM-2' }), ['f-2', 'f-3']);
      assert.deepEqual(await ids({ firmwareVersion: '2.0' }), ['f-3']);
      assert.deepEqual(await ids({ site: 'paris' }), ['f-1', 'f-2']);
      assert.deepEqual(await ids({ status: 'active' }), ['f-1', 'f-2']);
      assert.deepEqual(await ids({ status: 'registered' }), ['f-3']);
      assert.deepEqual(await ids({ expiringBefore: new Date('2026-08-01Z') }), ['f-1']);
      assert.deepEqual(await ids({ expiringBefore: new Date('2027-01-01Z') }), ['f-1', 'f-2']);
      assert.deepEqual(await ids({ model: 'FM-2', site: 'lyon' }), ['f-3']);
      assert.deepEqual(await ids({ lot: 'NO-SUCH-LOT' }), []);
      assert.equal((await inv.list({ lot: 'LOT-BULK' }, { limit: 500 })).items.length, 500);
      assert.equal((await inv.list({ lot: 'LOT-BULK', model: 'TH-300' }, { limit: 1 })).items[0]!.model, 'TH-300');
    });

    it('pages with a cursor over every device exactly once, newest first, and refuses bad cursors and limits', async () => {
      const total = await countDevices();
      const seen: DeviceView[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await inv.list({}, { cursor, limit: 499 });
        seen.push(...page.items);
        cursor = page.nextCursor ?? undefined;
        pages++;
      } while (cursor);
      assert.equal(seen.length, total);
      assert.equal(new Set(seen.map((d) => d.id)).size, total, 'no device twice');
      assert.equal(pages, Math.ceil(total / 499));
      for (let i = 1; i < seen.length; i++) {
        const [a, b] = [seen[i - 1]!, seen[i]!];
        assert.ok(a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.id > b.id), `order at ${i}`);
      }
      // A page that ends exactly at the last row has no next cursor.
      const exact = await inv.list({ lot: 'LOT-F' }, { limit: 3 });
      assert.equal(exact.nextCursor, null);
      const two = await inv.list({ lot: 'LOT-F' }, { limit: 2 });
      assert.ok(two.nextCursor);
      assert.deepEqual(
        (await inv.list({ lot: 'LOT-F' }, { limit: 2, cursor: two.nextCursor! })).items.map((d) => d.id),
        ['f-1'],
      );

      for (const cursor of [
        'garbage',
        'bm9waXBl',
        Buffer.from('2026-01-01T00:00:00.000Z|bad id').toString('base64url'),
        Buffer.from('notadate|x').toString('base64url'),
      ]) {
        await rejectsWith('BadRequest', () => inv.list({}, { cursor, limit: 10 }));
      }
      for (const limit of [0, 501, 1.5, NaN]) await rejectsWith('BadRequest', () => inv.list({}, { limit }));
      await rejectsWith('BadRequest', () => inv.list({ expiringBefore: new Date('nope') }, { limit: 10 }));
      await rejectsWith('BadRequest', () => inv.list({ status: 'lost' as never }, { limit: 10 }));
    });
  });
}
