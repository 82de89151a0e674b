import assert from 'node:assert/strict';
import { randomBytes, sign } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { bootstrap } from '../../src/bootstrap.js';
import { unseal, UnsealError } from '../../src/ca/envelope.js';
import { parseKek } from '../../src/ca/kek.js';
import { fromPemAll } from '../../src/ca/x509/pem.js';
import type { Service } from '../../src/main.js';
import { sessionKeysSigningInput } from '../../src/enroll/device-certificate-auth.js';
import type { SessionKeyView } from '../../src/rotate/session-key-series.js';
import { ManualClock } from '../../src/shared/clock.js';
import { DomainError } from '../../src/shared/errors.js';
import { SessionKeyStore } from '../../src/store/session-key-store.js';
import { p256Csr, type TestCsr } from '../helpers/csr.js';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';

const CTX = { actor: 'api-key:ak_test', requestId: 'req-session-keys' };
const HOUR = 3_600_000;

async function rejectsWith(kind: DomainError['kind'], f: () => Promise<unknown>, re?: RegExp): Promise<void> {
  try {
    await f();
  } catch (e) {
    assert.ok(e instanceof DomainError, `expected a DomainError, got ${String(e)}`);
    assert.equal(e.kind, kind, e.message);
    if (re) assert.match(e.message, re);
    return;
  }
  assert.fail(`expected ${kind}`);
}

interface TestDevice {
  id: string;
  csr: TestCsr;
  serial: string;
  der: Buffer;
}

