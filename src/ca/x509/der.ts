/**
 * Minimal DER (X.690) writer primitives for the certificate hot path.
 *
 * Every function returns a complete TLV as a Uint8Array. Composite values are
 * built by `tlv(tag, ...parts)`, which sizes the result first and writes it with a
 * single allocation. Values handed back from caches (`oid`, `NULL`, ...) are shared:
 * treat every returned array as read-only.
 *
 * Only what X.509 and PKCS#10 need is here: low tag numbers (< 31), definite
 * lengths up to 2^32 - 1, no BER. The reading side is `readTlv` at the end, as strict.
 */

export type Bytes = Uint8Array;

/** Universal tags and the class/constructed bits used by X.509. */
export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
  CONTEXT: 0x80,
  CONSTRUCTED: 0x20,
} as const;

/** Number of bytes the DER length field for `len` takes. */
export function lengthSize(len: number): number {
  if (len < 0x80) return 1;
  if (len < 0x100) return 2;
  if (len < 0x10000) return 3;
  if (len < 0x1000000) return 4;
  if (len <= 0xffffffff) return 5;
  throw new RangeError(`DER length too large: ${len}`);
}

/** Writes the DER length `len` into `out` at `pos`; returns the new position. */
export function writeLength(out: Bytes, pos: number, len: number): number {
  if (len < 0x80) {
    out[pos] = len;
    return pos + 1;
  }
  const n = lengthSize(len) - 1;
  out[pos++] = 0x80 | n;
  for (let i = n - 1; i >= 0; i--) out[pos++] = Math.floor(len / 2 ** (8 * i)) & 0xff;
  return pos;
}

/**
 * Memory for an encoding that the caller fills completely: Buffer.allocUnsafe takes small sizes
 * from Node's pool, where `new Uint8Array` allocates and zeroes a backing store of its own (~1 µs
 * each, most of an OCSP response's encoding time when nested TLVs each take one).
 */
export function alloc(size: number): Bytes {
  return Buffer.allocUnsafe(size);
}

/**
 * A copy of `bytes` that owns its memory, for an encoding kept long: one from `alloc` is a view
 * into Node's shared 8 KB pool slab and keeps the whole slab alive as long as it lives.
 */
export function detached(bytes: Uint8Array): Buffer {
  const copy = new Uint8Array(bytes);
  return Buffer.from(copy.buffer, 0, copy.length);
}

/** The DER length octets for `len` (short form below 128, long form above). */
export function encodeLength(len: number): Bytes {
  const out = alloc(lengthSize(len));
  writeLength(out, 0, len);
  return out;
}

/** Size of a whole TLV whose contents are `contentLen` bytes long. */
export function tlvSize(contentLen: number): number {
  return 1 + lengthSize(contentLen) + contentLen;
}

/** Writes a tag and length header; returns the new position. */
export function writeHeader(out: Bytes, pos: number, tag: number, contentLen: number): number {
  out[pos] = tag;
  return writeLength(out, pos + 1, contentLen);
}

/** Tag + length + the parts concatenated, in one allocation. */
export function tlv(tag: number, ...parts: Bytes[]): Bytes {
  return tlvOf(tag, parts);
}

