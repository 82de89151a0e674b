// Presence on the bus through the API (issue 26 item 2): a device's presence on GET /v1/devices/{id},
// the device list's connected / silentSince / broker filters with cursor paging, GET /v1/bus/map and
// who may read it, bad filter values. Presence is recorded through the service's own recorder.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type request from 'supertest';
import type { Role } from '../../src/access/api-keys.js';
import type { BusEvent, WatchedBusEvent } from '../../src/broker/bus-events.js';
import type { Service } from '../../src/main.js';
import { dbTargets } from '../helpers/db.js';
import { assertProblem } from '../helpers/http.js';
import { makeApiService } from '../helpers/service.js';

type Agent = ReturnType<typeof request>;

const MIN = 60_000;
const NOW = Date.now();
const ago = (ms: number) => new Date(NOW - ms);

const connect = (broker: string, identity: string, when: Date): WatchedBusEvent => ({
  identity,
  event: {
    kind: 'connect',
    broker,
    at: when,
    clientId: `${identity}-c`,
    username: identity,
    source: { host: '192.0.2.7', port: 51000 },
    protocol: 'mqtt3.1.1',
    cleanStart: false,
    keepAliveSeconds: 30,
  } satisfies BusEvent,
});
const disconnect = (broker: string, identity: string, when: Date): WatchedBusEvent => ({
  identity,
  event: { kind: 'disconnect', broker, at: when, clientId: `${identity}-c`, reason: 'connection-lost' } satisfies BusEvent,
});

