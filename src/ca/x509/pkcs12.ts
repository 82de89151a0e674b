/**
 * Password-protected private key containers:
 *
 * - `encryptedPkcs8Der` / `encryptedPkcs8Pem`: PKCS#8 EncryptedPrivateKeyInfo (RFC 5958)
 *   with PBES2 (RFC 8018): PBKDF2-HMAC-SHA256, 16-byte salt, 100,000 iterations by default,
 *   AES-256-CBC. (node:crypto's `export({ cipher, passphrase })` also emits PBES2 with
 *   hmacWithSHA256, but with an 8-byte salt and 2,048 iterations, so it is not used.)
 * - `pkcs12`: a PFX (RFC 7292) the way OpenSSL 3 writes it without the legacy provider:
 *   certificates in a plain Data SafeContents, the key in a pkcs8ShroudedKeyBag (PBES2 as
 *   above), and an HMAC-SHA256 MacData keyed with the PKCS#12 KDF (RFC 7292 Appendix B).
 *
 * Passwords: PBES2 uses the UTF-8 bytes of the password as given (no Unicode normalization,
 * as OpenSSL does); the MAC uses the PKCS#12 form, BMPString (UTF-16BE) plus 00 00.
 *
 * Everything here is synchronous CPU work (about 15 ms for PBKDF2 and about 0.1 s for the
 * PKCS#12 MAC KDF at the default iteration counts): keep it off hot request paths.
 */
import { X509Certificate, createCipheriv, createHash, createHmac, createPrivateKey, pbkdf2Sync, randomBytes } from 'node:crypto';
import { NULL, explicit, octetString, oid, sequence, sequenceOf, setOf, smallInt, tlv } from './der.js';
import { toPem } from './pem.js';
import { assertSingleSequence } from './pkcs7.js';

const OID = {
  data: '1.2.840.113549.1.7.1',
  pbes2: '1.2.840.113549.1.5.13',
  pbkdf2: '1.2.840.113549.1.5.12',
  hmacWithSHA256: '1.2.840.113549.2.9',
  aes256Cbc: '2.16.840.1.101.3.4.1.42',
  sha256: '2.16.840.1.101.3.4.2.1',
  pkcs8ShroudedKeyBag: '1.2.840.113549.1.12.10.1.2',
  certBag: '1.2.840.113549.1.12.10.1.3',
  x509Certificate: '1.2.840.113549.1.9.22.1',
  friendlyName: '1.2.840.113549.1.9.20',
  localKeyId: '1.2.840.113549.1.9.21',
} as const;

/** PBKDF2 iterations for PBES2 when none are given. */
export const DEFAULT_PBKDF2_ITERATIONS = 100_000;
/** PKCS#12 MAC KDF iterations when none are given (OpenSSL 3's default is 2,048). */
export const DEFAULT_MAC_ITERATIONS = 100_000;
/** Lowest iteration count accepted for either KDF (OpenSSL 3's PKCS#12 default). */
export const MIN_ITERATIONS = 2048;
/**
 * Highest iteration count accepted. .NET (since 2024) refuses PFX files whose iteration
 * counts add up to more than 600,000; 250,000 each keeps MAC + key below that.
 */
export const MAX_ITERATIONS = 250_000;

const BMP_STRING = 0x1e;

export interface PbeOptions {
  /** PBKDF2 iteration count, MIN_ITERATIONS..MAX_ITERATIONS (default 100,000). */
  iterations?: number;
}

function checkIterations(n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n < MIN_ITERATIONS || n > MAX_ITERATIONS) {
    throw new RangeError(`${what} must be an integer in ${MIN_ITERATIONS}..${MAX_ITERATIONS}, got ${n}`);
  }
  return n;
}

function checkPassword(password: string): void {
  if (typeof password !== 'string') throw new TypeError('password must be a string');
  if (password.length === 0) throw new RangeError('password must not be empty');
}