/** `tlv` with the parts as an array (no spread needed for long lists). */
export function tlvOf(tag: number, parts: readonly Bytes[]): Bytes {
  if (tag < 0 || tag > 0xff || (tag & 0x1f) === 0x1f) throw new RangeError(`unsupported DER tag: ${tag}`);
  let len = 0;
  for (const p of parts) len += p.length;
  const out = alloc(tlvSize(len));
  let pos = writeHeader(out, 0, tag, len);
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Plain concatenation, one allocation. */
export function concat(parts: readonly Bytes[]): Bytes {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = alloc(len);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export function sequence(...parts: Bytes[]): Bytes {
  return tlvOf(TAG.SEQUENCE, parts);
}

export function sequenceOf(parts: readonly Bytes[]): Bytes {
  return tlvOf(TAG.SEQUENCE, parts);
}

function compareBytes(a: Bytes, b: Bytes): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = (a[i] as number) - (b[i] as number);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/**
 * SET OF: DER (X.690 11.6) wants the elements in ascending order of their
 * encodings, so they are sorted here (a copy; the arguments are untouched).
 */
export function set(...parts: Bytes[]): Bytes {
  return setOf(parts);
}

export function setOf(parts: readonly Bytes[]): Bytes {
  const sorted = parts.length > 1 ? [...parts].sort(compareBytes) : parts;
  return tlvOf(TAG.SET, sorted);
}

/** Contents octets of a non-negative INTEGER given as unsigned big-endian bytes. */
function integerContentLength(unsigned: Bytes): { start: number; pad: number } {
  let start = 0;
  while (start < unsigned.length - 1 && unsigned[start] === 0) start++;
  if (unsigned.length === 0) return { start: 0, pad: 1 };
  const pad = (unsigned[start] as number) & 0x80 ? 1 : 0;
  return { start, pad };
}

/** Size of the INTEGER TLV that `integer(unsigned)` produces. */
export function integerSize(unsigned: Bytes): number {
  const { start, pad } = integerContentLength(unsigned);
  return tlvSize(unsigned.length - start + pad);
}

/** Writes `integer(unsigned)` into `out` at `pos`; returns the new position. */
export function writeInteger(out: Bytes, pos: number, unsigned: Bytes): number {
  const { start, pad } = integerContentLength(unsigned);
  const len = unsigned.length - start + pad;
  pos = writeHeader(out, pos, TAG.INTEGER, len);
  if (pad) out[pos++] = 0;
  out.set(unsigned.subarray(start), pos);
  return pos + unsigned.length - start;
}

/**
 * INTEGER from unsigned big-endian bytes: redundant leading zeros are stripped and
 * a 0x00 is prepended when the high bit is set, so the value stays positive.
 * An empty input encodes zero.
 */
export function integer(unsigned: Bytes): Bytes {
  const out = alloc(integerSize(unsigned));
  writeInteger(out, 0, unsigned);
  return out;
}

const smallIntCache: Bytes[] = [];

/** INTEGER from a non-negative safe integer (versions, pathLen, ...). */
export function smallInt(n: number): Bytes {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`smallInt wants a non-negative safe integer, got ${n}`);
  if (n < 128) {
    const hit = smallIntCache[n];
    if (hit) return hit;
  }
  const bytes: number[] = [];
  let v = n;
  do {
    bytes.unshift(v % 256);
    v = Math.floor(v / 256);
  } while (v > 0);
  const out = integer(Uint8Array.from(bytes));
  if (n < 128) smallIntCache[n] = out;
  return out;
}

const oidCache = new Map<string, Bytes>();
const OID_RE = /^[0-2](\.(0|[1-9][0-9]*))+$/;

function base128(v: bigint, into: number[]): void {
  const groups: number[] = [Number(v & 0x7fn)];
  v >>= 7n;
  while (v > 0n) {
    groups.unshift(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  into.push(...groups);
}

/** OBJECT IDENTIFIER TLV from dotted notation, e.g. "2.5.29.19". Cached. */
export function oid(dotted: string): Bytes {
  const hit = oidCache.get(dotted);
  if (hit) return hit;
  if (!OID_RE.test(dotted)) throw new TypeError(`invalid OID: ${dotted}`);
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const first = arcs[0] as bigint;
  const second = arcs[1] as bigint;
  if (first < 2n && second > 39n) throw new RangeError(`invalid OID (second arc > 39 under ${first}): ${dotted}`);
  const body: number[] = [];
  base128(first * 40n + second, body);
  for (let i = 2; i < arcs.length; i++) base128(arcs[i] as bigint, body);
  const out = tlv(TAG.OID, Uint8Array.from(body));
  oidCache.set(dotted, out);
  return out;
}

const TRUE = Uint8Array.of(TAG.BOOLEAN, 1, 0xff);
const FALSE = Uint8Array.of(TAG.BOOLEAN, 1, 0x00);

/** BOOLEAN; DER wants 0xFF for TRUE. */
export function boolean(v: boolean): Bytes {
  return v ? TRUE : FALSE;
}

/** The NULL TLV (05 00). */
export const NULL: Bytes = Uint8Array.of(TAG.NULL, 0);

export function octetString(value: Bytes): Bytes {
  return tlv(TAG.OCTET_STRING, value);
}

/** BIT STRING: the unused-bits count octet, then the bytes. */
export function bitString(value: Bytes, unusedBits = 0): Bytes {
  if (!Number.isInteger(unusedBits) || unusedBits < 0 || unusedBits > 7) throw new RangeError(`unusedBits must be 0..7, got ${unusedBits}`);
  if (value.length === 0 && unusedBits !== 0) throw new RangeError('an empty BIT STRING has no unused bits');
  const out = alloc(tlvSize(value.length + 1));
  const pos = writeHeader(out, 0, TAG.BIT_STRING, value.length + 1);
  out[pos] = unusedBits;
  out.set(value, pos + 1);
  return out;
}

const utf8 = new TextEncoder();

export function utf8String(s: string): Bytes {
  return tlv(TAG.UTF8_STRING, utf8.encode(s));
}

const PRINTABLE_RE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;

export function isPrintableString(s: string): boolean {
  return PRINTABLE_RE.test(s);
}

/** PrintableString; throws on characters outside its repertoire (X.680 41.4). */
export function printableString(s: string): Bytes {
  if (!PRINTABLE_RE.test(s)) throw new TypeError(`not a PrintableString: ${JSON.stringify(s)}`);
  return asciiTlv(TAG.PRINTABLE_STRING, s);
}

// eslint-disable-next-line no-control-regex
const IA5_RE = /^[\x00-\x7f]*$/;

/** IA5String (7-bit ASCII); throws on anything else. */
export function ia5String(s: string): Bytes {
  if (!IA5_RE.test(s)) throw new TypeError(`not an IA5String: ${JSON.stringify(s)}`);
  return asciiTlv(TAG.IA5_STRING, s);
}

function asciiTlv(tag: number, s: string): Bytes {
  const out = alloc(tlvSize(s.length));
  let pos = writeHeader(out, 0, tag, s.length);
  for (let i = 0; i < s.length; i++) out[pos++] = s.charCodeAt(i);
  return out;
}

function put2(out: Bytes, pos: number, v: number): number {
  out[pos] = 0x30 + ((v / 10) | 0);
  out[pos + 1] = 0x30 + (v % 10);
  return pos + 2;
}

function timeFields(d: Date): { y: number; mo: number; day: number; h: number; mi: number; s: number } {
  const t = d.getTime();
  if (!Number.isFinite(t)) throw new RangeError('invalid Date');
  return {
    y: d.getUTCFullYear(),
    mo: d.getUTCMonth() + 1,
    day: d.getUTCDate(),
    h: d.getUTCHours(),
    mi: d.getUTCMinutes(),
    s: d.getUTCSeconds(),
  };
}

/** UTCTime YYMMDDHHMMSSZ (RFC 5280 4.1.2.5.1: years 1950..2049; milliseconds dropped). */
export function utcTime(d: Date): Bytes {
  const f = timeFields(d);
  if (f.y < 1950 || f.y > 2049) throw new RangeError(`UTCTime covers 1950..2049, got ${f.y}`);
  const out = alloc(15);
  out[0] = TAG.UTC_TIME;
  out[1] = 13;
  writeTimeDigits(out, 2, f, false);
  return out;
}

/** GeneralizedTime YYYYMMDDHHMMSSZ (RFC 5280 4.1.2.5.2: Z, seconds, no fraction). */
export function generalizedTime(d: Date): Bytes {
  const f = timeFields(d);
  if (f.y < 0 || f.y > 9999) throw new RangeError(`GeneralizedTime covers 0000..9999, got ${f.y}`);
  const out = alloc(17);
  out[0] = TAG.GENERALIZED_TIME;
  out[1] = 15;
  writeTimeDigits(out, 2, f, true);
  return out;
}

function writeTimeDigits(out: Bytes, pos: number, f: ReturnType<typeof timeFields>, fourDigitYear: boolean): void {
  if (fourDigitYear) pos = put2(out, pos, Math.floor(f.y / 100));
  pos = put2(out, pos, f.y % 100);
  pos = put2(out, pos, f.mo);
  pos = put2(out, pos, f.day);
  pos = put2(out, pos, f.h);
  pos = put2(out, pos, f.mi);
  pos = put2(out, pos, f.s);
  out[pos] = 0x5a; // 'Z'
}

/** Writes `time(d)` into `out` at `pos` without an intermediate array; returns the new position. */
export function writeTime(out: Bytes, pos: number, d: Date): number {
  const f = timeFields(d);
  if (f.y >= 1950 && f.y <= 2049) {
    out[pos] = TAG.UTC_TIME;
    out[pos + 1] = 13;
    writeTimeDigits(out, pos + 2, f, false);
    return pos + 15;
  }
  if (f.y < 0 || f.y > 9999) throw new RangeError(`GeneralizedTime covers 0000..9999, got ${f.y}`);
  out[pos] = TAG.GENERALIZED_TIME;
  out[pos + 1] = 15;
  writeTimeDigits(out, pos + 2, f, true);
  return pos + 17;
}

/** RFC 5280 Time: UTCTime for 1950..2049, GeneralizedTime otherwise. */
export function time(d: Date): Bytes {
  const y = d.getUTCFullYear();
  return y >= 1950 && y <= 2049 ? utcTime(d) : generalizedTime(d);
}

/** Size of `time(d)`: 15 bytes for UTCTime, 17 for GeneralizedTime. */
export function timeSize(d: Date): number {
  const y = d.getUTCFullYear();
  return y >= 1950 && y <= 2049 ? 15 : 17;
}

function contextTag(tagNumber: number, constructed: boolean): number {
  if (!Number.isInteger(tagNumber) || tagNumber < 0 || tagNumber > 30)
    throw new RangeError(`context tag number must be 0..30, got ${tagNumber}`);
  return TAG.CONTEXT | (constructed ? TAG.CONSTRUCTED : 0) | tagNumber;
}

/** [n] EXPLICIT: a constructed context-specific TLV wrapping whole TLVs. */
export function explicit(tagNumber: number, ...inner: Bytes[]): Bytes {
  return tlvOf(contextTag(tagNumber, true), inner);
}

/**
 * [n] IMPLICIT from raw contents octets. `constructed` must match the underlying
 * type (true for SEQUENCE/SET, false for strings, INTEGER, ...).
 */
export function implicit(tagNumber: number, constructed: boolean, ...contents: Bytes[]): Bytes {
  return tlvOf(contextTag(tagNumber, constructed), contents);
}

/**
 * [n] IMPLICIT applied to an already-encoded TLV: the identifier octet is replaced,
 * keeping the constructed bit of the original.
 */
export function retagImplicit(tagNumber: number, encoded: Bytes): Bytes {
  if (encoded.length < 2) throw new RangeError('not a TLV');
  // A copy (Buffer's slice() would be a view, and the original may be cached).
  const out = alloc(encoded.length);
  out.set(encoded);
  out[0] = contextTag(tagNumber, ((encoded[0] as number) & TAG.CONSTRUCTED) !== 0);
  return out;
}

/** A decoded TLV header: `start` is the first contents byte, `end` one past the last. */
export interface TlvHeader {
  tag: number;
  start: number;
  end: number;
}

/**
 * Why `readTlv` refused: `missing` when nothing is left before the limit, `truncated` when the
 * element runs past it. Parsers with an error type of their own map these to their words.
 */
export type DerFault = 'missing' | 'truncated' | 'high-tag' | 'indefinite' | 'too-long' | 'non-minimal';

const DER_FAULT_MESSAGES: Record<DerFault, string> = {
  missing: 'truncated DER',
  truncated: 'truncated DER',
  'high-tag': 'high tag numbers are not supported',
  indefinite: 'indefinite lengths are not DER',
  'too-long': 'unsupported DER length',
  'non-minimal': 'non-minimal DER length',
};

/** DER that `readTlv` refuses. A RangeError, as the reader threw before it had a type of its own. */
export class DerError extends RangeError {
  constructor(readonly fault: DerFault) {
    super(DER_FAULT_MESSAGES[fault]);
    this.name = 'DerError';
  }
}

const refuse = (fault: DerFault): never => {
  throw new DerError(fault);
};

/**
 * Reads one TLV header at `pos`; the whole element must lie before `limit` (the end of its
 * container, the buffer's end by default). Strict DER (X.690 10.1): definite lengths only, in
 * minimal form, with at most `maxLengthOctets` length octets (4 by default), and low tag numbers
 * only (nothing in X.509, PKCS#10 or OCSP uses the high-tag form). The one reader of DER from
 * outside: CSRs, OCSP requests, keys and certificates all come through here. Throws DerError.
 */
export function readTlv(buf: Bytes, pos = 0, limit = buf.length, maxLengthOctets = 4): TlvHeader {
  if (limit > buf.length) limit = buf.length;
  if (pos >= limit) refuse('missing');
  if (pos + 2 > limit) refuse('truncated');
  const tag = buf[pos] as number;
  if ((tag & 0x1f) === 0x1f) refuse('high-tag');
  let len = buf[pos + 1] as number;
  let start = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0) refuse('indefinite');
    if (n > maxLengthOctets) refuse('too-long');
    if (start + n > limit) refuse('truncated');
    if (buf[start] === 0) refuse('non-minimal');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[start + i] as number);
    if (len < 0x80) refuse('non-minimal');
    start += n;
  }
  const end = start + len;
  if (end > limit) refuse('truncated');
  return { tag, start, end };
}

