import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Bearer secrets (API keys, enrollment tokens): `<prefix>_<id>_<secret>`, the secret 32 random
 * bytes in base64url. Carrying the id lets a lookup go by primary key, never by hash.
 *
 * SHA-256, unsalted and fast, is the right hash for them: 256 bits of entropy leave nothing for a
 * slow password hash to protect against offline guessing, and a slow hash would cost every request.
 * The whole presented string is hashed, so the hash is bound to the id inside it.
 */
export const secretHash = (presented: string): Buffer => createHash('sha256').update(presented, 'utf8').digest();

export function newBearer(prefix: string, idPrefix: string): { id: string; bearer: string } {
  const id = `${idPrefix}_${randomBytes(10).toString('hex')}`;
  return { id, bearer: `${prefix}_${id}_${randomBytes(32).toString('base64url')}` };
}

/** The id inside a presented bearer of this kind, or undefined when it is not one. */
export function bearerId(presented: string, prefix: string, idPrefix: string): string | undefined {
  if (presented.length > 200) return undefined;
  const m = new RegExp(`^${prefix}_(${idPrefix}_[0-9a-f]{20})_[A-Za-z0-9_-]{43}$`).exec(presented);
  return m?.[1];
}

/** Compared against when there is no row, so an unknown id costs the same comparison as a known one. */
const DUMMY_HASH = randomBytes(32);

/** Constant-time comparison of a presented secret's hash with a stored one (undefined: no row). */
export function hashMatches(presented: string, stored: Buffer | undefined): boolean {
  const digest = secretHash(presented);
  const against = stored && stored.length === digest.length ? stored : DUMMY_HASH;
  return timingSafeEqual(digest, against) && against !== DUMMY_HASH;
}