/** Parses the PKCS#8 DER (throws a TypeError when it is not a private key node:crypto understands). */
function parsePkcs8(pkcs8Der: Uint8Array): ReturnType<typeof createPrivateKey> {
  assertSingleSequence(pkcs8Der, 'PKCS#8 private key');
  try {
    return createPrivateKey({ key: Buffer.from(pkcs8Der), format: 'der', type: 'pkcs8' });
  } catch (e) {
    throw new TypeError(`not a PKCS#8 private key: ${(e as Error).message}`);
  }
}

/**
 * EncryptedPrivateKeyInfo { PBES2 { PBKDF2 { salt(16), iterations, hmacWithSHA256 },
 * aes256-CBC { iv(16) } }, ciphertext }, DER.
 */
export function encryptedPkcs8Der(pkcs8Der: Uint8Array, password: string, options: PbeOptions = {}): Buffer {
  checkPassword(password);
  parsePkcs8(pkcs8Der);
  const out = pbes2Encrypt(pkcs8Der, password, checkIterations(options.iterations ?? DEFAULT_PBKDF2_ITERATIONS, 'iterations'));
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}

/** `encryptedPkcs8Der` as an "ENCRYPTED PRIVATE KEY" PEM (LF line endings, 64-char lines). */
export function encryptedPkcs8Pem(pkcs8Der: Uint8Array, password: string, options: PbeOptions = {}): string {
  return toPem(encryptedPkcs8Der(pkcs8Der, password, options), 'ENCRYPTED PRIVATE KEY');
}

function pbes2Encrypt(plain: Uint8Array, password: string, iterations: number): Uint8Array {
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const key = pbkdf2Sync(Buffer.from(password, 'utf8'), salt, iterations, 32, 'sha256');
  const cipher = createCipheriv('aes-256-cbc', key, iv); // PKCS#7 padding
  const ciphertext = Buffer.concat([cipher.update(plain), cipher.final()]);
  key.fill(0);
  const algorithm = sequence(
    oid(OID.pbes2),
    sequence(
      sequence(oid(OID.pbkdf2), sequence(octetString(salt), smallInt(iterations), sequence(oid(OID.hmacWithSHA256), NULL))),
      sequence(oid(OID.aes256Cbc), octetString(iv)),
    ),
  );
  return sequence(algorithm, octetString(ciphertext));
}

/** The PKCS#12 password form: UTF-16BE code units plus a 00 00 terminator (RFC 7292 B.1). */
export function bmpPassword(password: string): Buffer {
  const out = Buffer.alloc(password.length * 2 + 2);
  for (let i = 0; i < password.length; i++) out.writeUInt16BE(password.charCodeAt(i), i * 2);
  return out;
}

function bmpString(s: string): Uint8Array {
  return tlv(BMP_STRING, bmpPassword(s).subarray(0, s.length * 2));
}

/**
 * The PKCS#12 key derivation (RFC 7292 Appendix B.2) with SHA-256 (u = 32, v = 64), for
 * outputs of at most one hash block, which is all the MAC needs (id 3, 32 bytes).
 */
export function pkcs12KdfSha256(bmpPass: Uint8Array, salt: Uint8Array, id: 1 | 2 | 3, iterations: number, length: number): Buffer {
  const u = 32;
  const v = 64;
  if (length < 1 || length > u) throw new RangeError(`pkcs12KdfSha256 derives 1..${u} bytes, asked for ${length}`);
  if (!Number.isSafeInteger(iterations) || iterations < 1) throw new RangeError(`bad iteration count: ${iterations}`);
  const stretch = (src: Uint8Array): Buffer => {
    const out = Buffer.alloc(v * Math.ceil(src.length / v));
    for (let i = 0; i < out.length; i++) out[i] = src[i % src.length] as number;
    return out;
  };
  const D = Buffer.alloc(v, id);
  const I = Buffer.concat([stretch(salt), stretch(bmpPass)]);
  let A = createHash('sha256').update(D).update(I).digest();
  for (let r = 1; r < iterations; r++) A = createHash('sha256').update(A).digest();
  // Only A_1 is needed for length <= u; the I-update step of B.2 (6C) never runs.
  return A.subarray(0, length);
}