for (const target of dbTargets) {
  describe(`bus presence API on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let api: Agent;
    let keys: Record<Role, string>;
    const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });

    before(async () => {
      ({ svc, api, keys } = await makeApiService(target));
      // d0..d9 in lot L1 at site s1, e0..e4 in lot L2 (no site); never0 is never seen.
      const ids = [...Array.from({ length: 10 }, (_, i) => `d${i}`), ...Array.from({ length: 5 }, (_, i) => `e${i}`), 'never0'];
      for (const id of ids)
        await svc.devices.register(
          { id, lot: id.startsWith('d') ? 'L1' : 'L2', ...(id.startsWith('d') ? { site: 's1' } : {}) },
          {
            actor: 'test',
          },
        );
      // d0..d5 connected on mosquitto; d6..d9 left 3 hours ago; e0..e2 left 2 days ago; e3 is on emqx only; e4 on both.
      for (let i = 0; i < 10; i++) svc.presence.observe(connect('mosquitto', `d${i}`, ago(5 * 60 * MIN)));
      for (let i = 6; i < 10; i++) svc.presence.observe(disconnect('mosquitto', `d${i}`, ago(3 * 60 * MIN)));
      for (let i = 0; i < 3; i++) {
        svc.presence.observe(connect('mosquitto', `e${i}`, ago(50 * 60 * MIN)));
        svc.presence.observe(disconnect('mosquitto', `e${i}`, ago(48 * 60 * MIN)));
      }
      svc.presence.observe(connect('emqx', 'e3', ago(10 * MIN)));
      svc.presence.observe(connect('emqx', 'e4', ago(10 * MIN)));
      svc.presence.observe(connect('mosquitto', 'e4', ago(100 * 60 * MIN)));
      svc.presence.observe(disconnect('mosquitto', 'e4', ago(99 * 60 * MIN)));
      svc.presence.observe(connect('mosquitto', 'rogue-client', ago(MIN))); // no device
      await svc.presence.flush();
    });
    after(async () => svc?.dispose());

    /** Every id the list gives for this query, walking the cursor `limit` at a time. */
    async function listAll(query: Record<string, string>, limit = 3): Promise<string[]> {
      const out: string[] = [];
      let cursor: string | null = null;
      for (let pages = 0; pages < 50; pages++) {
        const res = await api
          .get('/v1/devices')
          .query({ ...query, limit: String(limit), ...(cursor ? { cursor } : {}) })
          .set(auth('auditor'))
          .expect(200);
        const body = res.body as { items: { id: string }[]; nextCursor: string | null };
        assert.ok(body.items.length <= limit);
        out.push(...body.items.map((d) => d.id));
        cursor = body.nextCursor;
        if (!cursor) return out.sort();
      }
      throw new Error('the cursor never ended');
    }

    it('GET /v1/devices/{id} carries the presence on every broker it was seen on, and [] when never seen', async () => {
      const e4 = (await api.get('/v1/devices/e4').set(auth('provisioner')).expect(200)).body;
      assert.deepEqual(
        e4.presence.map((p: { broker: string; connected: boolean }) => [p.broker, p.connected]),
        [
          ['emqx', true],
          ['mosquitto', false],
        ],
      );
      const onMosquitto = e4.presence[1];
      assert.equal(onMosquitto.lastConnectAt, ago(100 * 60 * MIN).toISOString());
      assert.equal(onMosquitto.lastDisconnectAt, ago(99 * 60 * MIN).toISOString());
      assert.equal(onMosquitto.lastDisconnectReason, 'connection-lost');
      assert.deepEqual(onMosquitto.source, { host: '192.0.2.7', port: 51000 });
      assert.equal(onMosquitto.clientId, 'e4-c');
      assert.equal(onMosquitto.username, 'e4');
      assert.equal(onMosquitto.protocol, 'mqtt3.1.1');
      assert.equal(onMosquitto.sessions, 1);
      assert.deepEqual((await api.get('/v1/devices/never0').set(auth('auditor')).expect(200)).body.presence, []);
      // The list keeps its shape: no presence there.
      const listed = (await api.get('/v1/devices').query({ lot: 'L2' }).set(auth('auditor')).expect(200)).body.items;
      assert.ok(listed.every((d: object) => !('presence' in d)));
    });

    it('filters the list by connected, broker and silentSince, the cursor walking each to its end', async () => {
      assert.deepEqual(await listAll({ connected: 'true' }), ['d0', 'd1', 'd2', 'd3', 'd4', 'd5', 'e3', 'e4']);
      assert.deepEqual(await listAll({ connected: 'false' }), ['d6', 'd7', 'd8', 'd9', 'e0', 'e1', 'e2', 'never0']);
      assert.deepEqual(await listAll({ connected: 'true', broker: 'mosquitto' }), ['d0', 'd1', 'd2', 'd3', 'd4', 'd5']);
      assert.deepEqual(await listAll({ connected: 'false', broker: 'mosquitto' }), ['d6', 'd7', 'd8', 'd9', 'e0', 'e1', 'e2', 'e4']);
      assert.deepEqual(await listAll({ broker: 'emqx' }), ['e3', 'e4']);
      // Silent for an hour: left 3 h and 48 h ago; e4 is connected on emqx, never0 was never seen.
      assert.deepEqual(await listAll({ silentSince: ago(60 * MIN).toISOString() }), ['d6', 'd7', 'd8', 'd9', 'e0', 'e1', 'e2']);
      assert.deepEqual(await listAll({ silentSince: ago(24 * 60 * MIN).toISOString() }), ['e0', 'e1', 'e2']);
      assert.deepEqual(await listAll({ silentSince: ago(24 * 60 * MIN).toISOString(), broker: 'mosquitto' }), ['e0', 'e1', 'e2', 'e4']);
      assert.deepEqual(await listAll({ silentSince: ago(60 * MIN).toISOString(), lot: 'L2' }, 1), ['e0', 'e1', 'e2']);
      assert.deepEqual(await listAll({ connected: 'true', broker: 'nowhere' }), []);
    });

    it('GET /v1/bus/map: per broker, devices by site and lot with counts, unregistered identities apart', async () => {
      const map = (await api.get('/v1/bus/map').set(auth('operator')).expect(200)).body;
      assert.deepEqual(
        map.brokers.map((b: { broker: string }) => b.broker),
        ['emqx', 'mosquitto'],
      );
      const [emqx, mosquitto] = map.brokers;
      assert.deepEqual(emqx, {
        broker: 'emqx',
        connected: 2,
        seen24h: 2,
        known: 2,
        groups: [{ site: null, lot: 'L2', connected: 2, seen24h: 2, known: 2 }],
        unregistered: { connected: 0, seen24h: 0, known: 0 },
      });
      assert.deepEqual(mosquitto, {
        broker: 'mosquitto',
        connected: 7,
        seen24h: 11,
        known: 15,
        groups: [
          { site: 's1', lot: 'L1', connected: 6, seen24h: 10, known: 10 },
          { site: null, lot: 'L2', connected: 0, seen24h: 0, known: 4 },
        ],
        unregistered: { connected: 1, seen24h: 1, known: 1 },
      });
      assert.equal(Date.parse(map.at) - Date.parse(map.seenSince), 24 * 60 * MIN);
    });

    it('the map and the presence are read by the roles that read devices, and by no one without a key', async () => {
      for (const role of ['admin', 'operator', 'provisioner', 'auditor'] as const) {
        await api.get('/v1/bus/map').set(auth(role)).expect(200);
        await api.get('/v1/devices').query({ connected: 'true' }).set(auth(role)).expect(200);
      }
      assertProblem(await api.get('/v1/bus/map'), 401);
      assertProblem(await api.get('/v1/devices').query({ connected: 'true' }), 401);
    });

    it('answers bad filter values with 400 problem+json, never a 500', async () => {
      for (const query of [
        { connected: 'maybe' },
        { connected: '' },
        { silentSince: 'yesterday' },
        { silentSince: '2026-13-45T00:00:00Z' },
        { broker: '' },
        { broker: 'x'.repeat(129) },
        { broker: 'a\u0000b' },
        { bogus: '1' },
      ]) {
        assertProblem(await api.get('/v1/devices').query(query).set(auth('auditor')), 400);
      }
      assertProblem(await api.get('/v1/bus/map').query({ seenSince: 'x' }).set(auth('auditor')), 400);
    });
  });
}
