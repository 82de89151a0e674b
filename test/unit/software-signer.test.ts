// SoftwareSigner.signMany, the issuance batch's way to a signature: every signature in order, made
// with the signer's key, on the event loop in slices it yields between (P-256) or on the thread
// pool (P-384); the same as sign() would give.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, randomBytes, verify } from 'node:crypto';
import { SoftwareSigner } from '../../src/ca/keys.js';

describe('SoftwareSigner.signMany', () => {
  for (const [alg, opts, hash] of [
    ['EC-P256', { namedCurve: 'P-256' }, 'sha256'],
    ['EC-P384', { namedCurve: 'P-384' }, 'sha384'],
  ] as const) {
    it(`${alg}: one valid signature per message, in order, past the first slice`, async () => {
      const { privateKey } = generateKeyPairSync('ec', opts);
      const signer = new SoftwareSigner(alg, privateKey);
      const messages = Array.from({ length: alg === 'EC-P256' ? 400 : 70 }, () => randomBytes(300));
      let otherTurns = 0;
      const ticking = setInterval(() => otherTurns++, 0);
      const signatures = await signer.signMany(messages);
      clearInterval(ticking);
      assert.equal(signatures.length, messages.length);
      const key = createPublicKey(privateKey);
      messages.forEach((m, i) => {
        assert.ok(verify(hash, m, { key, dsaEncoding: 'der' }, signatures[i]!), `signature ${i} verifies over message ${i}`);
        if (i > 0)
          assert.ok(
            !verify(hash, messages[i - 1]!, { key, dsaEncoding: 'der' }, signatures[i]!),
            `signature ${i} is not over message ${i - 1}`,
          );
      });
      assert.ok(verify(hash, messages[0]!, { key, dsaEncoding: 'der' }, await signer.sign(messages[0]!)), 'sign() agrees');
      assert.ok(otherTurns > 0, 'the event loop served others while the batch was signed');
    });
  }

  it('an empty batch signs nothing', async () => {
    const signer = new SoftwareSigner('EC-P256', generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey);
    assert.deepEqual(await signer.signMany([]), []);
  });
});