for (const target of dbTargets) {
  describe(`session keys on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    const clock = new ManualClock(new Date());
    const kekText = randomBytes(32).toString('base64');
    const kek = parseKek(kekText, 'test');
    const store = new SessionKeyStore();
    const devices = new Map<string, TestDevice>();

    before(async () => {
      svc = await makeService(target, {
        clock,
        env: { MQTT_CA_KEK: kekText, SESSION_KEY_PERIOD_HOURS: '4', SESSION_KEY_OVERLAP_HOURS: '1' },
      });
      await bootstrap(svc);
    });
    after(async () => svc?.dispose());

    /** A registered device with an issued P-256 certificate (active). */
    async function device(id: string): Promise<TestDevice> {
      await svc.devices.register({ id }, CTX);
      const csr = p256Csr(id);
      const issued = await svc.operatorIssuance.issueFromCsr({ profile: 'device', deviceId: id, csr: csr.pem }, CTX);
      const d = { id, csr, serial: issued.serial, der: fromPemAll(issued.certificate)[0]! };
      devices.set(id, d);
      return d;
    }
    const fetchAs = (d: TestDevice) => {
      const signedAt = clock.now().toISOString();
      return svc.sessionKeys.fetch({
        kind: 'signed',
        certificateDer: d.der,
        signedAt,
        signature: sign('sha256', sessionKeysSigningInput(signedAt), d.csr.privateKey),
      });
    };
    const versions = async (scope: 'channel' | 'device', owner: string): Promise<SessionKeyView[]> =>
      (scope === 'channel'
        ? await svc.sessionKeys.channelKeys(owner, { limit: 100 })
        : await svc.sessionKeys.deviceKeys(owner, { limit: 100 })
      ).items;
    const rawKey = async (id: string) => {
      const row = (await store.getSealed(svc.db, id))!;
      return unseal(kek, row, id);
    };

    it('a new channel starts at version 1, sealed under the KEK: not the key in the ciphertext, nowhere in the database, unreadable with another KEK', async () => {
      const ch = await svc.sessionKeys.createChannel({ name: 'sealed-1', topicTree: 'plant/1/#' }, CTX);
      assert.equal(ch.currentVersion, 1);
      assert.equal(ch.periodSeconds, 4 * 3600, 'the configured default period');
      assert.equal(ch.overlapSeconds, 3600);
      const [v1] = await versions('channel', 'sealed-1');
      assert.equal(v1!.status, 'current');
      assert.equal(v1!.origin, 'created');
      assert.equal(Date.parse(v1!.rotateAt) - Date.parse(v1!.notBefore), 4 * HOUR);
      assert.equal(Date.parse(v1!.notAfter) - Date.parse(v1!.rotateAt), HOUR);
      const row = (await store.getSealed(svc.db, v1!.id))!;
      assert.equal(row.kekId, kek.id);
      const key = unseal(kek, row, v1!.id);
      assert.equal(key.length, 32);
      assert.ok(!row.ciphertext.includes(key) && !row.wrappedDek.includes(key));
      for (const table of ['session_keys', 'channels', 'audit_log', 'settings']) {
        for (const r of (await svc.db.raw(`select * from ${table}`)).rows as Record<string, unknown>[]) {
          for (const v of Object.values(r)) {
            const bytes = v instanceof Uint8Array ? Buffer.from(v) : Buffer.from(JSON.stringify(v ?? null));
            for (const form of [
              key,
              Buffer.from(key.toString('base64')),
              Buffer.from(key.toString('hex')),
              Buffer.from(key.toString('base64url')),
            ]) {
              assert.ok(!bytes.includes(form), `key material in ${table}`);
            }
          }
        }
      }
      const other = parseKek(randomBytes(32).toString('base64'), 'other');
      assert.throws(() => unseal(other, row, v1!.id), UnsealError);
      assert.throws(() => unseal({ id: kek.id, key: other.key }, row, v1!.id), UnsealError, 'a different key under the same id');
      assert.throws(() => unseal(kek, row, 'sk_another_row'), UnsealError, 'bound to its row id');
      const audit = await svc.audit.list({ limit: 10, targetType: 'channel', targetId: 'sealed-1' });
      assert.deepEqual(audit.items.map((e) => e.action).sort(), ['channel.created', 'session-key.created']);
    });

    it('rotateDue makes the next version only once rotate_at has passed; the old one stays valid through the overlap; repeating changes nothing', async () => {
      await svc.sessionKeys.createChannel({ name: 'rot-1', topicTree: 'rot/1/#', periodSeconds: 3600, overlapSeconds: 600 }, CTX);
      const [v1] = await versions('channel', 'rot-1');
      await svc.sessionKeys.rotateDue();
      assert.equal((await versions('channel', 'rot-1')).length, 1, 'not due yet');
      clock.set(new Date(Date.parse(v1!.rotateAt) + 1000));
      const first = await svc.sessionKeys.rotateDue();
      assert.ok(first.rotated >= 1);
      assert.deepEqual(await svc.sessionKeys.rotateDue(), { rotated: 0 }, 'idempotent');
      const [v2, old] = await versions('channel', 'rot-1');
      assert.equal(v2!.version, 2);
      assert.equal(v2!.status, 'current');
      assert.equal(v2!.origin, 'scheduled');
      assert.equal(v2!.notBefore, clock.now().toISOString());
      assert.equal(old!.version, 1);
      assert.equal(old!.status, 'previous');
      assert.equal(old!.notAfter, v1!.notAfter, 'valid until the end of its overlap, unchanged');
      assert.notDeepEqual(await rawKey(v2!.id), await rawKey(old!.id));
      clock.set(new Date(Date.parse(v1!.notAfter) + 1));
      assert.equal((await versions('channel', 'rot-1'))[1]!.status, 'expired');
      const audit = await svc.audit.list({ limit: 5, targetType: 'channel', targetId: 'rot-1', action: 'session-key.rotated' });
      assert.equal(audit.items.length, 1);
      assert.equal(audit.items[0]!.actor, 'system:session-key-rotation');
      assert.equal((audit.items[0]!.details.previous as { version: number }).version, 1);
    });

    it('a manual rotation keeps the old version for the overlap at most; an immediate one revokes it', async () => {
      await svc.sessionKeys.createChannel({ name: 'manual-1', topicTree: 'manual/#', periodSeconds: 7200, overlapSeconds: 900 }, CTX);
      const v2 = await svc.sessionKeys.rotateChannel('manual-1', {}, CTX);
      assert.equal(v2.version, 2);
      const [, v1] = await versions('channel', 'manual-1');
      assert.equal(Date.parse(v1!.notAfter), clock.now().getTime() + 900_000, 'cut to now + overlap');
      const v3 = await svc.sessionKeys.rotateChannel('manual-1', { immediate: true }, CTX);
      const all = await versions('channel', 'manual-1');
      assert.deepEqual(
        all.map((k) => [k.version, k.status]),
        [
          [3, 'current'],
          [2, 'revoked'],
          [1, 'revoked'],
        ],
      );
      assert.equal(all[1]!.reason, 'rotated-immediately');
      assert.equal(all[1]!.notAfter, clock.now().toISOString());
      assert.equal(v3.origin, 'manual');
      await rejectsWith('NotFound', () => svc.sessionKeys.rotateChannel('no-such-channel', {}, CTX));
    });

    it('two concurrent rotateDue calls make each due version exactly once (device and channel series)', async () => {
      const names = Array.from({ length: 25 }, (_, i) => `conc-${String(i).padStart(2, '0')}`);
      for (const name of names)
        await svc.sessionKeys.createChannel({ name, topicTree: `conc/${name}/#`, periodSeconds: 600, overlapSeconds: 60 }, CTX);
      const ds = [await device('conc-dev-1'), await device('conc-dev-2'), await device('conc-dev-3')];
      for (const d of ds) await fetchAs(d); // starts each device's own series
      // Everything that exists is due after the longest period (4 h for devices).
      clock.advance(4 * HOUR + 1000);
      const due = Number(
        (await svc.db('session_keys').whereNull('superseded_at').andWhere('rotate_at', '<=', clock.now()).count({ n: 'id' }))[0]!.n,
      );
      const before = Number((await svc.db('session_keys').count({ n: 'id' }))[0]!.n);
      const [a, b] = await Promise.all([svc.sessionKeys.rotateDue(), svc.sessionKeys.rotateDue()]);
      assert.equal(a.rotated + b.rotated, due, `rotated ${a.rotated} + ${b.rotated}`);
      assert.deepEqual(await svc.sessionKeys.rotateDue(), { rotated: 0 });
      assert.equal(Number((await svc.db('session_keys').count({ n: 'id' }))[0]!.n), before + due);
      // The channels' 10-minute versions ended long ago (a late scheduler); the devices' are in their overlap.
      for (const name of names)
        assert.deepEqual(
          (await versions('channel', name)).map((k) => [k.version, k.status]),
          [
            [2, 'current'],
            [1, 'expired'],
          ],
        );
      for (const d of ds)
        assert.deepEqual(
          (await versions('device', d.id)).map((k) => [k.version, k.status]),
          [
            [2, 'current'],
            [1, 'previous'],
          ],
        );
      const dup = await svc.db.raw(
        'select scope, owner from session_keys where superseded_at is null group by scope, owner having count(*) > 1',
      );
      assert.equal(dup.rows.length, 0);
    });

    it('a revoked member re-keys every channel it belongs to at once, and loses its own keys; superseded and release change nothing', async () => {
      const [a, b, c, d] = [await device('rev-a'), await device('rev-b'), await device('rev-c'), await device('rev-d')];
      await svc.sessionKeys.createChannel({ name: 'rev-7', topicTree: 'rev/7/#', members: [a.id, b.id] }, CTX);
      await svc.sessionKeys.createChannel({ name: 'rev-8', topicTree: 'rev/8/#', members: [b.id, c.id] }, CTX);
      await svc.sessionKeys.createChannel({ name: 'rev-9', topicTree: 'rev/9/#', members: [d.id] }, CTX);
      // rev-7 in its overlap: version 1 still valid beside version 2.
      await svc.sessionKeys.rotateChannel('rev-7', {}, CTX);
      for (const x of [a, b, c, d]) await fetchAs(x);
      clock.advance(1000);

      await svc.revocations.revoke(b.serial as never, { reason: 'keyCompromise' }, CTX);
      const now = clock.now().toISOString();
      const r7 = await versions('channel', 'rev-7');
      assert.deepEqual(
        r7.map((k) => [k.version, k.status, k.reason]),
        [
          [3, 'current', null],
          [2, 'revoked', 'member-revoked'],
          [1, 'revoked', 'member-revoked'],
        ],
      );
      assert.equal(r7[0]!.origin, 'member-revoked');
      assert.equal(r7[0]!.notBefore, now, 'effective at once');
      assert.ok(
        r7.slice(1).every((k) => k.notAfter === now && k.revokedAt === now),
        'no overlap',
      );
      assert.deepEqual(
        (await versions('channel', 'rev-8')).map((k) => [k.version, k.status]),
        [
          [2, 'current'],
          [1, 'revoked'],
        ],
      );
      assert.deepEqual(
        (await versions('channel', 'rev-9')).map((k) => [k.version, k.status]),
        [[1, 'current']],
        'a channel without the device is untouched',
      );
      assert.deepEqual(
        (await versions('device', b.id)).map((k) => [k.status, k.reason]),
        [['revoked', 'device-revoked']],
      );
      assert.deepEqual(
        (await versions('device', a.id)).map((k) => k.status),
        ['current'],
      );
      await rejectsWith('Forbidden', () => fetchAs(b), /revoked/);
      // The remaining member gets the new version only.
      const got = await fetchAs(a);
      assert.deepEqual(
        got.keys.filter((k) => k.scope === 'channel').map((k) => [k.channel, k.version]),
        [['rev-7', 3]],
      );
      const audit = await svc.audit.list({ limit: 20, actor: 'system:revocation' });
      assert.ok(audit.items.some((e) => e.action === 'session-key.rotated' && e.targetId === 'rev-8'));
      assert.ok(audit.items.some((e) => e.action === 'session-key.revoked' && e.targetType === 'device' && e.targetId === b.id));

      // superseded: a routine replacement, no re-keying.
      await svc.revocations.revoke(c.serial as never, { reason: 'superseded' }, CTX);
      assert.equal((await versions('channel', 'rev-8'))[0]!.version, 2);
      // A hold re-keys too; its release does not.
      await svc.revocations.revoke(d.serial as never, { reason: 'certificateHold' }, CTX);
      assert.deepEqual(
        (await versions('channel', 'rev-9')).map((k) => [k.version, k.status]),
        [
          [2, 'current'],
          [1, 'revoked'],
        ],
      );
      await rejectsWith('Forbidden', () => fetchAs(d), /on hold/);
      await svc.revocations.release(d.serial as never, CTX);
      assert.equal((await versions('channel', 'rev-9'))[0]!.version, 2);
      // Back in trust: its own series starts again, at the next version.
      const again = await fetchAs(d);
      assert.deepEqual(
        again.keys.map((k) => [k.scope, k.version]),
        [
          ['device', 2],
          ['channel', 2],
        ],
      );
    });

    it('all or nothing: when re-keying fails, the revocation rolls back with it', async () => {
      const x = await device('fault-x');
      await svc.sessionKeys.createChannel({ name: 'fault-1', topicTree: 'fault/#', members: [x.id] }, CTX);
      const inner = (svc.sessionKeys as unknown as { store: SessionKeyStore }).store;
      const original = inner.insertNext;
      inner.insertNext = async () => {
        throw new Error('injected failure');
      };
      try {
        await assert.rejects(svc.revocations.revoke(x.serial as never, { reason: 'keyCompromise' }, CTX), /injected failure/);
      } finally {
        inner.insertNext = original;
      }
      assert.equal((await svc.certificates.get(x.serial as never)).status, 'issued', 'not revoked');
      assert.equal((await svc.devices.get(x.id)).status, 'active');
      assert.deepEqual(
        (await versions('channel', 'fault-1')).map((k) => [k.version, k.status]),
        [[1, 'current']],
      );
      await svc.revocations.revoke(x.serial as never, { reason: 'keyCompromise' }, CTX);
      assert.deepEqual(
        (await versions('channel', 'fault-1')).map((k) => [k.version, k.status]),
        [
          [2, 'current'],
          [1, 'revoked'],
        ],
      );
    });

    it('removing a member replaces the channel key at once; members must be existing devices', async () => {
      const [a, b] = [await device('mem-a'), await device('mem-b')];
      await svc.sessionKeys.createChannel({ name: 'mem-1', topicTree: 'mem/1/+/status' }, CTX);
      const added = await svc.sessionKeys.addMembers('mem-1', [a.id, b.id, a.id], CTX);
      assert.deepEqual(added.added.sort(), [a.id, b.id]);
      assert.equal(added.channel.memberCount, 2);
      assert.deepEqual((await svc.sessionKeys.addMembers('mem-1', [a.id], CTX)).added, []);
      const members = await svc.sessionKeys.listMembers('mem-1', { limit: 1 });
      assert.equal(members.items.length, 1);
      assert.equal((await svc.sessionKeys.listMembers('mem-1', { limit: 1, cursor: members.nextCursor! })).items[0]!.deviceId, b.id);
      const out = await svc.sessionKeys.removeMember('mem-1', b.id, CTX);
      assert.equal(out.key.version, 2);
      assert.equal(out.key.origin, 'member-removed');
      assert.equal(out.channel.memberCount, 1);
      assert.equal((await versions('channel', 'mem-1'))[1]!.reason, 'member-removed');
      assert.deepEqual(
        (await fetchAs(b)).keys.map((k) => k.scope),
        ['device'],
        'no longer a member',
      );
      await rejectsWith('NotFound', () => svc.sessionKeys.removeMember('mem-1', b.id, CTX), /not a member/);
      await rejectsWith('NotFound', () => svc.sessionKeys.addMembers('mem-1', ['nobody-here'], CTX), /nobody-here/);
      await rejectsWith('NotFound', () => svc.sessionKeys.addMembers('no-channel', [a.id], CTX));
      await rejectsWith('NotFound', () => svc.sessionKeys.createChannel({ name: 'mem-2', topicTree: 'x', members: ['ghost'] }, CTX));
      assert.equal((await svc.db('channels').where({ name: 'mem-2' })).length, 0, 'nothing created');
      await svc.devices.register({ id: 'mem-gone' }, CTX);
      await svc.devices.decommission('mem-gone', CTX);
      await rejectsWith('Conflict', () => svc.sessionKeys.addMembers('mem-1', ['mem-gone'], CTX));
    });

    it('refuses bad channel input', async () => {
      await rejectsWith('BadRequest', () => svc.sessionKeys.createChannel({ name: '-bad', topicTree: 'a' }, CTX));
      await rejectsWith('BadRequest', () => svc.sessionKeys.createChannel({ name: 'ok-1', topicTree: 'a/#/b' }, CTX), /#/);
      await rejectsWith('BadRequest', () => svc.sessionKeys.createChannel({ name: 'ok-1', topicTree: 'a/b+' }, CTX), /\+/);
      await rejectsWith(
        'BadRequest',
        () => svc.sessionKeys.createChannel({ name: 'ok-1', topicTree: 'a', periodSeconds: 600, overlapSeconds: 600 }, CTX),
        /overlap/,
      );
      await rejectsWith(
        'BadRequest',
        () => svc.sessionKeys.createChannel({ name: 'ok-1', topicTree: 'a', periodSeconds: 5 }, CTX),
        /period/,
      );
      await svc.sessionKeys.createChannel({ name: 'ok-1', topicTree: 'a' }, CTX);
      await rejectsWith('Conflict', () => svc.sessionKeys.createChannel({ name: 'ok-1', topicTree: 'a' }, CTX));
      await rejectsWith('NotFound', () => svc.sessionKeys.getChannel('nope'));
      await rejectsWith('NotFound', () => svc.sessionKeys.deviceKeys('nobody', { limit: 10 }));
      await rejectsWith('BadRequest', () => svc.sessionKeys.listChannels({ limit: 10, cursor: '!!' }));
      await rejectsWith('BadRequest', () => svc.sessionKeys.listChannels({ limit: 0 }));
      const p1 = await svc.sessionKeys.listChannels({ limit: 2 });
      const p2 = await svc.sessionKeys.listChannels({ limit: 2, cursor: p1.nextCursor! });
      assert.ok(p2.items[0]!.name > p1.items[1]!.name);
    });
  });
}