/** An element read by DerCursor: its header, and `at`, where its tag starts. */
export type ReadElement = TlvHeader & { at: number };

/**
 * A strict cursor over the children of one constructed element of outside DER, for the readers
 * of requests and responses (OCSP). Every refusal goes through `fail`, so a reader throws its own
 * error type and nothing else. `owned`: what bytes() and whole() return is a copy that owns its
 * memory, for values kept beyond the input (else a view into it).
 */
export class DerCursor {
  constructor(
    readonly buf: Buffer,
    private pos: number,
    private readonly end: number,
    private readonly fail: (message: string) => never,
    private readonly owned = false,
  ) {}

  get done(): boolean {
    return this.pos >= this.end;
  }

  peekTag(): number | undefined {
    return this.done ? undefined : this.buf[this.pos];
  }

  /** The next element, which must have `tag`. */
  next(tag: number, what: string): ReadElement {
    if (this.done) this.fail(`${what} is missing`);
    const at = this.pos;
    let h: TlvHeader;
    try {
      h = readTlv(this.buf, this.pos, this.end);
    } catch (e) {
      if (e instanceof DerError && e.fault === 'truncated') return this.fail(`${what} runs past its container`);
      return this.fail(`${what}: ${e instanceof DerError ? e.message : 'unreadable'}`);
    }
    if (h.tag !== tag) this.fail(`${what}: unexpected tag 0x${h.tag.toString(16)}`);
    this.pos = h.end;
    return { ...h, at };
  }

