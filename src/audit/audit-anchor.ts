import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * A signed statement of the audit chain's head at a time: entry `seq` had hash `head`. Kept
 * OUTSIDE the database (a file, the log stream, every backup), it shows entries deleted from the
 * END of the chain, which the chain itself cannot show. The MAC key is derived from the KEK and
 * never stored, so someone who can edit the database and the file, but does not hold the KEK,
 * cannot write a checkpoint for a shortened chain.
 */
export interface AuditCheckpoint {
  /** 0 for an empty chain */
  seq: number;
  /** lowercase hex hash of entry `seq` (64 zeros for an empty chain) */
  head: string;
  /** UTC ISO-8601, when the checkpoint was made */
  at: string;
  /** lowercase hex HMAC-SHA256 under the anchor key */
  mac: string;
}

const EMPTY_HEAD = '0'.repeat(64);
const HEX64 = /^[0-9a-f]{64}$/;

export class AuditCheckpoints {
  constructor(private readonly key: Buffer) {
    if (key.length < 32) throw new Error('audit anchor key must be at least 32 bytes');
  }

  sign(head: { seq: number; hash: Buffer } | undefined, at: Date): AuditCheckpoint {
    const c = { seq: head?.seq ?? 0, head: head ? head.hash.toString('hex') : EMPTY_HEAD, at: at.toISOString() };
    return { ...c, mac: this.macOf(c) };
  }

  /** The checkpoint when `v` is one signed under this key; undefined otherwise (malformed or forged). */
  authentic(v: unknown): AuditCheckpoint | undefined {
    if (v === null || typeof v !== 'object') return undefined;
    const c = v as Record<string, unknown>;
    if (!Number.isSafeInteger(c.seq) || (c.seq as number) < 0) return undefined;
    if (typeof c.head !== 'string' || !HEX64.test(c.head) || typeof c.mac !== 'string' || !HEX64.test(c.mac)) return undefined;
    if (typeof c.at !== 'string' || Number.isNaN(Date.parse(c.at))) return undefined;
    const checkpoint = { seq: c.seq as number, head: c.head, at: c.at, mac: c.mac };
    const expected = Buffer.from(this.macOf(checkpoint), 'hex');
    return timingSafeEqual(expected, Buffer.from(checkpoint.mac, 'hex')) ? checkpoint : undefined;
  }

  private macOf(c: { seq: number; head: string; at: string }): string {
    return createHmac('sha256', this.key)
      .update(JSON.stringify(['mqtt-ca/audit-anchor/v1', c.seq, c.head, c.at]), 'utf8')
      .digest('hex');
  }
}

/** Writes `checkpoint` to `path` (mode 0600), replacing it atomically: a reader sees the old file or the new one. */
export async function writeAnchorFile(path: string, checkpoint: AuditCheckpoint): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(JSON.stringify(checkpoint) + '\n', 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** The file's content as JSON; undefined when there is no file. Throws on a file that is not JSON. */
export async function readAnchorFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return { malformed: true };
  }
}

export interface AnchorWriterOptions {
  /** The anchor file (AUDIT_ANCHOR_FILE). */
  path: string;
  /** How long appends are gathered before one checkpoint covers them all (the window a deleted tail is not anchored yet). */
  batchMs: number;
  now: () => Date;
  /** Each checkpoint written, for the log stream. */
  onCheckpoint: (c: AuditCheckpoint) => void;
  onError: (e: unknown) => void;
}

/**
 * Keeps the anchor file at the newest head this process has seen committed: appends within
 * `batchMs` share one checkpoint (one file write, one log line), writes never overlap, and the
 * file never moves back to an older head than this process wrote.
 */
export class AuditAnchorWriter {
  private newest: { seq: number; hash: Buffer } | undefined;
  private writtenSeq = -1;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly checkpoints: AuditCheckpoints,
    private readonly opts: AnchorWriterOptions,
  ) {}

  /** The head the anchor file holds now (anchorAtStart wrote it): nothing older is written. */
  startAt(head: { seq: number; hash: Buffer } | undefined): void {
    this.newest = head;
    this.writtenSeq = head?.seq ?? 0;
  }

  /** A head that has been committed. */
  committed(head: { seq: number; hash: Buffer }): void {
    if (this.newest && this.newest.seq >= head.seq) return;
    this.newest = head;
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.opts.batchMs);
    this.timer.unref();
  }

  /** Writes the newest head now (if not written yet); resolves once it is on disk. */
  flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.writing = this.writing.then(async () => {
      const head = this.newest;
      if (!head || head.seq <= this.writtenSeq) return;
      const c = this.checkpoints.sign(head, this.opts.now());
      // The log line is an anchor of its own: it goes out even when the file cannot be written.
      this.writtenSeq = head.seq;
      this.opts.onCheckpoint(c);
      try {
        await writeAnchorFile(this.opts.path, c);
      } catch (e) {
        this.opts.onError(e);
      }
    });
    return this.writing;
  }
}

/** Where a checkpoint that verify compares the chain with came from. */
export interface CheckpointSource {
  /** e.g. 'anchor file /var/lib/mqtt-ca/audit-anchor', 'backup bk_…' */
  source: string;
  /** The JSON read there (authenticated by the comparison). */
  value: unknown;
}

export type AnchorProblem = 'tail-missing' | 'forked' | 'forged' | 'rolled-back' | 'missing';

export interface AnchorFinding {
  source: string;
  problem: AnchorProblem;
  message: string;
}

