import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import type { Service } from '../../src/main.js';
import { DomainError, isDomainError } from '../../src/shared/errors.js';
import type { ApprovalActor } from '../../src/respond/approvals.js';
import { ManualClock } from '../../src/shared/clock.js';
import { ApiKeyStore } from '../../src/store/api-key-store.js';

const alice: ApprovalActor = { actor: 'api-key:ak_alice', requestId: 'req-1', keyId: 'ak_alice', name: 'Alice', role: 'operator' };
const alice2: ApprovalActor = { actor: 'api-key:ak_alice2', requestId: 'req-2', keyId: 'ak_alice2', name: ' alice ', role: 'admin' };
const bob: ApprovalActor = { actor: 'api-key:ak_bob', requestId: 'req-3', keyId: 'ak_bob', name: 'Bob', role: 'operator' };
const carol: ApprovalActor = { actor: 'api-key:ak_carol', requestId: 'req-4', keyId: 'ak_carol', name: 'Carol', role: 'admin' };
const dave: ApprovalActor = { actor: 'api-key:ak_dave', keyId: 'ak_dave', name: 'Dave', role: 'provisioner' };

/** Is `fn` rejected with a DomainError of this kind (and message)? */
async function rejectsWith(fn: () => Promise<unknown>, kind: DomainError['kind'], message?: RegExp) {
  await assert.rejects(fn, (e: unknown) => {
    assert.ok(isDomainError(e), `expected a DomainError, got ${String(e)}`);
    assert.equal(e.kind, kind, e.message);
    if (message) assert.match(e.message, message);
    return true;
  });
}

