import { randomBytes } from 'node:crypto';

declare const brand: unique symbol;
export type Brand<T, B extends string> = T & { readonly [brand]: B };

/** Lowercase hex, no separators: how serials appear in the API and in logs. */
export type Serial = Brand<string, 'Serial'>;

/** An opaque, random, URL-safe id with a readable prefix, e.g. `ca_3f9a...`. */
export function newId(prefix: string, bytes = 10): string {
  return `${prefix}_${randomBytes(bytes).toString('hex')}`;
}

const SERIAL_RE = /^[0-9a-f]{2,40}$/;
export function parseSerial(s: string): Serial | undefined {
  return SERIAL_RE.test(s) && s.length % 2 === 0 ? (s as Serial) : undefined;
}
export const serialFromBytes = (b: Uint8Array): Serial => Buffer.from(b).toString('hex') as Serial;
export const serialToBytes = (s: Serial): Buffer => Buffer.from(s, 'hex');
