// Presence on the bus (issue 26 item 2, migration 0030): the store's batched upsert and its merge
// rules, the silent query and the map; the recorder's coalescing, counted in real SQL statements.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { BusEvent, WatchedBusEvent } from '../../src/broker/bus-events.js';
import { PresenceRecorder } from '../../src/detect/bus-presence.js';
import { BusPresenceReads } from '../../src/detect/bus-presence-reads.js';
import { systemClock } from '../../src/shared/clock.js';
import { BusPresenceStore, type PresenceUpdate } from '../../src/store/bus-presence-store.js';
import type { Db } from '../../src/store/db.js';
import { DeviceStore } from '../../src/store/device-store.js';
import { dbTargets, disposeDb } from '../helpers/db.js';

const T0 = Date.parse('2026-12-07T10:00:00Z');
const at = (s: number) => new Date(T0 + s * 1000);

const connect = (identity: string, s: number, more: Partial<Extract<BusEvent, { kind: 'connect' }>> = {}): WatchedBusEvent => ({
  identity,
  event: {
    kind: 'connect',
    broker: 'mosquitto',
    at: at(s),
    clientId: identity,
    username: identity,
    source: { host: '10.0.0.1', port: 40000 },
    protocol: 'mqtt5',
    cleanStart: true,
    keepAliveSeconds: 60,
    ...more,
  },
});
const disconnect = (identity: string, s: number, more: Partial<Extract<BusEvent, { kind: 'disconnect' }>> = {}): WatchedBusEvent => ({
  identity,
  event: { kind: 'disconnect', broker: 'mosquitto', at: at(s), clientId: identity, reason: 'client', ...more },
});
const subscribe = (identity: string, s: number): WatchedBusEvent => ({
  identity,
  event: { kind: 'subscribe', broker: 'mosquitto', at: at(s), clientId: identity, topic: 't/x', qos: 1 },
});

/** One update as the recorder would make it from these events (its own coalescing). */
function update(partial: Partial<PresenceUpdate> & Pick<PresenceUpdate, 'identity'>): PresenceUpdate {
  return {
    broker: 'mosquitto',
    clientId: partial.identity,
    connected: false,
    connect: null,
    disconnect: null,
    connects: 0,
    disconnects: 0,
    activityAt: null,
    ...partial,
  };
}
const connectOf = (s: number, host = '10.0.0.1') => ({
  at: at(s),
  username: 'u',
  source: { host, port: 1883 },
  protocol: 'mqtt5',
  keepAliveSeconds: 30,
});

