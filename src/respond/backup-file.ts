import type { AuditCheckpoint } from '../audit/audit-anchor.js';
import { createCipheriv, createDecipheriv, createHash, createHmac, timingSafeEqual, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import { createGunzip, createGzip } from 'node:zlib';
import { deriveKey, type Kek } from '../ca/kek.js';
import { DomainError } from '../shared/errors.js';

/**
 * The backup file (format version 1):
 *
 *   "MQTT-CA BACKUP\n"                       15 bytes of magic
 *   u32be n, header                           n bytes of JSON (BackupHeader), readable without the KEK
 *   HMAC-SHA256(header key, magic | n | header)   32 bytes
 *   chunk*                                    u8 flags (1 = final) | u32be length | AES-256-GCM ciphertext | 16-byte tag
 *
 * The body — gzip of NDJSON, one line per table start, row and table end — is cut into chunks
 * of CHUNK_SIZE bytes and each sealed on its own: key = HKDF(KEK, "mqtt-ca backup <id>"), nonce =
 * the chunk's index, additional data = the index and the flags. A chunk altered, moved, dropped or
 * taken from another backup fails to open; a file that ends before its final chunk is truncated;
 * bytes after it are refused. The header's digest (SHA-256 of the plain body) and row counts are
 * checked once everything has been read.
 */
export const FORMAT_VERSION = 1;
export const MAGIC = Buffer.from('MQTT-CA BACKUP\n', 'latin1');
export const CHUNK_SIZE = 1 << 20;
const MAX_HEADER = 1 << 20;
const MAX_CHUNK = CHUNK_SIZE + 64 * 1024;
const TAG = 16;
const FINAL = 1;

export interface BackupHeader {
  format: 'mqtt-ca-backup';
  formatVersion: number;
  id: string;
  /** UTC ISO-8601: when the snapshot was taken. */
  createdAt: string;
  createdBy: string;
  /** The KEK the body is sealed under — and the CA keys inside stay wrapped under. */
  kekId: string;
  /** The migrations applied to the source, oldest first: the schema the rows belong to. */
  migrations: string[];
  /** Rows per table, in the order the body carries (and a restore inserts) them. */
  tables: Array<{ name: string; rows: number }>;
  compression: 'gzip';
  cipher: 'AES-256-GCM';
  chunkSize: number;
  chunks: number;
  /** lowercase hex SHA-256 of the plain (uncompressed) body. */
  bodySha256: string;
  /** The audit chain's head in the snapshot, signed (audit-anchor.ts); absent in backups made before it was added. */
  auditCheckpoint?: AuditCheckpoint;
}

/** What a restore or check says about a bad file: a clear message, a 400 at the HTTP edge. */
export class BackupFileError extends DomainError {
  constructor(message: string) {
    super('BadRequest', message);
  }
}

const chunkKey = (kek: Kek, id: string) => deriveKey(kek, `backup ${id}`);
const headerKey = (kek: Kek, id: string) => deriveKey(kek, `backup header ${id}`);

function nonceOf(index: number): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(index), 4);
  return n;
}

function aadOf(index: number, flags: number): Buffer {
  const a = Buffer.alloc(25);
  a.write('mqtt-ca backup v1', 0, 'latin1'); // 17 bytes
  a.writeUInt32BE(Math.floor(index / 2 ** 32), 17);
  a.writeUInt32BE(index >>> 0, 21);
  return Buffer.concat([a, Buffer.from([flags])]);
}

/** Seals gzip output into chunks. */
class Sealer extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  chunks = 0;

  constructor(private readonly key: Buffer) {
    super();
  }

  override _transform(data: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.pending.push(data);
    this.pendingBytes += data.length;
    // Strictly more than a chunk: what is left at the end (up to a whole chunk) is the final chunk.
    while (this.pendingBytes > CHUNK_SIZE) {
      const all = Buffer.concat(this.pending);
      this.push(this.seal(all.subarray(0, CHUNK_SIZE), 0));
      const rest = all.subarray(CHUNK_SIZE);
      this.pending = [rest];
      this.pendingBytes = rest.length;
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    this.push(this.seal(Buffer.concat(this.pending), FINAL));
    cb();
  }

  private seal(plain: Buffer, flags: number): Buffer {
    const index = this.chunks++;
    const c = createCipheriv('aes-256-gcm', this.key, nonceOf(index));
    c.setAAD(aadOf(index, flags));
    const body = Buffer.concat([c.update(plain), c.final()]);
    const head = Buffer.alloc(5);
    head[0] = flags;
    head.writeUInt32BE(body.length, 1);
    return Buffer.concat([head, body, c.getAuthTag()]);
  }
}

