import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { ApiKeyService, ROLES } from '../../src/access/api-keys.js';
import { AuditLog } from '../../src/audit/audit-log.js';
import { ManualClock } from '../../src/shared/clock.js';
import { ApiKeyStore } from '../../src/store/api-key-store.js';
import { AuditStore } from '../../src/store/audit-store.js';
import type { Db } from '../../src/store/db.js';
import { dbTargets, disposeDb } from '../helpers/db.js';

const ADMIN = { actor: 'api-key:ak_root', requestId: 'req-1', role: 'admin' as const };

for (const target of dbTargets) {
  describe(`api keys on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    let clock: ManualClock;
    let audit: AuditLog;
    let keys: ApiKeyService;

    before(async () => {
      db = await target.create();
      clock = new ManualClock(new Date('2026-05-01T12:00:00Z'));
      audit = new AuditLog(new AuditStore(db), randomBytes(32), clock);
      keys = new ApiKeyService(db, new ApiKeyStore(), audit, clock);
    });
    after(async () => {
      if (db) await disposeDb(db);
    });

    const storedRow = async (id: string) => db('api_keys').select('id', 'secret_hash', 'revoked_at', 'last_used_at').where({ id }).first();

    const auditFor = async (id: string) => (await audit.list({ limit: 100, targetType: 'api-key', targetId: id })).items;

    it('create returns the key once; list never shows the secret or its hash', async () => {
      const k = await keys.create({ name: 'fleet provisioning', role: 'provisioner' }, ADMIN);
      assert.match(k.id, /^ak_[0-9a-f]{20}$/);
      assert.match(k.key, /^mqca_ak_[0-9a-f]{20}_[A-Za-z0-9_-]{43}$/);
      assert.ok(k.key.startsWith(`mqca_${k.id}_`));
      assert.deepEqual(
        { name: k.name, role: k.role, createdAt: k.createdAt },
        { name: 'fleet provisioning', role: 'provisioner', createdAt: '2026-05-01T12:00:00.000Z' },
      );

      const listed = (await keys.list()).find((x) => x.id === k.id);
      assert.deepEqual(listed, {
        id: k.id,
        name: 'fleet provisioning',
        role: 'provisioner',
        createdAt: '2026-05-01T12:00:00.000Z',
        createdBy: ADMIN.actor,
        createdByKey: null,
        revokedAt: null,
        lastUsedAt: null,
      });
      const secret = k.key.slice(`mqca_${k.id}_`.length);
      const row = await storedRow(k.id);
      const hash = Buffer.from(row.secret_hash as Uint8Array);
      const json = JSON.stringify(await keys.list());
      assert.ok(!json.includes(secret));
      assert.ok(!json.includes(hash.toString('hex')));
      assert.ok(!json.includes(hash.toString('base64')));
      assert.ok(!json.toLowerCase().includes('hash'));

      // the stored hash is not the secret (nor the key), but the key's SHA-256
      assert.equal(hash.length, 32);
      assert.ok(!hash.equals(Buffer.from(secret, 'base64url')));
      assert.ok(!hash.toString('utf8').includes(secret));
      assert.ok(hash.equals(createHash('sha256').update(k.key).digest()));

      // audited in the same transaction, without the secret
      const entries = await auditFor(k.id);
      assert.equal(entries.length, 1);
      assert.deepEqual(
        [entries[0]!.action, entries[0]!.actor, entries[0]!.requestId, entries[0]!.details],
        ['apikey.created', ADMIN.actor, 'req-1', { name: 'fleet provisioning', role: 'provisioner' }],
      );
      assert.ok(!JSON.stringify(entries).includes(secret));
      assert.equal((await audit.verify(db)).ok, true);
    });

    it('two keys never share a secret', async () => {
      const a = await keys.create({ name: 'a', role: 'auditor' }, ADMIN);
      const b = await keys.create({ name: 'b', role: 'auditor' }, ADMIN);
      assert.notEqual(a.id, b.id);
      assert.notEqual(a.key.slice(-43), b.key.slice(-43));
    });

    it('create refuses a bad name or role', async () => {
      await assert.rejects(keys.create({ name: '  ', role: 'admin' }, ADMIN), { kind: 'BadRequest' });
      await assert.rejects(keys.create({ name: 'x'.repeat(101), role: 'admin' }, ADMIN), { kind: 'BadRequest' });
      await assert.rejects(keys.create({ name: 'ok', role: 'root' as never }, ADMIN), { kind: 'BadRequest' });
    });

    it('authenticate: the right key passes; a wrong secret, unknown id, garbage or empty key does not', async () => {
      const k = await keys.create({ name: 'ops', role: 'operator' }, ADMIN);
      assert.deepEqual(await keys.authenticate(k.key), { id: k.id, name: 'ops', role: 'operator' });

      const prefix = `mqca_${k.id}_`;
      const secret = k.key.slice(prefix.length);
      const flipped = (secret[0] === 'A' ? 'B' : 'A') + secret.slice(1);
      const otherId = `ak_${'0'.repeat(20)}`;
      for (const bad of [
        prefix + flipped, // wrong secret
        prefix + randomBytes(32).toString('base64url'), // wrong secret
        prefix + secret.slice(0, -1), // truncated
        k.key + 'A', // extended
        `mqca_${otherId}_${secret}`, // unknown id, right secret
        `mqca_${k.id}`, // no secret
        k.key.toUpperCase(),
        secret, // the secret alone
        'garbage',
        'mqca___',
        '',
        ' ',
        `${k.key} `,
        'x'.repeat(10_000),
        '\u0000'.repeat(10),
        'ключ',
      ]) {
        assert.equal(await keys.authenticate(bad), undefined, `accepted ${JSON.stringify(bad.slice(0, 80))}`);
      }
    });

    it('last_used_at is written at most once a minute', async () => {
      const k = await keys.create({ name: 'busy', role: 'operator' }, ADMIN);
      const t0 = clock.now();
      await keys.authenticate(k.key);
      assert.equal(new Date((await storedRow(k.id)).last_used_at).toISOString(), t0.toISOString());
      clock.advance(30_000);
      await keys.authenticate(k.key);
      assert.equal(new Date((await storedRow(k.id)).last_used_at).toISOString(), t0.toISOString());
      clock.advance(31_000);
      await keys.authenticate(k.key);
      const t2 = clock.now();
      assert.equal(new Date((await storedRow(k.id)).last_used_at).toISOString(), t2.toISOString());
      assert.equal((await keys.list()).find((x) => x.id === k.id)!.lastUsedAt, t2.toISOString());
      // a failed attempt does not touch it
      clock.advance(120_000);
      await keys.authenticate(`mqca_${k.id}_${randomBytes(32).toString('base64url')}`);
      assert.equal(new Date((await storedRow(k.id)).last_used_at).toISOString(), t2.toISOString());
    });

    it('no role revokes a key of a role above it, and the last active admin key is never revoked, even by two revocations at once', async () => {
      const op = await keys.create({ name: 'rank operator', role: 'operator' }, ADMIN);
      const prov = await keys.create({ name: 'rank provisioner', role: 'provisioner' }, ADMIN);
      const adminA = await keys.create({ name: 'rank admin a', role: 'admin' }, ADMIN);
      const adminB = await keys.create({ name: 'rank admin b', role: 'admin' }, ADMIN);
      const asOperator = { actor: `api-key:${op.id}`, role: 'operator' as const };
      await assert.rejects(keys.revoke(adminA.id, asOperator), {
        kind: 'Forbidden',
        message: /operator role may not revoke keys of a role above it/,
      });
      await assert.rejects(keys.checkRevocable([prov.id, adminA.id], 'operator'), { kind: 'Forbidden' });
      await assert.rejects(keys.revokeAll([prov.id, adminA.id], asOperator), { kind: 'Forbidden' });
      assert.equal((await keys.list()).find((k) => k.id === prov.id)!.revokedAt, null, 'all or nothing');
      assert.ok((await keys.revoke(prov.id, asOperator)).revokedAt); // peers may
      // Every other admin key revoked first, so that A and B are the last two.
      for (const k of await keys.list())
        if (k.role === 'admin' && k.revokedAt === null && k.id !== adminA.id && k.id !== adminB.id) await keys.revoke(k.id, ADMIN);
      await assert.rejects(keys.checkRevocable([adminA.id, adminB.id], 'admin'), { kind: 'Conflict', message: /last active admin key/ });
      const both = await Promise.allSettled([keys.revoke(adminA.id, ADMIN), keys.revoke(adminB.id, ADMIN)]);
      assert.deepEqual(both.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
      assert.equal((both.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason.kind, 'Conflict');
      assert.equal((await keys.list()).filter((k) => k.role === 'admin' && k.revokedAt === null).length, 1);
    });

    it('records which key made each key, and answers its lineage nearest first', async () => {
      const a = await keys.create({ name: 'lineage a', role: 'admin' }, { actor: 'cli:root' });
      clock.advance(1000);
      const b = await keys.create({ name: 'lineage b', role: 'admin' }, { actor: `api-key:${a.id}`, keyId: a.id });
      const c = await keys.create({ name: 'lineage c', role: 'operator' }, { actor: `api-key:${b.id}`, keyId: b.id });
      assert.deepEqual(await keys.lineage(c.id), { createdAt: clock.now(), ancestors: [b.id, a.id] });
      assert.deepEqual((await keys.lineage(a.id))?.ancestors, []);
      assert.equal(await keys.lineage('ak_00000000000000000000'), undefined);
      assert.equal((await keys.list()).find((k) => k.id === b.id)?.createdByKey, a.id);
    });

    it('revoke: the key stops working; revoking again is fine and audited once; unknown id is NotFound', async () => {
      const k = await keys.create({ name: 'temp', role: 'operator' }, ADMIN);
      assert.ok(await keys.authenticate(k.key));
      clock.advance(5_000);
      const revokedAt = clock.now().toISOString();
      const r1 = await keys.revoke(k.id, { actor: 'api-key:ak_other', requestId: 'req-9', role: 'admin' });
      assert.equal(r1.revokedAt, revokedAt);
      assert.equal(await keys.authenticate(k.key), undefined);

      clock.advance(5_000);
      const r2 = await keys.revoke(k.id, ADMIN);
      assert.equal(r2.revokedAt, revokedAt); // unchanged
      assert.equal((await keys.list()).find((x) => x.id === k.id)!.revokedAt, revokedAt);

      const entries = await auditFor(k.id);
      assert.deepEqual(
        entries.map((e) => e.action),
        ['apikey.revoked', 'apikey.created'],
      );
      assert.deepEqual(
        [entries[0]!.actor, entries[0]!.requestId, entries[0]!.details],
        ['api-key:ak_other', 'req-9', { name: 'temp', role: 'operator' }],
      );

      await assert.rejects(keys.revoke('ak_00000000000000000000', ADMIN), { name: 'DomainError', kind: 'NotFound' });
      await assert.rejects(keys.revoke('not-even-an-id', ADMIN), { kind: 'NotFound' });
      assert.equal((await audit.verify(db)).ok, true);
    });

    it('a failed audit append rolls the change back (one transaction)', async () => {
      const before = (await keys.list()).length;
      const broken = new AuditLog(new AuditStore(db), randomBytes(32), clock);
      broken.append = async () => {
        throw new Error('injected audit failure');
      };
      const failing = new ApiKeyService(db, new ApiKeyStore(), broken, clock);
      await assert.rejects(failing.create({ name: 'never', role: 'auditor' }, ADMIN), /injected audit failure/);
      assert.equal((await keys.list()).length, before);

      const k = await keys.create({ name: 'stays', role: 'auditor' }, ADMIN);
      await assert.rejects(failing.revoke(k.id, ADMIN), /injected audit failure/);
      assert.equal((await keys.list()).find((x) => x.id === k.id)!.revokedAt, null);
      assert.ok(await keys.authenticate(k.key));
    });

    describe('ensureKey (ADMIN_API_KEY)', () => {
      const SYSTEM = { actor: 'system' };

      it('registers a configured key of any format once; it authenticates; a second call changes nothing', async () => {
        const configured = 'correct-horse-battery-staple-0123456789';
        const first = await keys.ensureKey(configured, 'admin', 'ADMIN_API_KEY', SYSTEM);
        assert.deepEqual(first, { id: first.id, created: true, revoked: false });
        assert.match(first.id, /^ak_[0-9a-f]{20}$/);
        const second = await keys.ensureKey(configured, 'admin', 'ADMIN_API_KEY', SYSTEM);
        assert.deepEqual(second, { id: first.id, created: false, revoked: false });

        assert.deepEqual(await keys.authenticate(configured), { id: first.id, name: 'ADMIN_API_KEY', role: 'admin' });
        assert.equal(await keys.authenticate(configured.slice(0, -1)), undefined);
        assert.equal((await keys.list()).filter((x) => x.id === first.id).length, 1);
        const entries = await auditFor(first.id);
        assert.deepEqual(
          entries.map((e) => e.action),
          ['apikey.created'],
        );
        assert.ok(!JSON.stringify(entries).includes(configured));
        const row = await storedRow(first.id);
        assert.ok(
          !Buffer.from(row.secret_hash as Uint8Array)
            .toString('utf8')
            .includes(configured),
        );

        // a service built afresh (a restart) maps the same key to the same id
        const again = new ApiKeyService(db, new ApiKeyStore(), audit, clock);
        assert.deepEqual(await again.ensureKey(configured, 'admin', 'ADMIN_API_KEY', SYSTEM), second);
      });

      it('concurrent ensureKey calls register the key once', async () => {
        const configured = randomBytes(24).toString('hex');
        const results = await Promise.all(Array.from({ length: 5 }, () => keys.ensureKey(configured, 'admin', 'ADMIN_API_KEY', SYSTEM)));
        assert.equal(results.filter((r) => r.created).length, 1);
        assert.equal(new Set(results.map((r) => r.id)).size, 1);
        assert.equal((await auditFor(results[0]!.id)).length, 1);
      });

      it('keeps the id of a configured key in the issued format', async () => {
        const id = `ak_${randomBytes(10).toString('hex')}`;
        const key = `mqca_${id}_${randomBytes(32).toString('base64url')}`;
        assert.deepEqual(await keys.ensureKey(key, 'admin', 'ADMIN_API_KEY', SYSTEM), { id, created: true, revoked: false });
        assert.equal((await keys.authenticate(key))?.id, id);
        // the same id with another secret is a conflict, not a silent replacement
        const other = `mqca_${id}_${randomBytes(32).toString('base64url')}`;
        await assert.rejects(keys.ensureKey(other, 'admin', 'ADMIN_API_KEY', SYSTEM), { kind: 'Conflict' });
        assert.equal(await keys.authenticate(other), undefined);
      });

      it('a revoked configured key stays revoked', async () => {
        const configured = randomBytes(24).toString('base64url');
        const { id } = await keys.ensureKey(configured, 'admin', 'ADMIN_API_KEY', SYSTEM);
        await keys.revoke(id, ADMIN);
        assert.deepEqual(await keys.ensureKey(configured, 'admin', 'ADMIN_API_KEY', SYSTEM), { id, created: false, revoked: true });
        assert.equal(await keys.authenticate(configured), undefined);
      });

      it('refuses a short or unprintable configured key', async () => {
        await assert.rejects(keys.ensureKey('short', 'admin', 'ADMIN_API_KEY', SYSTEM), { kind: 'BadRequest' });
        await assert.rejects(keys.ensureKey(`${'a'.repeat(40)} b`, 'admin', 'ADMIN_API_KEY', SYSTEM), { kind: 'BadRequest' });
      });
    });

    it('every role can be created and authenticates with its role', async () => {
      for (const role of ROLES) {
        const k = await keys.create({ name: `r-${role}`, role }, ADMIN);
        assert.equal((await keys.authenticate(k.key))?.role, role);
      }
      assert.equal((await audit.verify(db)).ok, true);
    });
  });
}
