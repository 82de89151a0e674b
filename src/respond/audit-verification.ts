import { readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import {
  compareWithCheckpoints,
  readAnchorFile,
  type AnchorReport,
  type AuditCheckpoints,
  type CheckpointSource,
} from '../audit/audit-anchor.js';
import type { AuditLog, AuditVerifyResult } from '../audit/audit-log.js';
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

/**
 * `audit verify`: the chain (every entry, in order, under the chain key), then its head against
 * every checkpoint kept outside the database: the anchor file, anchors a start found not matching
 * (kept beside it), the backups under BACKUP_DIR, and any the operator brings (from the log stream).
 * Checkpoints made before the last restore describe the history the restore replaced: not compared.
 */
export async function verifyAuditLog(
  d: {
    db: Executor;
    audit: AuditLog;
    checkpoints: AuditCheckpoints;
    anchorFile: string;
    backups: { checkpoints(): Promise<{ sources: CheckpointSource[]; skipped: string[] }> };
  },
  given: CheckpointSource[] = [],
): Promise<AuditVerification> {
  const chain = await d.audit.verify(d.db);
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
