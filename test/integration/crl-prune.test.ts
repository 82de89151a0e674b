import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { bootstrap } from '../../src/bootstrap.js';
import type { Service } from '../../src/main.js';

for (const target of dbTargets) {
  describe(`superseded CRLs are pruned on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    let caId: string;
    const rows = async () =>
      (await svc.db('crls').select('kind', 'crl_number').where({ ca_id: caId, shard: 0 }).orderBy('crl_number')).map(
        (r: { kind: string; crl_number: string | number }) => `${r.kind}:${r.crl_number}`,
      );

    before(async () => {
      svc = await makeService(target);
      caId = (await bootstrap(svc)).issuingId!;
    });
    after(async () => svc?.dispose());

    it('keeps the newest full and delta of each CA, drops older ones past the grace, and the numbers go on', async () => {
      for (let i = 0; i < 3; i++) await svc.crls.publish(caId);
      const all = await rows();
      assert.ok(all.length >= 6, all.join(' '));
      // Within the grace nothing goes: a reader that just looked one up still finds it.
      assert.equal(await svc.crls.pruneSuperseded(), 0);
      assert.deepEqual(await rows(), all);

      await svc.db('crls').update({ this_update: svc.db.raw(`this_update - interval '1 hour'`) });
      const pruned = await svc.crls.pruneSuperseded();
      const left = await rows();
      const newest = (kind: string) => all.filter((r) => r.startsWith(`${kind}:`)).at(-1)!;
      assert.deepEqual(left, [newest('full'), newest('delta')]);
      assert.ok(pruned >= all.length - 2, `pruned ${pruned}`);
      // The root's own CRLs keep their newest too.
      const rootId = (await svc.hierarchy.list()).find((c) => c.kind === 'root')!.id;
      assert.ok(await svc.crls.current(rootId));

      const before = BigInt(newest('delta').split(':')[1]!);
      const pair = await svc.crls.publish(caId);
      assert.equal(pair.full.crlNumber, before + 1n);
      assert.equal((await svc.crls.current(caId))?.crlNumber, pair.full.crlNumber);
      assert.ok(await svc.crls.der(pair.full));
    });
  });
}