function attribute(type: string, value: Uint8Array): Uint8Array {
  return sequence(oid(type), setOf([value]));
}

function certBag(cert: Uint8Array, attributes: Uint8Array[]): Uint8Array {
  const value = explicit(0, sequence(oid(OID.x509Certificate), explicit(0, octetString(cert))));
  return attributes.length > 0 ? sequence(oid(OID.certBag), value, setOf(attributes)) : sequence(oid(OID.certBag), value);
}

function dataContentInfo(content: Uint8Array): Uint8Array {
  return sequence(oid(OID.data), explicit(0, octetString(content)));
}

export interface Pkcs12Input {
  /** The unencrypted PKCS#8 PrivateKeyInfo (DER) of `certificate`'s key. */
  privateKeyPkcs8: Uint8Array;
  /** The leaf certificate (DER). */
  certificate: Uint8Array;
  /** Issuer certificates (DER), leaf's issuer first; written in the given order after the leaf. */
  chain: Uint8Array[];
  /** Non-empty; see the module comment for how it is encoded. */
  password: string;
  /** Label shown by importers (Keychain, Windows, browsers); set on the leaf and key bags. */
  friendlyName?: string;
  /** PBKDF2 iterations for the key (default 100,000). */
  iterations?: number;
  /** PKCS#12 KDF iterations for the MAC (default 100,000). */
  macIterations?: number;
}

/**
 * PFX v3 { authSafe Data(AuthenticatedSafe [ Data(SafeContents [leaf certBag, chain certBags...]),
 * Data(SafeContents [pkcs8ShroudedKeyBag]) ]), MacData { HMAC-SHA256, salt(16), iterations } }.
 *
 * The leaf's bag and the key's bag carry localKeyId = SHA-1(leaf DER) (and friendlyName when
 * given). Throws a TypeError when the key does not belong to the certificate.
 */
export function pkcs12(input: Pkcs12Input): Buffer {
  const { privateKeyPkcs8, certificate, chain, password, friendlyName } = input;
  checkPassword(password);
  const iterations = checkIterations(input.iterations ?? DEFAULT_PBKDF2_ITERATIONS, 'iterations');
  const macIterations = checkIterations(input.macIterations ?? DEFAULT_MAC_ITERATIONS, 'macIterations');
  assertSingleSequence(certificate, 'certificate');
  chain.forEach((c, i) => assertSingleSequence(c, `chain certificate #${i}`));
  const key = parsePkcs8(privateKeyPkcs8);
  let matches = false;
  try {
    matches = new X509Certificate(Buffer.from(certificate)).checkPrivateKey(key);
  } catch (e) {
    throw new TypeError(`certificate is not readable: ${(e as Error).message}`);
  }
  if (!matches) throw new TypeError('the private key does not match the certificate');

  const localKeyId = createHash('sha1').update(certificate).digest();
  const attrs = [attribute(OID.localKeyId, octetString(localKeyId))];
  if (friendlyName !== undefined && friendlyName !== '') attrs.push(attribute(OID.friendlyName, bmpString(friendlyName)));

  const certContents = sequenceOf([certBag(certificate, attrs), ...chain.map((c) => certBag(c, []))]);
  const keyBag = sequence(oid(OID.pkcs8ShroudedKeyBag), explicit(0, pbes2Encrypt(privateKeyPkcs8, password, iterations)), setOf(attrs));
  const authenticatedSafe = sequenceOf([dataContentInfo(certContents), dataContentInfo(sequenceOf([keyBag]))]);

  const macSalt = randomBytes(16);
  const macKey = pkcs12KdfSha256(bmpPassword(password), macSalt, 3, macIterations, 32);
  const mac = createHmac('sha256', macKey).update(authenticatedSafe).digest();
  macKey.fill(0);
  const macData = sequence(sequence(sequence(oid(OID.sha256), NULL), octetString(mac)), octetString(macSalt), smallInt(macIterations));

  const pfx = sequence(smallInt(3), dataContentInfo(authenticatedSafe), macData);
  return Buffer.from(pfx.buffer, pfx.byteOffset, pfx.byteLength);
}