  children(h: TlvHeader): DerCursor {
    return new DerCursor(this.buf, h.start, h.end, this.fail, this.owned);
  }

  /** The element's content. */
  bytes(h: TlvHeader): Buffer {
    return this.slice(h.start, h.end);
  }

  /** The whole element, header included. */
  whole(h: ReadElement): Buffer {
    return this.slice(h.at, h.end);
  }

  finish(what: string): void {
    if (!this.done) this.fail(`${what} has unexpected trailing content`);
  }

  private slice(from: number, to: number): Buffer {
    const view = this.buf.subarray(from, to);
    return this.owned ? Buffer.from(view) : view;
  }
}

/** Whether `der` is exactly one strict DER TLV (with tag `tag`, when given) and nothing after it. */
export function isSingleTlv(der: Bytes, tag?: number): boolean {
  try {
    const h = readTlv(der, 0);
    return h.end === der.length && (tag === undefined || h.tag === tag);
  } catch {
    return false;
  }
}

/**
 * Runs a parser of outside bytes so that it throws its own error type and nothing else: whatever
 * else escapes it (a RangeError from a Buffer, a bug) becomes `new ErrorType(message)`.
 */
export function refusingWith<T>(ErrorType: new (message: string) => Error, message: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    if (e instanceof ErrorType) throw e;
    throw new ErrorType(message);
  }
}