/** Opens chunks in order; refuses an altered, reordered or truncated body and trailing bytes. */
class Opener extends Transform {
  private buf: Buffer = Buffer.alloc(0);
  private index = 0;
  private done = false;

  constructor(private readonly key: Buffer) {
    super();
  }

  get chunks(): number {
    return this.index;
  }

  override _transform(data: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    try {
      for (;;) {
        if (this.buf.length === 0) break;
        if (this.done) throw new BackupFileError('the backup file has data after its final chunk: it was altered');
        if (this.buf.length < 5) break;
        const flags = this.buf[0]!;
        const len = this.buf.readUInt32BE(1);
        if ((flags & ~FINAL) !== 0 || len > MAX_CHUNK)
          throw new BackupFileError(`chunk ${this.index} of the backup file is damaged (bad chunk header): the file was altered`);
        if (this.buf.length < 5 + len + TAG) break;
        const body = this.buf.subarray(5, 5 + len);
        const tag = this.buf.subarray(5 + len, 5 + len + TAG);
        const d = createDecipheriv('aes-256-gcm', this.key, nonceOf(this.index));
        d.setAAD(aadOf(this.index, flags));
        d.setAuthTag(tag);
        let plain: Buffer;
        try {
          plain = Buffer.concat([d.update(body), d.final()]);
        } catch {
          throw new BackupFileError(`chunk ${this.index} of the backup file fails authentication: the file was altered, reordered or cut`);
        }
        this.index += 1;
        this.buf = this.buf.subarray(5 + len + TAG);
        if (flags & FINAL) this.done = true;
        this.push(plain);
      }
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    if (!this.done)
      return cb(new BackupFileError(`the backup file is truncated: it ends after chunk ${this.index - 1} without its final chunk`));
    cb();
  }
}

/** Splits NDJSON into parsed lines. */
class Lines extends Transform {
  private rest = '';
  private readonly decoder = new StringDecoder('utf8');
  constructor(private readonly hash: Hash) {
    super({ readableObjectMode: true });
  }
  override _transform(data: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(data);
    const text = this.rest + this.decoder.write(data);
    const parts = text.split('\n');
    this.rest = parts.pop()!;
    try {
      for (const p of parts) if (p.length) this.push(JSON.parse(p));
      cb();
    } catch {
      cb(new BackupFileError('the backup body is not valid: a line does not parse'));
    }
  }
  override _flush(cb: TransformCallback): void {
    if (this.rest.length) return cb(new BackupFileError('the backup body ends inside a line'));
    cb();
  }
}

/** Writes the body (lines from `source`) to `bodyPath` and returns what the header needs. */
export async function writeBody(
  kek: Kek,
  id: string,
  source: AsyncIterable<Buffer>,
  bodyPath: string,
): Promise<{ bodySha256: string; chunks: number }> {
  const hash = createHash('sha256');
  async function* hashed() {
    for await (const b of source) {
      hash.update(b);
      yield b;
    }
  }
  const sealer = new Sealer(chunkKey(kek, id));
  await pipeline(Readable.from(hashed()), createGzip({ level: 6 }), sealer, createWriteStream(bodyPath, { mode: 0o600 }));
  return { bodySha256: hash.digest('hex'), chunks: sealer.chunks };
}

function headerBytes(kek: Kek, header: BackupHeader): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  const mac = createHmac('sha256', headerKey(kek, header.id)).update(MAGIC).update(len).update(json).digest();
  return Buffer.concat([MAGIC, len, json, mac]);
}

/** Writes header + body to `path` (mode 0600) and returns its size and SHA-256. */
export async function assemble(
  kek: Kek,
  header: BackupHeader,
  bodyPath: string,
  path: string,
): Promise<{ sizeBytes: number; sha256: Buffer }> {
  const head = headerBytes(kek, header);
  const hash = createHash('sha256').update(head);
  let size = head.length;
  async function* all() {
    yield head;
    for await (const b of createReadStream(bodyPath)) {
      hash.update(b as Buffer);
      size += (b as Buffer).length;
      yield b as Buffer;
    }
  }
  const out = createWriteStream(path, { mode: 0o600, flags: 'wx' });
  await pipeline(Readable.from(all()), out);
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { sizeBytes: size, sha256: hash.digest() };
}

