import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ECDH, X509Certificate, createPublicKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { KEY_ARGS, run, tempDir } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';
import { keyAlgorithmOf } from '../../src/ca/keys.js';
import { describeSpki, spkiOfCertificate, verifyKeyOf } from '../../src/ca/x509/spki.js';
import { DomainError } from '../../src/shared/errors.js';
import { SignatureVerifier } from '../../src/shared/crypto-worker.js';

/** A P-256 SPKI carrying a compressed point (RFC 5480 allows it; we ask for uncompressed). */
function compressedP256(): Buffer {
  return compressedOf(spkiOf(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey));
}

function compressedOf(p256Spki: Buffer): Buffer {
  const compressed = ECDH.convertKey(p256Spki.subarray(-65), 'prime256v1', undefined, undefined, 'compressed') as Buffer;
  return Buffer.concat([Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex'), compressed]);
}

const spkiOf = (k: { export(o: { format: 'der'; type: 'spki' }): Buffer }) => k.export({ format: 'der', type: 'spki' });

describe('SubjectPublicKeyInfo reading (the key-policy fast path)', () => {
  it('agrees with node:crypto on algorithm, curve, size and exponent', () => {
    const cases: [Buffer, string][] = [
      [spkiOf(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey), 'EC-P256'],
      [spkiOf(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey), 'EC-P384'],
      [spkiOf(generateKeyPairSync('ed25519').publicKey), 'Ed25519'],
      [spkiOf(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey), 'RSA-2048'],
      [spkiOf(generateKeyPairSync('rsa', { modulusLength: 3072 }).publicKey), 'RSA-3072'],
    ];
    for (const [spki, alg] of cases) {
      assert.equal(keyAlgorithmOf(spki), alg);
      const k = createPublicKey({ key: spki, format: 'der', type: 'spki' });
      const d = describeSpki(spki);
      if (d.kind === 'rsa') {
        assert.equal(d.bits, k.asymmetricKeyDetails!.modulusLength);
        assert.equal(d.exponent, k.asymmetricKeyDetails!.publicExponent);
      }
    }
  });

  it('refuses what we do not issue to, as BadKey with a reason', () => {
    const refused: [Buffer, RegExp][] = [
      [spkiOf(generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey), /curve/],
      [spkiOf(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey), /curve/],
      [spkiOf(generateKeyPairSync('x25519').publicKey), /not supported/],
      [spkiOf(generateKeyPairSync('ed448').publicKey), /not supported/],
      [spkiOf(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey), /2048, 3072 or 4096 bits \(got 1024\)/],
      [spkiOf(generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 3 }).publicKey), /65537/],
      [compressedP256(), /uncompressed/],
    ];
    for (const [spki, re] of refused) {
      assert.throws(
        () => keyAlgorithmOf(spki),
        (e: unknown) => e instanceof DomainError && e.kind === 'BadKey' && re.test(e.message),
      );
    }
  });

  it('never throws anything but BadKey on truncated, extended or random input', () => {
    const valid = [
      spkiOf(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey),
      spkiOf(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey),
      spkiOf(generateKeyPairSync('ed25519').publicKey),
    ];
    const malformed: Buffer[] = [Buffer.alloc(0), Buffer.from([0x30]), Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff])];
    for (const v of valid) {
      for (let cut = 0; cut < v.length; cut += 3) malformed.push(v.subarray(0, cut));
      malformed.push(Buffer.concat([v, Buffer.from([0])]));
    }
    for (const m of malformed) {
      assert.throws(
        () => keyAlgorithmOf(m),
        (e: unknown) => e instanceof DomainError && e.kind === 'BadKey',
      );
    }
    // Random damage: whatever is refused is refused as BadKey; nothing else escapes.
    const inputs: Buffer[] = [];
    for (const v of valid) {
      for (let i = 0; i < 300; i++) {
        const m = Buffer.from(v);
        m[Math.floor(Math.random() * m.length)] = randomBytes(1)[0]!;
        inputs.push(m);
      }
    }
    for (let i = 0; i < 300; i++) inputs.push(randomBytes(1 + (i % 120)));
    for (const input of inputs) {
      try {
        keyAlgorithmOf(input);
      } catch (e) {
        assert.ok(e instanceof DomainError && e.kind === 'BadKey', `unexpected ${String(e)}`);
      }
    }
  });
});