for (const target of dbTargets) {
  describe(`Approvals registry on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    const clock = new ManualClock(new Date('2026-05-01T00:00:00Z'));
    const runs: unknown[] = [];

    before(async () => {
      svc = await makeService(target, { clock, env: { APPROVAL_TTL_HOURS: '2' } });
      // An approver must be a key on record (its lineage is checked): the test's people are keys made by nobody, before the first proposal.
      const keys = new ApiKeyStore();
      for (const who of [alice, alice2, bob, carol, dave]) {
        await keys.insert(svc.db, {
          id: who.keyId,
          name: who.name,
          role: who.role,
          secretHash: Buffer.alloc(32),
          createdBy: 'test',
          createdByKey: null,
          createdAt: new Date('2026-01-01T00:00:00Z'),
        });
      }
      svc.approvals.register<{ n: number }, { doubled: number }>('test.ok', {
        roles: ['operator', 'admin'],
        async describe(p) {
          if (typeof p.n !== 'number') throw new DomainError('BadRequest', 'n must be a number');
          return { summary: `double ${p.n}`, targets: { n: p.n } };
        },
        async execute(p, ctx) {
          runs.push({ p, proposedBy: ctx.proposedBy.keyId, approvedBy: ctx.approvedBy.keyId, id: ctx.proposalId });
          return { doubled: p.n * 2 };
        },
      });
      svc.approvals.register('test.refused', {
        roles: ['operator', 'admin'],
        async describe() {
          return { summary: 'fails when run' };
        },
        async execute() {
          throw new DomainError('Conflict', 'the target changed meanwhile');
        },
      });
      svc.approvals.register('test.crash', {
        roles: ['operator', 'admin'],
        async describe() {
          return { summary: 'crashes when run' };
        },
        async execute() {
          throw new Error('connection reset: select secret from somewhere');
        },
      });
    });
    after(async () => svc?.dispose());

    const audit = async (id: string) =>
      (await svc.audit.list({ targetType: 'approval', targetId: id, limit: 100 })).items
        .reverse()
        .map((e) => ({ action: e.action, actor: e.actor, details: e.details }));

    it('registers each action once, with a well-formed name', () => {
      const ex = { roles: ['admin'] as const, describe: async () => ({ summary: '' }), execute: async () => null };
      assert.throws(() => svc.approvals.register('test.ok', ex), /registered already/);
      assert.throws(() => svc.approvals.register('Bad Name', ex), /lowercase/);
      assert.deepEqual(svc.approvals.actions(), [
        'ca.revoke',
        'incident.action',
        'incident.ca-recovery',
        'incident.reissue',
        'revocation.bulk',
        'test.crash',
        'test.ok',
        'test.refused',
      ]);
    });

    it('refuses unknown actions, invalid params and roles the action does not admit, storing nothing', async () => {
      await rejectsWith(() => svc.approvals.propose('test.nope', {}, alice), 'BadRequest', /not an action that takes approval/);
      await rejectsWith(() => svc.approvals.propose('test.ok', { n: 'x' }, alice), 'BadRequest', /n must be a number/);
      await rejectsWith(() => svc.approvals.propose('test.ok', { n: 1 }, dave), 'Forbidden', /provisioner role may not propose test.ok/);
      assert.equal((await svc.approvals.list({ limit: 100 })).items.length, 0);
    });

    it('runs an approved action once, with both people, and records its result', async () => {
      const p = await svc.approvals.propose('test.ok', { n: 21 }, alice, 'please');
      assert.equal(p.status, 'pending');
      assert.equal(p.summary, 'double 21');
      assert.deepEqual(p.proposedBy, { keyId: 'ak_alice', name: 'Alice', role: 'operator' });
      assert.equal(p.expiresAt, new Date(clock.now().getTime() + 2 * 3_600_000).toISOString());
      // The same person, by key or by name (trimmed, case-insensitive), may not approve.
      await rejectsWith(() => svc.approvals.approve(p.id, alice), 'Forbidden', /cannot approve one's own proposal/);
      await rejectsWith(() => svc.approvals.approve(p.id, alice2), 'Forbidden', /cannot approve one's own proposal/);
      await rejectsWith(() => svc.approvals.approve(p.id, dave), 'Forbidden', /provisioner role may not approve/);
      assert.equal(runs.length, 0);
      const done = await svc.approvals.approve(p.id, bob);
      assert.equal(done.status, 'executed');
      assert.deepEqual(done.result, { doubled: 42 });
      assert.deepEqual(done.decidedBy, { keyId: 'ak_bob', name: 'Bob', role: 'operator' });
      assert.deepEqual(runs, [{ p: { n: 21 }, proposedBy: 'ak_alice', approvedBy: 'ak_bob', id: p.id }]);
      await rejectsWith(() => svc.approvals.approve(p.id, carol), 'Conflict', /executed already/);
      assert.equal(runs.length, 1);
      const entries = await audit(p.id);
      assert.deepEqual(
        entries.map((e) => [e.action, e.actor]),
        [
          ['approval.proposed', 'api-key:ak_alice'],
          ['approval.approved', 'api-key:ak_bob'],
          ['approval.executed', 'api-key:ak_bob'],
        ],
      );
      assert.deepEqual(entries[1]!.details.proposedBy, { keyId: 'ak_alice', name: 'Alice', role: 'operator' });
      assert.deepEqual(entries[1]!.details.approvedBy, { keyId: 'ak_bob', name: 'Bob', role: 'operator' });
    });

    it('records a DomainError of the executor as failed, with the error, and audits it', async () => {
      const p = await svc.approvals.propose('test.refused', {}, alice);
      const out = await svc.approvals.approve(p.id, bob);
      assert.equal(out.status, 'failed');
      assert.deepEqual(out.error, { kind: 'Conflict', message: 'the target changed meanwhile' });
      assert.equal(out.result, null);
      const last = (await audit(p.id)).at(-1)!;
      assert.equal(last.action, 'approval.failed');
      assert.deepEqual(last.details.error, { kind: 'Conflict', message: 'the target changed meanwhile' });
      await rejectsWith(() => svc.approvals.approve(p.id, carol), 'Conflict', /failed already/);
    });

    it('records any other error as an internal failure without its detail', async () => {
      const p = await svc.approvals.propose('test.crash', {}, alice);
      const out = await svc.approvals.approve(p.id, carol);
      assert.equal(out.status, 'failed');
      assert.equal(out.error!.kind, 'Internal');
      assert.doesNotMatch(out.error!.message, /secret/);
      assert.equal((await audit(p.id)).at(-1)!.action, 'approval.failed');
    });

    it('lets the proposer withdraw and another person reject; a decided proposal cannot be approved', async () => {
      const p = await svc.approvals.propose('test.ok', { n: 1 }, alice);
      const withdrawn = await svc.approvals.reject(p.id, alice, 'typo');
      assert.equal(withdrawn.status, 'rejected');
      assert.equal(withdrawn.reason, 'typo');
      await rejectsWith(() => svc.approvals.approve(p.id, bob), 'Conflict', /rejected already/);
      const q = await svc.approvals.propose('test.ok', { n: 2 }, alice);
      await rejectsWith(() => svc.approvals.reject(q.id, dave), 'Forbidden');
      assert.equal((await svc.approvals.reject(q.id, bob)).status, 'rejected');
      const rejected = (await audit(q.id)).at(-1)!;
      assert.equal(rejected.action, 'approval.rejected');
      assert.equal(rejected.details.withdrawn, false);
      assert.equal((await audit(p.id)).at(-1)!.details.withdrawn, true);
      await rejectsWith(() => svc.approvals.get('apr_nope'), 'NotFound');
    });

    it('expires proposals past their time: on approval, and by the housekeeping sweep', async () => {
      const a = await svc.approvals.propose('test.ok', { n: 3 }, alice);
      const b = await svc.approvals.propose('test.ok', { n: 4 }, alice);
      clock.advance(2 * 3_600_000);
      await rejectsWith(() => svc.approvals.approve(a.id, bob), 'Conflict', /expired/);
      assert.equal((await svc.approvals.get(a.id)).status, 'expired');
      assert.deepEqual(await svc.approvals.expireDue(), { expired: 1 });
      assert.deepEqual(await svc.approvals.expireDue(), { expired: 0 });
      const bb = await svc.approvals.get(b.id);
      assert.equal(bb.status, 'expired');
      assert.equal(bb.decidedBy, null);
      for (const id of [a.id, b.id]) {
        const last = (await audit(id)).at(-1)!;
        assert.deepEqual([last.action, last.actor], ['approval.expired', 'system:approvals']);
      }
      await rejectsWith(() => svc.approvals.reject(b.id, bob), 'Conflict', /expired already/);
      assert.ok(!runs.some((r) => (r as { id: string }).id === a.id || (r as { id: string }).id === b.id));
    });

    it('executes once when two people approve at the same moment', async () => {
      for (let i = 0; i < 5; i++) {
        clock.advance(1000);
        const p = await svc.approvals.propose('test.ok', { n: 100 + i }, alice);
        const before = runs.length;
        const outcomes = await Promise.allSettled([svc.approvals.approve(p.id, bob), svc.approvals.approve(p.id, carol)]);
        const ok = outcomes.filter((o) => o.status === 'fulfilled');
        const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
        assert.equal(ok.length, 1);
        assert.equal(refused.length, 1);
        assert.ok(isDomainError(refused[0]!.reason) && refused[0]!.reason.kind === 'Conflict');
        assert.equal(runs.length, before + 1);
        assert.equal((await audit(p.id)).filter((e) => e.action === 'approval.executed').length, 1);
      }
    });

    it('lists newest first, by status and action, page by page', async () => {
      const all = (await svc.approvals.list({ limit: 500 })).items;
      assert.ok(all.length >= 10);
      assert.ok(all.every((x) => x.params === undefined));
      const executed = (await svc.approvals.list({ status: 'executed', action: 'test.ok', limit: 500 })).items;
      assert.equal(executed.length, 6);
      const seen: string[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await svc.approvals.list({ limit: 3, cursor });
        seen.push(...page.items.map((x) => x.id));
        if (!page.nextCursor) break;
        cursor = page.nextCursor;
      }
      assert.deepEqual(
        seen,
        all.map((x) => x.id),
      );
      await rejectsWith(() => svc.approvals.list({ limit: 3, cursor: 'garbage' }), 'BadRequest');
      assert.deepEqual((await svc.approvals.get(executed[0]!.id)).params, { n: 104 });
    });
  });
}
