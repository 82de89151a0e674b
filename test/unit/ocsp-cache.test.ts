import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { OcspCache, type Presigned } from '../../src/revoke/ocsp-cache.js';

const response = (tag: string): Presigned => ({
  der: Buffer.from(tag),
  thisUpdate: new Date(0),
  nextUpdate: new Date(1),
  refreshAt: 0,
  etag: `"${tag}"`,
  issuerKeyHash: Buffer.alloc(20),
});
const good = { kind: 'good' as const, caId: 'ca_1', profile: 'device' };
const revoked = { kind: 'revoked' as const, caId: 'ca_1', profile: 'device', revokedAt: new Date(5), reason: 'keyCompromise' };

describe('OcspCache', () => {
  it('a fill that began before a forget is not written back: a read that raced a revocation never parks the old state', () => {
    const cache = new OcspCache(10);
    const since = cache.generation;
    cache.forget(['aa']); // the revocation commits while the fill was reading
    cache.put(since, 'aa', good, Infinity, { hash: 'sha1', response: response('old') });
    assert.equal(cache.get('aa', 0), undefined);
    cache.put(cache.generation, 'aa', revoked, Infinity, { hash: 'sha1', response: response('new') });
    assert.equal(cache.get('aa', 0)?.state.kind, 'revoked');
  });

  it('keeps one response per hash algorithm for the same state, and starts over when the state changes', () => {
    const cache = new OcspCache(10);
    cache.put(cache.generation, 'aa', good, Infinity, { hash: 'sha1', response: response('a') });
    cache.put(cache.generation, 'aa', good, Infinity, { hash: 'sha256', response: response('b') });
    assert.deepEqual(Object.keys(cache.get('aa', 0)!.byHash).sort(), ['sha1', 'sha256']);
    cache.put(cache.generation, 'aa', revoked, Infinity, { hash: 'sha1', response: response('c') });
    assert.deepEqual(Object.keys(cache.get('aa', 0)!.byHash), ['sha1']);
  });

  it('drops expired entries, evicts the oldest when full, and holds nothing while disabled', () => {
    const cache = new OcspCache(2);
    cache.put(cache.generation, 'u', { kind: 'unknown' }, 100);
    assert.ok(cache.get('u', 99));
    assert.equal(cache.get('u', 100), undefined);
    cache.put(cache.generation, 'a', good, Infinity);
    cache.put(cache.generation, 'b', good, Infinity);
    cache.put(cache.generation, 'c', good, Infinity);
    assert.equal(cache.get('a', 0), undefined);
    assert.ok(cache.get('c', 0));
    cache.setEnabled(false);
    assert.equal(cache.get('c', 0), undefined);
    cache.put(cache.generation, 'd', good, Infinity);
    cache.setEnabled(true);
    assert.equal(cache.get('d', 0), undefined);
    assert.equal(cache.size, 0);
  });
});
