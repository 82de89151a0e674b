import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { identityKey, skeleton } from '../../src/shared/confusables.js';

describe('confusable names (UTS #39 skeleton)', () => {
  it('maps look-alikes from other scripts and styles to one skeleton, and leaves different names apart', () => {
    assert.equal(skeleton('p\u0430yp\u0430l'), skeleton('paypal')); // Cyrillic а
    assert.equal(skeleton('\ud835\udd2d\ud835\udcb6\u1eff\ud835\udd61\ud835\udd52\u2113'), skeleton('paypal')); // mathematical letters, ℓ (the standard's example)
    assert.equal(skeleton('Michae1'), skeleton('Michael'));
    assert.equal(skeleton('rn'), skeleton('m'));
    assert.notEqual(skeleton('Alice'), skeleton('Alicia'));
    // idempotent: the skeleton of a skeleton is itself
    for (const s of ['Michael', 'p\u0430ypal', 'ops\u2010lead']) assert.equal(skeleton(skeleton(s)), skeleton(s));
  });

  it('takes invisible characters, other hyphens, width, spacing and case as the same name', () => {
    const base = identityKey('ops-lead');
    for (const n of [
      'ops-\u200blead',
      'ops\u2010lead',
      'ops\u2011lead',
      'ops\u2212lead',
      'OPS-LEAD',
      ' ops-lead ',
      '\uff4fps-lead',
      '\u043eps-lead',
      'ops-l\u0435\u00adad',
      'ops\u200d-lead\ufeff',
    ]) {
      assert.equal(identityKey(n), base, JSON.stringify(n));
    }
    assert.equal(identityKey('Ann  Smith'), identityKey('ann smith'));
    for (const n of ['ops-lead2', 'ops-deputy', 'opslead x']) assert.notEqual(identityKey(n), base, n);
  });
});
