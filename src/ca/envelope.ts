import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Kek } from './kek.js';

/**
 * Envelope encryption: the secret under a fresh AES-256-GCM data key, the data key under the KEK.
 * Both blobs are iv(12) | tag(16) | ciphertext, and bound to `aad` (the key's id) so a blob
 * cannot be swapped onto another row.
 */
export interface Sealed {
  kekId: string;
  wrappedDek: Buffer;
  ciphertext: Buffer;
}

export class UnsealError extends Error {
  override name = 'UnsealError';
}

function gcmEncrypt(key: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad);
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), ct]);
}

function gcmDecrypt(key: Buffer, blob: Buffer, aad: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', key, blob.subarray(0, 12));
  d.setAAD(aad);
  d.setAuthTag(blob.subarray(12, 28));
  return Buffer.concat([d.update(blob.subarray(28)), d.final()]);
}

export function seal(kek: Kek, plaintext: Buffer, aad: string): Sealed {
  const dek = randomBytes(32);
  try {
    const a = Buffer.from(aad);
    return { kekId: kek.id, wrappedDek: gcmEncrypt(kek.key, dek, a), ciphertext: gcmEncrypt(dek, plaintext, a) };
  } finally {
    dek.fill(0);
  }
}

export function unseal(kek: Kek, sealed: Sealed, aad: string): Buffer {
  if (sealed.kekId !== kek.id) {
    throw new UnsealError(`key ${aad} is wrapped by KEK ${sealed.kekId}, but the configured KEK is ${kek.id}`);
  }
  const a = Buffer.from(aad);
  let dek: Buffer | undefined;
  try {
    dek = gcmDecrypt(kek.key, sealed.wrappedDek, a);
    return gcmDecrypt(dek, sealed.ciphertext, a);
  } catch {
    throw new UnsealError(`key ${aad} cannot be unwrapped: wrong KEK or altered ciphertext`);
  } finally {
    dek?.fill(0);
  }
}
