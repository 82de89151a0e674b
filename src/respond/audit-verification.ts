import { readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  compareWithCheckpoints,
  readAnchorFile,
  type AnchorReport,
  type AuditCheckpoints,
  type CheckpointSource,
} from '../audit/audit-anchor.js';
import type { AuditHead, AuditLog, AuditVerifyResult } from '../audit/audit-log.js';
import type { Clock } from '../shared/clock.js';
import type { Executor } from '../store/db.js';

export interface AuditVerification {
  chain: AuditVerifyResult;
  /** Only for an intact chain: how it compares with the checkpoints kept outside the database. */
  anchor?: AnchorReport;
  /** Checkpoints not compared, and why (made before the last restore, a backup that cannot be read). */
  skipped: string[];
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

export interface AuditVerificationSources {
  db: Executor;
  audit: AuditLog;
  checkpoints: AuditCheckpoints;
  anchorFile: string;
  backups: { checkpoints(): Promise<{ sources: CheckpointSource[]; skipped: string[] }> };
}

/**
 * `audit verify`: the chain (every entry, in order, under the chain key), then its head against
 * every checkpoint kept outside the database: the anchor file, anchors a start found not matching
 * (kept beside it), the backups under BACKUP_DIR, and any the operator brings (from the log stream).
 * Checkpoints made before the last restore describe the history the restore replaced: not compared.
 * With `after`, only the chain's entries after that one are walked (AuditLog.verify).
 */
export async function verifyAuditLog(
  d: AuditVerificationSources,
  given: CheckpointSource[] = [],
  opts: { after?: AuditHead } = {},
): Promise<AuditVerification> {
  const chain = await d.audit.verify(d.db, { after: opts.after });
  if (!chain.ok) return { chain, skipped: [] };
  const skipped: string[] = [];
  const others: CheckpointSource[] = [];
  const kept = `${basename(d.anchorFile)}.superseded-`;
  for (const f of await listDir(dirname(d.anchorFile))) {
    if (f.startsWith(kept))
      others.push({ source: `kept anchor ${join(dirname(d.anchorFile), f)}`, value: await readAnchorFile(join(dirname(d.anchorFile), f)) });
  }
  const inBackups = await d.backups.checkpoints();
  others.push(...inBackups.sources);
  skipped.push(...inBackups.skipped);
  others.push(...given);
  const restored = (await d.audit.list({ action: 'backup.restored', limit: 1 })).items[0]?.at;
  const compared = others.filter((o) => {
    const at = (o.value as { at?: unknown } | undefined)?.at;
    if (restored === undefined || typeof at !== 'string' || at >= restored) return true;
    skipped.push(`${o.source}: made at ${at}, before the restore at ${restored}`);
    return false;
  });
  const anchor = await compareWithCheckpoints(
    d.checkpoints,
    chain.head,
    (seq) => d.audit.hashAt(d.db, seq),
    { source: `anchor file ${d.anchorFile}`, value: await readAnchorFile(d.anchorFile) },
    compared,
  );
  return { chain, anchor, skipped };
}

/** How much of the chain a verification walked: all of it, or the entries after `from`. */
export interface ChainScope {
  mode: 'full' | 'incremental';
  /** The entries after this seq were walked by this verification (0: all of them). */
  from: number;
  /** When the whole chain was last walked and found intact: this one, or the one `from` comes from. */
  fullAt: Date;
}

/**
 * GET /v1/audit/verification: the chain's verification with the newest entry this process found
 * intact remembered (in memory), so the next one walks only the entries appended since
 * (incremental). The whole chain is walked on the first verification, on request (`full`), when
 * the last whole walk is older than `fullEveryMs` (AUDIT_FULL_VERIFY_MINUTES; 0: always), and
 * after any verification that found the chain broken. An edit of an entry already verified is
 * therefore seen by the next whole walk, at most `fullEveryMs` later; `audit verify` (the CLI)
 * always walks the whole chain.
 */
export class AuditChainVerifier {
  private point: { head: AuditHead; fullAt: Date } | undefined;

  constructor(
    private readonly sources: AuditVerificationSources,
    private readonly clock: Clock,
    private readonly fullEveryMs: number,
  ) {}

  async verify(opts: { full?: boolean } = {}): Promise<AuditVerification & { at: Date; scope: ChainScope }> {
    const at = this.clock.now();
    const from = this.point;
    const incremental = !opts.full && from !== undefined && at.getTime() - from.fullAt.getTime() < this.fullEveryMs;
    const v = await verifyAuditLog(this.sources, [], incremental ? { after: from.head } : {});
    const fullAt = incremental ? from.fullAt : at;
    // An incremental result moves the point on only if no other verification moved or dropped it meanwhile.
    if (!incremental || this.point === from) {
      const head = v.chain.ok ? v.chain.head : null;
      this.point = head ? { head: { seq: head.seq, hash: Buffer.from(head.hash, 'hex') }, fullAt } : undefined;
    }
    return { ...v, at, scope: { mode: incremental ? 'incremental' : 'full', from: incremental ? from.head.seq : 0, fullAt } };
  }
}