/** Reads and authenticates the header; the body starts at bodyOffset. Needs the KEK the backup was made under. */
export async function readHeader(path: string, kek: Kek): Promise<{ header: BackupHeader; bodyOffset: number }> {
  const { header, bodyOffset, json, len, mac } = await readRawHeader(path);
  if (header.kekId !== kek.id) {
    throw new BackupFileError(
      `the backup was made under the key-encryption key with id ${header.kekId}, not the loaded one (id ${kek.id}): set MQTT_CA_KEK or MQTT_CA_KEK_FILE to the KEK of the instance the backup came from`,
    );
  }
  const expected = createHmac('sha256', headerKey(kek, header.id)).update(MAGIC).update(len).update(json).digest();
  if (!timingSafeEqual(expected, mac)) throw new BackupFileError('the backup header fails authentication: the file was altered');
  return { header, bodyOffset };
}

/** The header as written, unauthenticated (for listing a file without the KEK). */
export async function readRawHeader(
  path: string,
): Promise<{ header: BackupHeader; bodyOffset: number; json: Buffer; len: Buffer; mac: Buffer }> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new BackupFileError(`cannot open the backup file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const first = Buffer.alloc(MAGIC.length + 4);
    const { bytesRead } = await fh.read(first, 0, first.length, 0);
    if (bytesRead < first.length || !first.subarray(0, MAGIC.length).equals(MAGIC))
      throw new BackupFileError(`${path} is not an mqtt-ca backup file`);
    const len = first.subarray(MAGIC.length);
    const n = len.readUInt32BE();
    if (n > MAX_HEADER) throw new BackupFileError('the backup header is damaged (impossible length): the file was altered');
    const rest = Buffer.alloc(n + 32);
    const r2 = await fh.read(rest, 0, rest.length, first.length);
    if (r2.bytesRead < rest.length) throw new BackupFileError('the backup file is truncated: it ends inside its header');
    const json = rest.subarray(0, n);
    let header: BackupHeader;
    try {
      header = JSON.parse(json.toString('utf8')) as BackupHeader;
    } catch {
      throw new BackupFileError('the backup header is damaged (not JSON): the file was altered');
    }
    if (
      header?.format !== 'mqtt-ca-backup' ||
      typeof header.id !== 'string' ||
      typeof header.kekId !== 'string' ||
      !Array.isArray(header.migrations) ||
      !Array.isArray(header.tables)
    ) {
      throw new BackupFileError('the backup header is damaged (fields missing): the file was altered');
    }
    if (header.formatVersion !== FORMAT_VERSION) {
      throw new BackupFileError(
        `the backup has format version ${header.formatVersion}; this mqtt-ca reads version ${FORMAT_VERSION}: use a newer mqtt-ca`,
      );
    }
    return { header, bodyOffset: first.length + n + 32, json, len, mac: rest.subarray(n) };
  } finally {
    await fh.close();
  }
}

/** A line of the body. */
export type BodyLine =
  | { table: string; columns: Array<[name: string, type: string]>; primaryKey: string[] }
  | { end: string; rows: number }
  | Array<string | null>;

/**
 * Reads the body line by line (parsed) into `onLine`, then checks the digest and chunk count
 * against the header. Everything `onLine` did must be undone by the caller when this throws.
 */
export async function readBody(
  kek: Kek,
  path: string,
  header: BackupHeader,
  bodyOffset: number,
  onLine: (line: BodyLine) => Promise<void>,
): Promise<void> {
  const hash = createHash('sha256');
  const opener = new Opener(chunkKey(kek, header.id));
  const lines = new Lines(hash);
  const gunzip = createGunzip();
  const sink = async (source: AsyncIterable<BodyLine>) => {
    for await (const line of source) await onLine(line);
  };
  try {
    await pipeline(createReadStream(path, { start: bodyOffset }), opener, gunzip, lines, sink);
  } catch (e) {
    if (e instanceof DomainError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('Z_'))
      throw new BackupFileError('the backup body does not decompress: the file was altered');
    throw e;
  }
  if (opener.chunks !== header.chunks)
    throw new BackupFileError(`the backup has ${opener.chunks} chunks, its header says ${header.chunks}`);
  if (hash.digest('hex') !== header.bodySha256) throw new BackupFileError('the backup body does not match the digest in its header');
}