/** A signature checked by the verify worker, with the key verifyKeyOf hands it. */
const verifier = new SignatureVerifier(1);
function workerVerifies(spki: Uint8Array, data: Buffer, signature: Buffer, hash: string | null): Promise<boolean> {
  return verifier.verify({ key: verifyKeyOf(spki), hash, data, signature, keyTypes: ['ec', 'ed25519', 'rsa'] });
}

describe('verifyKeyOf (the proof-of-possession key)', () => {
  it("lets the worker verify with P-256, P-384 (a raw point), a compressed point, Ed25519 and RSA keys, and refuses another key's signature", async () => {
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pairs = [
      { pair: p256, spki: spkiOf(p256.publicKey), hash: 'sha256' },
      { pair: p256, spki: compressedOf(spkiOf(p256.publicKey)), hash: 'sha256' },
      ...(['P-384'] as const).map((namedCurve) => {
        const pair = generateKeyPairSync('ec', { namedCurve });
        return { pair, spki: spkiOf(pair.publicKey), hash: 'sha384' };
      }),
      ...[generateKeyPairSync('ed25519')].map((pair) => ({ pair, spki: spkiOf(pair.publicKey), hash: null })),
      ...[generateKeyPairSync('rsa', { modulusLength: 2048 })].map((pair) => ({ pair, spki: spkiOf(pair.publicKey), hash: 'sha256' })),
    ];
    const data = randomBytes(300);
    for (const { pair, spki, hash } of pairs) {
      // A view inside a larger buffer, as a parsed CSR hands it over.
      const inside = Buffer.concat([randomBytes(7), spki, randomBytes(5)]).subarray(7, 7 + spki.length);
      const signature = sign(hash, data, pair.privateKey);
      assert.equal(await workerVerifies(inside, data, signature, hash), true, `a good signature with ${describeSpki(spki).kind}`);
      assert.equal(
        await workerVerifies(inside, Buffer.concat([data, Buffer.of(0)]), signature, hash),
        false,
        'a signature over other data',
      );
    }
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    assert.equal(
      await workerVerifies(spkiOf(p256.publicKey), data, sign('sha256', data, other.privateKey), 'sha256'),
      false,
      "another key's signature",
    );
  });

  it('refuses a point that is not on the curve', async () => {
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = Buffer.from(spkiOf(pair.publicKey));
    spki[spki.length - 1]! ^= 1;
    const data = randomBytes(64);
    assert.equal(await workerVerifies(spki, data, sign('sha256', data, pair.privateKey), 'sha256'), false);
  });
});

describe(
  'the SubjectPublicKeyInfo of a certificate, found without a full parse (the crypto inventory)',
  { skip: toolSkip('openssl') },
  () => {
    it('is the same bytes node:crypto finds, for certificates openssl made with each key type (v1 and v3)', () => {
      const dir = tempDir();
      for (const [name, args] of Object.entries(KEY_ARGS)) {
        for (const v1 of [false, true]) {
          const key = join(dir, `${name}.key`);
          assert.equal(run('openssl', ['genpkey', ...args, '-out', key]).status, 0);
          const out = run('openssl', [
            'req',
            '-x509',
            '-new',
            '-key',
            key,
            '-subj',
            `/CN=${name}`,
            '-days',
            '1',
            ...(v1 ? ['-x509v1'] : []),
            '-outform',
            'DER',
            '-out',
            join(dir, `${name}.der`),
          ]);
          if (v1 && out.status !== 0) continue; // an openssl without -x509v1
          assert.equal(out.status, 0, out.stderr);
          const der = readFileSync(join(dir, `${name}.der`));
          assert.deepEqual(
            Buffer.from(spkiOfCertificate(der)),
            new X509Certificate(der).publicKey.export({ format: 'der', type: 'spki' }),
            `${name}${v1 ? ' v1' : ''}`,
          );
        }
      }
    });

    it('refuses what is not a certificate, truncated or not', () => {
      const der = Buffer.from('3003020101', 'hex');
      assert.throws(() => spkiOfCertificate(der), TypeError);
      for (let i = 0; i < 500; i++) {
        const junk = randomBytes(1 + (i % 300));
        try {
          const s = spkiOfCertificate(junk);
          assert.ok(s.length <= junk.length); // a lucky shape: still inside the input
        } catch (e) {
          assert.ok(e instanceof TypeError || e instanceof RangeError, String(e));
        }
      }
    });
  },
);
