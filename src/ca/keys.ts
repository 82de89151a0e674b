import { createPublicKey, generateKeyPair, sign, type KeyObject } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { promisify } from 'node:util';
import { nodeSignHash, type SignatureAlgorithm } from './x509/encode.js';
import { badKey } from '../shared/errors.js';
import { describeSpki, type SpkiDescription } from './x509/spki.js';

export const KEY_ALGORITHMS = ['EC-P256', 'EC-P384', 'Ed25519', 'RSA-2048', 'RSA-3072', 'RSA-4096'] as const;
export type KeyAlgorithm = (typeof KEY_ALGORITHMS)[number];

export const isKeyAlgorithm = (s: string): s is KeyAlgorithm => (KEY_ALGORITHMS as readonly string[]).includes(s);

/** How a key of each algorithm signs certificates, CRLs and OCSP responses. */
export function signatureAlgorithmFor(alg: KeyAlgorithm): SignatureAlgorithm {
  switch (alg) {
    case 'EC-P256':
      return 'ecdsa-with-SHA256';
    case 'EC-P384':
      return 'ecdsa-with-SHA384';
    case 'Ed25519':
      return 'Ed25519';
    default:
      return 'sha256WithRSAEncryption';
  }
}

const generate = promisify(generateKeyPair);

export async function generateKey(alg: KeyAlgorithm): Promise<{ privateKey: KeyObject; publicKey: KeyObject }> {
  switch (alg) {
    case 'EC-P256':
      return generate('ec', { namedCurve: 'P-256' });
    case 'EC-P384':
      return generate('ec', { namedCurve: 'P-384' });
    case 'Ed25519':
      return generate('ed25519');
    case 'RSA-2048':
    case 'RSA-3072':
    case 'RSA-4096':
      return generate('rsa', { modulusLength: Number(alg.slice(4)), publicExponent: 0x10001 });
  }
}

/** What a subject public key is, from its SPKI; anything we do not issue to is a BadKey error. */
export function keyAlgorithmOf(spki: Uint8Array): KeyAlgorithm {
  let d: SpkiDescription;
  try {
    d = describeSpki(spki);
  } catch {
    throw badKey('the public key cannot be parsed');
  }
  switch (d.kind) {
    case 'ec':
      if (d.curve === 'other') throw badKey('EC curve not supported (P-256, P-384)');
      if (!d.uncompressed) throw badKey(`the ${d.curve} public key must be an uncompressed point of the right length`);
      return d.curve === 'P-256' ? 'EC-P256' : 'EC-P384';
    case 'ed25519':
      return 'Ed25519';
    case 'rsa': {
      if (d.exponent !== 65537n) throw badKey('RSA keys must use the public exponent 65537');
      const alg = `RSA-${d.bits}`;
      if (isKeyAlgorithm(alg)) return alg;
      throw badKey(`RSA keys must be 2048, 3072 or 4096 bits (got ${d.bits})`);
    }
    default:
      throw badKey('this key type is not supported (EC P-256/P-384, Ed25519, RSA 2048/3072/4096)');
  }
}

/**
 * The only way issuance touches a private key. A software key lives here unwrapped in memory;
 * a PKCS#11 signer would implement the same members.
 */
export interface Signer {
  readonly keyAlgorithm: KeyAlgorithm;
  readonly signatureAlgorithm: SignatureAlgorithm;
  /** SPKI DER. */
  readonly publicKey: Buffer;
  sign(data: Uint8Array): Promise<Buffer>;
  /** Several signatures in one call (an issuance batch), in order. */
  signMany(data: Uint8Array[]): Promise<Buffer[]>;
}

/**
 * With one CPU to run on (a 1-vCPU container, a replica pinned to a core) the thread pool has no
 * core of its own: handing each signature to it and back costs two context switches, ~18 µs a
 * signature here (a third of an OCSP nonce response), so the loop signs itself.
 */
const SIGN_ON_LOOP = availableParallelism() === 1;
/** Keys whose signatures signMany makes on the event loop, and how long it signs before it yields. */
const CHEAP_TO_SIGN: ReadonlySet<KeyAlgorithm> = new Set(['EC-P256', 'Ed25519']);
const LOOP_SLICE_MS = 1;

/**
 * node:crypto.sign with a KeyObject: measured faster than either WebCrypto provider
 * (bench/signing.ts, docs/benchmarks.md: @peculiar/webcrypto re-parses the key on every call),
 * so it is the hot path.
 */
export class SoftwareSigner implements Signer {
  readonly signatureAlgorithm: SignatureAlgorithm;
  readonly publicKey: Buffer;
  private readonly digest: string | null;

  constructor(
    readonly keyAlgorithm: KeyAlgorithm,
    private readonly privateKey: KeyObject,
  ) {
    this.signatureAlgorithm = signatureAlgorithmFor(keyAlgorithm);
    this.digest = nodeSignHash(this.signatureAlgorithm);
    this.publicKey = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  }

  sign(data: Uint8Array): Promise<Buffer> {
    if (SIGN_ON_LOOP) {
      try {
        return Promise.resolve(this.signOnLoop(data));
      } catch (e) {
        return Promise.reject(e as Error);
      }
    }
    // The callback form signs on the libuv thread pool: with several signatures in flight it
    // beats the synchronous call (bench/signing.ts) and leaves the event loop free meanwhile.
    return new Promise((resolve, reject) =>
      sign(this.digest, data, { key: this.privateKey, dsaEncoding: 'der' }, (err, sig) => (err ? reject(err) : resolve(sig))),
    );
  }

  /**
   * An issuance batch. With a key that signs in tens of microseconds (P-256, Ed25519) the batch is
   * signed on the event loop, yielding to other work after each millisecond or so: the machine is
   * busy with the rest of the batch's work then, and the two context switches a trip to the thread
   * pool costs per signature are as much as the signature (enrollment benchmark on this 2-core host:
   * 1,224/s mean of four runs against 1,150/s through the pool, runs varying by ±10%). Slower keys
   * (P-384, RSA: a millisecond and more a signature) are signed on the pool, in parallel.
   */
  async signMany(data: Uint8Array[]): Promise<Buffer[]> {
    if (!CHEAP_TO_SIGN.has(this.keyAlgorithm)) return Promise.all(data.map((d) => this.sign(d)));
    const out: Buffer[] = [];
    let yieldAt = performance.now() + LOOP_SLICE_MS;
    for (const d of data) {
      if (performance.now() > yieldAt) {
        await new Promise<void>((r) => setImmediate(r));
        yieldAt = performance.now() + LOOP_SLICE_MS;
      }
      out.push(this.signOnLoop(d));
    }
    return out;
  }

  private signOnLoop(data: Uint8Array): Buffer {
    return sign(this.digest, data, { key: this.privateKey, dsaEncoding: 'der' });
  }

  // Keep the key out of logs and inspection.
  toJSON(): string {
    return `[SoftwareSigner ${this.keyAlgorithm}]`;
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toJSON();
  }
}
