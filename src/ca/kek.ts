import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The key-encryption key: wraps the data keys that encrypt every private key the service holds. */
export interface Kek {
  /** Public fingerprint, stored beside every wrapped key so a wrong KEK is named, not guessed at. */
  readonly id: string;
  readonly key: Buffer;
}

export class KekError extends Error {
  override name = 'KekError';
}

/** Accepts 32 bytes as base64, base64url or hex. */
export function parseKek(material: string, source: string): Kek {
  const text = material.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (key.length !== 32) {
    throw new KekError(`${source}: the key-encryption key must be 32 bytes, given as 64 hex digits or base64 (got ${key.length} bytes)`);
  }
  return { id: createHmac('sha256', key).update('mqtt-ca kek id').digest('hex').slice(0, 16), key };
}

export interface KekSource {
  kek?: string | undefined;
  kekFile?: string | undefined;
  dataDir: string;
}

export interface LoadedKek {
  kek: Kek;
  /** Where it came from, for the start-up message (never the key itself). */
  origin: string;
  created: boolean;
}

export const defaultKekPath = (dataDir: string) => join(dataDir, 'kek');

/**
 * MQTT_CA_KEK, else MQTT_CA_KEK_FILE, else DATA_DIR/kek — created (mode 0600) only when
 * `mayCreate` (an empty store): a store with keys and no KEK must not get a fresh, useless one.
 */
export function loadKek(src: KekSource, mayCreate: boolean): LoadedKek {
  if (src.kek) return { kek: parseKek(src.kek, 'MQTT_CA_KEK'), origin: 'MQTT_CA_KEK', created: false };
  if (src.kekFile) {
    if (!existsSync(src.kekFile)) throw new KekError(`MQTT_CA_KEK_FILE: ${src.kekFile} does not exist`);
    return { kek: parseKek(readFileSync(src.kekFile, 'utf8'), `MQTT_CA_KEK_FILE (${src.kekFile})`), origin: src.kekFile, created: false };
  }
  const path = defaultKekPath(src.dataDir);
  if (existsSync(path)) return { kek: parseKek(readFileSync(path, 'utf8'), path), origin: path, created: false };
  if (!mayCreate) {
    throw new KekError(`no key-encryption key: set MQTT_CA_KEK or MQTT_CA_KEK_FILE (the store holds CA keys, and ${path} does not exist)`);
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, randomBytes(32).toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  return { kek: parseKek(readFileSync(path, 'utf8'), path), origin: path, created: true };
}

/** A key for one purpose (e.g. the audit chain), derived from the KEK so it needs no storage of its own. */
export function deriveKey(kek: Kek, purpose: string): Buffer {
  return Buffer.from(hkdfSync('sha256', kek.key, Buffer.alloc(0), `mqtt-ca ${purpose}`, 32));
}
