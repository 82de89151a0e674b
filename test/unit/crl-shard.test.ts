import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { crlShardFor } from '../../src/ca/crl-shard.js';

describe('crlShardFor (the CRL shard of a new certificate)', () => {
  it('is 0 (the CA’s one CRL) without sharding', () => {
    assert.equal(crlShardFor(randomBytes(16), 0), 0);
  });

  it('is the same for the same serial and shard count, within 1..n', () => {
    const serial = Buffer.from('7f00000000000000000000000000002a', 'hex');
    assert.equal(crlShardFor(serial, 16), 1 + (0x2a % 16));
    assert.equal(crlShardFor(serial, 16), crlShardFor(Buffer.from(serial), 16));
    assert.equal(crlShardFor(Buffer.from('ffffffff', 'hex'), 7), 1 + (0xffffffff % 7));
    assert.equal(crlShardFor(Buffer.from('01', 'hex'), 3), 2);
  });

  it('spreads random serials evenly over the shards', () => {
    const n = 64;
    const counts = new Array<number>(n + 1).fill(0);
    for (let i = 0; i < 64_000; i++) counts[crlShardFor(randomBytes(16), n)]!++;
    assert.equal(counts[0], 0);
    // 1,000 expected per shard; a binomial with sd ~31: 850..1150 is beyond 4.8 sd.
    for (let s = 1; s <= n; s++) assert.ok(counts[s]! > 850 && counts[s]! < 1150, `shard ${s}: ${counts[s]}`);
  });
});