for (const target of dbTargets) {
  describe(`bus presence (migration 0030) on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    const store = new BusPresenceStore();
    const devices = new DeviceStore();
    let statements: string[] = [];
    const onQuery = (q: { sql: string }) => statements.push(q.sql);

    before(async () => {
      db = await target.create();
      db.on('query', onQuery);
    });
    after(async () => {
      if (db) {
        db.off('query', onQuery);
        await disposeDb(db);
      }
    });
    beforeEach(async () => {
      await db('bus_presence').del();
      await db('devices').del();
      statements = [];
    });
    const row = async (identity: string, broker = 'mosquitto') => (await store.ofIdentity(db, identity)).find((r) => r.broker === broker)!;
    const upserts = () => statements.filter((s) => /insert into bus_presence/.test(s)).length;

    it('a batch with a connect and a disconnect of one identity: counts both, ends disconnected, keeps the later times', async () => {
      const rec = new PresenceRecorder(db, store, { flushMs: 60_000 });
      rec.observe(connect('dev-1', 1));
      rec.observe(subscribe('dev-1', 2));
      rec.observe(disconnect('dev-1', 3, { reason: 'keepalive-timeout' }));
      await rec.stop();
      const r = await row('dev-1');
      assert.equal(r.connected, false);
      assert.equal(r.connectsTotal, 1);
      assert.equal(r.disconnectsTotal, 1);
      assert.deepEqual(r.lastConnectAt, at(1));
      assert.deepEqual(r.lastDisconnectAt, at(3));
      assert.equal(r.lastDisconnectReason, 'keepalive-timeout');
      assert.deepEqual(r.lastActivityAt, at(2));
      assert.deepEqual(r.lastSeenAt, at(3));
      assert.deepEqual(r.source, { host: '10.0.0.1', port: 40000 });
      assert.equal(r.username, 'dev-1');
      assert.equal(r.protocol, 'mqtt5');
      assert.equal(r.keepAliveSeconds, 60);
      assert.equal(upserts(), 1);
    });

    it('disconnect then reconnect in the same second (a take-over): connected, in the broker order', async () => {
      const rec = new PresenceRecorder(db, store, { flushMs: 60_000 });
      rec.observe(connect('dev-2', 1));
      rec.observe(disconnect('dev-2', 5, { reason: 'taken-over' }));
      rec.observe(connect('dev-2', 5, { source: { host: '10.0.0.9', port: 5 } }));
      await rec.stop();
      const r = await row('dev-2');
      assert.equal(r.connected, true);
      assert.equal(r.connectsTotal, 2);
      assert.deepEqual(r.source, { host: '10.0.0.9', port: 5 });
    });

    it('out-of-order batches from two processes leave the same row whichever is flushed first', async () => {
      const early = update({ identity: 'x', connected: true, connect: connectOf(10, '10.0.0.10'), connects: 1 });
      const late = update({
        identity: 'x',
        connected: false,
        disconnect: { at: at(20), reason: 'connection-lost', detail: 'reset' },
        disconnects: 1,
      });
      const activity = update({ identity: 'x', activityAt: at(15) });
      const results = [];
      for (const order of [
        [early, late, activity],
        [late, activity, early],
        [activity, late, early],
      ]) {
        await db('bus_presence').del();
        for (const u of order) await store.upsert(db, [u], at(100));
        const r = await row('x');
        results.push({ ...r, updatedAt: null });
      }
      for (const r of results) {
        assert.equal(r.connected, false);
        assert.equal(r.connectsTotal, 1);
        assert.equal(r.disconnectsTotal, 1);
        assert.deepEqual(r.lastConnectAt, at(10));
        assert.deepEqual(r.lastDisconnectAt, at(20));
        assert.equal(r.lastDisconnectReason, 'connection-lost');
        assert.equal(r.lastDisconnectDetail, 'reset');
        assert.deepEqual(r.source, { host: '10.0.0.10', port: 1883 });
        assert.deepEqual(r.lastActivityAt, at(15));
        assert.deepEqual(r.lastSeenAt, at(20));
      }
      // An older connect flushed late does not reconnect a device whose later disconnect is stored.
      await store.upsert(db, [update({ identity: 'x', connected: true, connect: connectOf(5, '10.0.0.5'), connects: 1 })], at(101));
      const r = await row('x');
      assert.equal(r.connected, false);
      assert.equal(r.connectsTotal, 2);
      assert.deepEqual(r.source, { host: '10.0.0.10', port: 1883 }, 'the older connect does not replace the newer source');
    });

    it('a disconnect of another client id (an older session of the same identity) leaves the current session connected', async () => {
      await store.upsert(db, [update({ identity: 'y', clientId: 'y-new', connected: true, connect: connectOf(10), connects: 1 })], at(10));
      await store.upsert(
        db,
        [
          update({
            identity: 'y',
            clientId: 'y-old',
            connected: false,
            disconnect: { at: at(11), reason: 'taken-over', detail: null },
            disconnects: 1,
          }),
        ],
        at(11),
      );
      let r = await row('y');
      assert.equal(r.connected, true);
      assert.equal(r.clientId, 'y-new');
      assert.equal(r.lastDisconnectReason, 'taken-over');
      await store.upsert(
        db,
        [
          update({
            identity: 'y',
            clientId: 'y-new',
            connected: false,
            disconnect: { at: at(12), reason: 'client', detail: null },
            disconnects: 1,
          }),
        ],
        at(12),
      );
      r = await row('y');
      assert.equal(r.connected, false);
      assert.equal(r.disconnectsTotal, 2);
    });

    it('activity alone rewrites a row at most once a minute', async () => {
      await store.upsert(db, [update({ identity: 'z', connected: true, connect: connectOf(0), connects: 1 })], at(0));
      assert.equal(await store.upsert(db, [update({ identity: 'z', activityAt: at(1) })], at(1)), 1, 'the first activity is written');
      assert.equal(await store.upsert(db, [update({ identity: 'z', activityAt: at(30) })], at(30)), 0, 'within the minute: skipped');
      assert.equal(await store.upsert(db, [update({ identity: 'z', activityAt: at(61) })], at(61)), 1);
      const r = await row('z');
      assert.deepEqual(r.lastActivityAt, at(61));
      assert.equal(r.connected, true);
    });

    it('10,000 connects are two statements, 10,000 rows; the disconnects after them two more', async () => {
      const rec = new PresenceRecorder(db, store, { flushMs: 60_000 });
      for (let i = 0; i < 10_000; i++) rec.observe(connect(`storm-${i}`, 1));
      for (let i = 0; i < 10_000; i++) rec.observe(subscribe(`storm-${i}`, 2));
      await rec.flush();
      assert.equal(upserts(), 2);
      for (let i = 0; i < 10_000; i++) rec.observe(disconnect(`storm-${i}`, 3));
      await rec.stop();
      assert.equal(upserts(), 4);
      const counts = (await db('bus_presence').select(db.raw('count(*) filter (where connected) as c, count(*) as n')).first()) as {
        c: unknown;
        n: unknown;
      };
      assert.deepEqual([Number(counts.c), Number(counts.n)], [0, 10_000]);
      const s = rec.stats();
      assert.equal(s.flushes, 4);
      assert.equal(s.rowsWritten, 20_000);
      assert.equal(s.pending, 0);
    });

    it('a storm observed as it happens flushes by itself at 5,000 pending identities, one statement at a time', async () => {
      const rec = new PresenceRecorder(db, store, { flushMs: 60_000 });
      for (let i = 0; i < 12_000; i++) rec.observe(connect(`s2-${i}`, 1));
      // The timer is a minute away: only the size bound can have started these.
      for (let i = 0; i < 100 && Number((await db('bus_presence').count({ n: '*' }).first())!.n) < 10_000; i++)
        await new Promise((r) => setTimeout(r, 20));
      assert.ok(Number((await db('bus_presence').count({ n: '*' }).first())!.n) >= 10_000);
      await rec.stop();
      assert.equal(Number((await db('bus_presence').count({ n: '*' }).first())!.n), 12_000);
      assert.ok(upserts() <= 3, `${upserts()} statements`);
    });

    it('events without identity and TLS failures are not presence: counted, not written', async () => {
      const rec = new PresenceRecorder(db, store, { flushMs: 60_000 });
      rec.observe({ event: { kind: 'disconnect', broker: 'mosquitto', at: at(1), reason: 'protocol-error' } });
      rec.observe({
        event: { kind: 'tls-failure', broker: 'mosquitto', at: at(1), failure: 'verify-failed', detail: 'certificate verify failed' },
        identity: 'who',
      });
      rec.observe(connect('x'.repeat(600), 1));
      rec.observe(connect('ok\u0000nul', 1, { clientId: 'c\u0000' }));
      await rec.stop();
      assert.deepEqual(rec.stats().ignored, { 'no-identity': 1, 'not-presence': 1, 'identity-too-long': 1 });
      const rows = await db('bus_presence').select('identity', 'client_id');
      assert.deepEqual(rows, [{ identity: 'ok\uFFFDnul', client_id: 'c\uFFFD' }]);
    });

    it('the database away: updates keep coalescing (bounded, drops counted) and are written once it is back', async () => {
      const failing = new BusPresenceStore();
      let down = true;
      failing.upsert = async (ex, rows, when) => {
        if (down) throw new Error('connection refused');
        return store.upsert(ex, rows, when);
      };
      const errors: unknown[] = [];
      const rec = new PresenceRecorder(db, failing, { flushMs: 10, maxPending: 3, onError: (e) => errors.push(e) });
      rec.observe(connect('a', 1));
      rec.observe(connect('b', 1));
      await assert.rejects(rec.flush(), /connection refused/);
      rec.observe(disconnect('a', 2));
      rec.observe(connect('c', 1));
      rec.observe(connect('d', 1)); // a fourth identity: dropped
      await new Promise((r) => setTimeout(r, 50)); // ticks fail meanwhile
      assert.ok(rec.stats().failedFlushes >= 2);
      assert.equal(errors.length, 1, 'told once while writes keep failing');
      assert.equal(rec.stats().dropped, 1);
      assert.equal(rec.stats().pending, 3);
      down = false;
      await rec.stop();
      const r = await row('a');
      assert.equal(r.connected, false);
      assert.equal(r.connectsTotal, 1);
      assert.equal(r.disconnectsTotal, 1);
      assert.deepEqual((await db('bus_presence').orderBy('identity').pluck('identity')) as string[], ['a', 'b', 'c']);
    });

    it('silent: devices seen, not connected, last seen before the time, by lot/site/kind, oldest first and paged', async () => {
      const dev = (id: string, lot: string, kind: 'client' | 'broker' = 'client') => ({
        id,
        kind,
        model: null,
        hardwareRevision: null,
        firmwareVersion: null,
        site: 'plant',
        lot,
        labels: {},
        createdAt: at(0),
      });
      await devices.insertMany(db, [
        dev('d1', 'L1'),
        dev('d2', 'L1'),
        dev('d3', 'L2'),
        dev('d4', 'L1'),
        dev('d5', 'L1', 'broker'),
        dev('never', 'L1'),
      ]);
      const off = (identity: string, s: number, broker = 'mosquitto') =>
        update({ identity, broker, connected: false, disconnect: { at: at(s), reason: 'client', detail: null }, disconnects: 1 });
      await store.upsert(
        db,
        [
          off('d1', 100),
          off('d2', 50),
          off('d3', 10),
          update({ identity: 'd4', connected: true, connect: connectOf(5), connects: 1 }), // connected: never silent
          off('d5', 20),
          off('stranger', 1), // no device
          off('d2', 500, 'emqx'), // d2 was seen later on another broker
        ],
        at(600),
      );
      const ids = async (q: Parameters<BusPresenceStore['silent']>[1]) => (await store.silent(db, q)).map((s) => s.deviceId);
      assert.deepEqual(await ids({ before: at(200), limit: 10 }), ['d3', 'd5', 'd1']);
      assert.deepEqual(await ids({ before: at(200), lot: 'L1', limit: 10 }), ['d5', 'd1']);
      assert.deepEqual(await ids({ before: at(200), lot: 'L1', kind: 'client', limit: 10 }), ['d1']);
      assert.deepEqual(await ids({ before: at(200), site: 'elsewhere', limit: 10 }), []);
      assert.deepEqual(await ids({ before: at(1000), limit: 10 }), ['d3', 'd5', 'd1', 'd2']);
      const first = await store.silent(db, { before: at(1000), limit: 2 });
      assert.deepEqual(
        await ids({ before: at(1000), limit: 10, after: { lastSeenAt: first[1]!.lastSeenAt, deviceId: first[1]!.deviceId } }),
        ['d1', 'd2'],
      );
      assert.deepEqual((await store.silent(db, { before: at(1000), limit: 10 })).at(-1)!.lastSeenAt, at(500));
      // Devices have no profile: the detectors' profile selects by kind (device: client devices, broker: brokers).
      const reads = new BusPresenceReads(db, store, systemClock);
      assert.deepEqual(
        (await reads.silent({ before: at(200), profile: 'broker', limit: 10 })).map((d) => d.deviceId),
        ['d5'],
      );
      assert.deepEqual(
        (await reads.silent({ before: at(200), profile: 'device', limit: 10 })).map((d) => d.deviceId),
        ['d3', 'd1'],
      );
      // Revoked and decommissioned devices are not expected on the bus: not silent unless asked for.
      await db('devices').where({ id: 'd3' }).update({ status: 'decommissioned' });
      assert.deepEqual(await ids({ before: at(200), limit: 10 }), ['d5', 'd1']);
      assert.deepEqual(await ids({ before: at(200), statuses: ['decommissioned'], limit: 10 }), ['d3']);
    });

    it('the map: per broker, devices by site and lot with connected / seen / known counts, strangers apart', async () => {
      await devices.insertMany(
        db,
        ['m1', 'm2', 'm3'].map((id, i) => ({
          id,
          kind: 'client' as const,
          model: null,
          hardwareRevision: null,
          firmwareVersion: null,
          site: i < 2 ? 'berlin' : null,
          lot: 'L1',
          labels: {},
          createdAt: at(0),
        })),
      );
      await store.upsert(
        db,
        [
          update({ identity: 'm1', connected: true, connect: connectOf(0), connects: 1 }),
          update({ identity: 'm2', connected: false, disconnect: { at: at(10), reason: 'client', detail: null }, disconnects: 1 }),
          update({ identity: 'm3', connected: false, disconnect: { at: at(500), reason: 'client', detail: null }, disconnects: 1 }),
          update({ identity: 'rogue', connected: true, connect: connectOf(1), connects: 1 }),
          update({
            identity: 'm1',
            broker: 'emqx',
            connected: false,
            disconnect: { at: at(3), reason: 'client', detail: null },
            disconnects: 1,
          }),
        ],
        at(600),
      );
      assert.deepEqual(await store.map(db, at(100)), [
        { broker: 'emqx', site: 'berlin', lot: 'L1', unregistered: false, connected: 0, seen: 0, known: 1 },
        { broker: 'mosquitto', site: 'berlin', lot: 'L1', unregistered: false, connected: 1, seen: 1, known: 2 },
        { broker: 'mosquitto', site: null, lot: 'L1', unregistered: false, connected: 0, seen: 1, known: 1 },
        { broker: 'mosquitto', site: null, lot: null, unregistered: true, connected: 1, seen: 1, known: 1 },
      ]);
    });
  });
}
