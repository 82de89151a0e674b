import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader } from 'jose';
import { jweAlgorithmFor } from '../../src/rotate/session-keys.js';
import { DomainError } from '../../src/shared/errors.js';

describe('session key wrapping (JWE for a certificate key)', () => {
  const cases = [
    ['EC P-256', generateKeyPairSync('ec', { namedCurve: 'P-256' }), 'ECDH-ES+A256KW'],
    ['EC P-384', generateKeyPairSync('ec', { namedCurve: 'P-384' }), 'ECDH-ES+A256KW'],
    ['RSA-2048', generateKeyPairSync('rsa', { modulusLength: 2048 }), 'RSA-OAEP-256'],
    ['RSA-3072', generateKeyPairSync('rsa', { modulusLength: 3072 }), 'RSA-OAEP-256'],
  ] as const;
  for (const [name, pair, alg] of cases) {
    it(`${name}: ${alg}, A256GCM, and the holder of the private key unwraps the 32 bytes`, async () => {
      assert.equal(jweAlgorithmFor(pair.publicKey), alg);
      const key = randomBytes(32);
      const jwe = await new CompactEncrypt(key).setProtectedHeader({ alg, enc: 'A256GCM', kid: 'sk_test' }).encrypt(pair.publicKey);
      assert.deepEqual(decodeProtectedHeader(jwe), { ...decodeProtectedHeader(jwe), alg, enc: 'A256GCM', kid: 'sk_test' });
      const { plaintext } = await compactDecrypt(jwe, pair.privateKey);
      assert.deepEqual(Buffer.from(plaintext), key);
    });
  }
  for (const [name, pair, re] of [
    ['Ed25519', generateKeyPairSync('ed25519'), /Ed25519.*only sign/],
    ['EC P-521', generateKeyPairSync('ec', { namedCurve: 'P-521' }), /P-256 and P-384/],
    ['RSA-1024', generateKeyPairSync('rsa', { modulusLength: 1024 }), /2048/],
    ['X25519', generateKeyPairSync('x25519'), /x25519/],
  ] as const) {
    it(`${name}: refused with a BadKey that says why`, () => {
      assert.throws(
        () => jweAlgorithmFor(pair.publicKey),
        (e: unknown) => e instanceof DomainError && e.kind === 'BadKey' && re.test(e.message),
      );
    });
  }
});
