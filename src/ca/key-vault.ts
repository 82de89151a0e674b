import { createPrivateKey } from 'node:crypto';
import type { Executor } from '../store/db.js';
import type { KeyMaterialStore } from '../store/key-store.js';
import type { Clock } from '../shared/clock.js';
import { newId } from '../shared/ids.js';
import { seal, unseal } from './envelope.js';
import type { Kek } from './kek.js';
import { generateKey, isKeyAlgorithm, SoftwareSigner, type KeyAlgorithm, type Signer } from './keys.js';

/**
 * Key custody for software keys: generated here, stored only sealed under the KEK,
 * unsealed into memory when a signer is needed. A signer reference (`software:<id>`) is what
 * the rest of the service holds; `pkcs11:` references would resolve to an HSM signer.
 */
export class KeyVault {
  private readonly cache = new Map<string, Signer>();

  constructor(
    private readonly kek: Kek,
    private readonly store: KeyMaterialStore,
    private readonly clock: Clock,
  ) {}

  async generate(db: Executor, alg: KeyAlgorithm): Promise<{ signerRef: string; signer: Signer }> {
    const { privateKey } = await generateKey(alg);
    const id = newId('key');
    const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
    const sealed = seal(this.kek, pkcs8, id);
    pkcs8.fill(0);
    const signer = new SoftwareSigner(alg, privateKey);
    await this.store.insert(db, { id, algorithm: alg, ...sealed, publicKey: signer.publicKey, createdAt: this.clock.now() });
    const signerRef = `software:${id}`;
    this.cache.set(signerRef, signer);
    return { signerRef, signer };
  }

  /**
   * The private key as PEM, for the one place that cannot sign through a Signer: Node's TLS
   * stack, for the service's own listener certificate. Kept in memory only; software keys only.
   */
  async tlsPrivateKeyPem(db: Executor, signerRef: string): Promise<string> {
    const [kind, id] = signerRef.split(':');
    if (kind !== 'software' || !id) throw new Error(`the TLS key must be a software key, not ${signerRef}`);
    const row = await this.store.get(db, id);
    if (!row) throw new Error(`key ${id} not found`);
    const pkcs8 = unseal(this.kek, row, id);
    try {
      return createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }) as string;
    } finally {
      pkcs8.fill(0);
    }
  }

  async signer(db: Executor, signerRef: string): Promise<Signer> {
    const cached = this.cache.get(signerRef);
    if (cached) return cached;
    const [kind, id] = signerRef.split(':');
    if (kind !== 'software' || !id) throw new Error(`unsupported signer reference ${signerRef}`);
    const row = await this.store.get(db, id);
    if (!row) throw new Error(`key ${id} not found`);
    if (!isKeyAlgorithm(row.algorithm)) throw new Error(`key ${id} has unknown algorithm ${row.algorithm}`);
    const pkcs8 = unseal(this.kek, row, id);
    const signer = new SoftwareSigner(row.algorithm, createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }));
    pkcs8.fill(0);
    this.cache.set(signerRef, signer);
    return signer;
  }
}