export interface AnchorReport {
  /** The newest authentic checkpoint (the anchor file's unless another is newer). */
  newest: (AuditCheckpoint & { source: string }) | null;
  /** Entries the chain holds after the newest checkpoint (made in the batching window, or after the last write). */
  unanchored: number;
  findings: AnchorFinding[];
}

/**
 * Compares an intact chain (head `chainHead`; `hashAt(seq)` the hash of an entry in it) with
 * checkpoints kept elsewhere. The anchor file is `sources[0]`; the rest (backups, a checkpoint
 * from the log stream) can show that the anchor file itself was put back to an older one.
 */
export async function compareWithCheckpoints(
  checkpoints: AuditCheckpoints,
  chainHead: { seq: number; hash: string } | null,
  hashAt: (seq: number) => Promise<string | undefined>,
  anchorFile: CheckpointSource,
  others: CheckpointSource[],
): Promise<AnchorReport> {
  const findings: AnchorFinding[] = [];
  const headSeq = chainHead?.seq ?? 0;
  const authentic: Array<AuditCheckpoint & { source: string }> = [];
  if (anchorFile.value === undefined) {
    findings.push({
      source: anchorFile.source,
      problem: 'missing',
      message: `there is no ${anchorFile.source}: entries removed from the end of the chain cannot be detected without it`,
    });
  }
  for (const s of [anchorFile, ...others]) {
    if (s.value === undefined) continue;
    const c = checkpoints.authentic(s.value);
    if (!c) {
      findings.push({
        source: s.source,
        problem: 'forged',
        message: `the checkpoint in ${s.source} is malformed or not signed with this KEK`,
      });
      continue;
    }
    authentic.push({ ...c, source: s.source });
    if (c.seq > headSeq) {
      const missing = c.seq === headSeq + 1 ? `seq ${c.seq} is` : `seq ${headSeq + 1}..${c.seq} are`;
      findings.push({
        source: s.source,
        problem: 'tail-missing',
        message: `${missing} missing from the end of the chain: ${s.source} records seq ${c.seq} at ${c.at}, the chain ends at seq ${headSeq}`,
      });
    } else if (c.seq > 0 && (await hashAt(c.seq)) !== c.head) {
      findings.push({
        source: s.source,
        problem: 'forked',
        message: `seq ${c.seq} is not the entry ${s.source} records (made at ${c.at}): the chain was rewritten from there`,
      });
    }
  }
  const fileCheckpoint = authentic.find((c) => c.source === anchorFile.source);
  if (fileCheckpoint) {
    const later = authentic.filter((c) => c.source !== anchorFile.source && c.seq > fileCheckpoint.seq && c.at > fileCheckpoint.at);
    for (const c of later) {
      findings.push({
        source: anchorFile.source,
        problem: 'rolled-back',
        message: `${anchorFile.source} records seq ${fileCheckpoint.seq} at ${fileCheckpoint.at}, older than ${c.source} (seq ${c.seq} at ${c.at}): it was put back to an older copy`,
      });
    }
  }
  const newest = authentic.reduce<(AuditCheckpoint & { source: string }) | null>((n, c) => (n === null || c.seq > n.seq ? c : n), null);
  return { newest, unanchored: Math.max(0, headSeq - (newest?.seq ?? 0)), findings };
}

export type AnchorAtStart =
  | { status: 'matches' | 'created' | 'advanced'; checkpoint: AuditCheckpoint }
  | { status: 'superseded'; checkpoint: AuditCheckpoint; kept: string; finding: string };

/** Where an anchor that did not match the chain at start is kept, as evidence, beside the anchor file. */
export const supersededAnchorPath = (path: string, at: Date) => `${path}.superseded-${at.toISOString().replace(/[-:.]/g, '')}`;

/**
 * At start, before the first append: compares the anchor file with the chain's head and
 * anchors the head. An anchor the chain does not reach (entries missing from its end), does not
 * match (rewritten) or that is not authentic is not overwritten: it is kept beside the file
 * (`supersededAnchorPath`), where `audit verify` keeps reporting it until an operator removes it.
 */
export async function anchorAtStart(
  checkpoints: AuditCheckpoints,
  path: string,
  head: { seq: number; hash: Buffer } | undefined,
  hashAt: (seq: number) => Promise<string | undefined>,
  now: Date,
): Promise<AnchorAtStart> {
  const found = await readAnchorFile(path);
  const checkpoint = checkpoints.sign(head, now);
  const headSeq = head?.seq ?? 0;
  if (found === undefined) {
    await writeAnchorFile(path, checkpoint);
    return { status: 'created', checkpoint };
  }
  const c = checkpoints.authentic(found);
  let finding: string | undefined;
  if (!c) finding = `${path} is malformed or not signed with this KEK`;
  else if (c.seq > headSeq)
    finding = `${path} records seq ${c.seq} (at ${c.at}); the chain ends at seq ${headSeq}: entries are missing from its end`;
  else if (c.seq > 0 && (await hashAt(c.seq)) !== c.head)
    finding = `${path} records seq ${c.seq} (at ${c.at}) with another hash: the chain was rewritten from there`;
  if (finding !== undefined) {
    const kept = supersededAnchorPath(path, now);
    await rename(path, kept);
    await writeAnchorFile(path, checkpoint);
    return { status: 'superseded', checkpoint, kept, finding };
  }
  if (c!.seq === headSeq) return { status: 'matches', checkpoint: c! };
  await writeAnchorFile(path, checkpoint);
  return { status: 'advanced', checkpoint };
}
