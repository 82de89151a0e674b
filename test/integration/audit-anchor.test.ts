import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../src/config/config.js';
import { buildService, type Service } from '../../src/main.js';
import { AuditLog } from '../../src/audit/audit-log.js';
import { deriveKey, loadKek } from '../../src/ca/kek.js';
import { restoreBackup } from '../../src/respond/backups.js';
import { systemClock } from '../../src/shared/clock.js';
import { AuditStore } from '../../src/store/audit-store.js';
import { BackupStore } from '../../src/store/backup-store.js';
import { verifyAuditLog } from '../../src/respond/audit-verification.js';
import type { Db } from '../../src/store/db.js';
import { dbTargets, disposeDb } from '../helpers/db.js';

/** Entries deleted straight from the table, as someone with database access would (the append-only trigger switched off). */
async function deleteNewest(db: Db, n: number): Promise<void> {
  await db.transaction(async (trx) => {
    await trx.raw('alter table audit_log disable trigger audit_log_no_update');
    await trx.raw('delete from audit_log where seq > (select max(seq) from audit_log) - ?', [n]);
    await trx.raw('alter table audit_log enable trigger audit_log_no_update');
  });
}

for (const target of dbTargets) {
  describe(`audit anchor on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    let dataDir: string;
    let config: Config;
    let svc: Service;

    const start = () => buildService(config, { db, logger: pino({ level: 'silent' }) });
    const anchorFile = () => config.audit.anchorFile;
    const anchored = () => (existsSync(anchorFile()) ? (JSON.parse(readFileSync(anchorFile(), 'utf8')) as { seq: number }).seq : -1);
    /** Waits until the anchor holds the chain's head (its write is batched, after the commit). */
    async function settled(): Promise<number> {
      const head = (await svc.audit.head(db))?.seq ?? 0;
      for (let i = 0; i < 400 && anchored() !== head; i++) await new Promise((r) => setTimeout(r, 25));
      assert.equal(anchored(), head, 'the anchor file caught up with the head');
      return head;
    }
    const verify = () =>
      verifyAuditLog({ db, audit: svc.audit, checkpoints: svc.auditCheckpoints, anchorFile: anchorFile(), backups: svc.backups });
    const someEntries = async (n: number) => {
      for (let i = 0; i < n; i++) await svc.apiKeys.create({ name: `key ${i}`, role: 'auditor' }, { actor: 'test' });
    };

    before(async () => {
      db = await target.create();
      dataDir = mkdtempSync(join(tmpdir(), 'mqttca-anchor-'));
      config = loadConfig({
        MQTT_CA_KEK: randomBytes(32).toString('base64'),
        DATA_DIR: dataDir,
        LOG_LEVEL: 'silent',
        AUDIT_ANCHOR_BATCH_MS: '10',
      });
      svc = await start();
    });
    after(async () => {
      await svc?.stop();
      if (db) await disposeDb(db);
      rmSync(dataDir, { recursive: true, force: true });
    });

    it('keeps a signed checkpoint of the head in a 0600 file outside the database, following every append', async () => {
      await someEntries(3);
      const head = await settled();
      assert.ok(head >= 4);
      assert.equal(statSync(anchorFile()).mode & 0o777, 0o600);
      const c = JSON.parse(readFileSync(anchorFile(), 'utf8')) as { seq: number; head: string; mac: string };
      assert.equal(c.head, await svc.audit.hashAt(db, head));
      assert.ok(svc.auditCheckpoints.authentic(c));
      assert.equal(svc.auditCheckpoints.authentic({ ...c, seq: c.seq - 1 }), undefined, 'the seq is covered by the MAC');
      const r = await verify();
      assert.equal(r.chain.ok, true);
      assert.deepEqual(r.anchor?.findings, []);
      assert.equal(r.anchor?.newest?.seq, head);
    });

    it('entries deleted from the end: the chain alone says intact, the anchor reports the missing tail', async () => {
      await someEntries(2);
      const head = await settled();
      await deleteNewest(db, 2);
      // What `audit verify` said before the anchor: the shortened chain is intact.
      const chainOnly = await svc.audit.verify(db);
      assert.equal(chainOnly.ok, true);
      const r = await verify();
      assert.equal(r.chain.ok, true);
      assert.deepEqual(
        r.anchor?.findings.map((f) => f.problem),
        ['tail-missing'],
      );
      assert.match(r.anchor!.findings[0]!.message, new RegExp(`seq ${head - 1}\\.\\.${head} are missing from the end of the chain`));
    });

    it('a restart after the cut keeps the old anchor as evidence instead of overwriting it, and verify keeps reporting it', async () => {
      await svc.stop();
      svc = await start();
      const kept = readdirSync(dataDir).filter((f) => f.startsWith('audit-anchor.superseded-'));
      assert.equal(kept.length, 1);
      await someEntries(3); // the chain goes on from the shortened head, past where it was cut
      await settled();
      const r = await verify();
      assert.deepEqual(
        r.anchor?.findings.map((f) => f.problem),
        ['forked'],
        'seq numbers reused by new entries do not hide the cut',
      );
      assert.match(r.anchor!.findings[0]!.source, /kept anchor .*audit-anchor\.superseded-/);
      rmSync(join(dataDir, kept[0]!)); // the operator investigated
      assert.deepEqual((await verify()).anchor?.findings, []);
    });

    it('an anchor file put back to an older copy, with the tail cut to match, is caught by the checkpoint in a newer backup', async () => {
      await settled();
      const old = join(dataDir, 'anchor-copy');
      copyFileSync(anchorFile(), old);
      const oldSeq = anchored();
      await someEntries(2);
      await svc.backups.create({ actor: 'test' });
      const head = await settled();
      await svc.stop();
      await deleteNewest(db, head - oldSeq);
      copyFileSync(old, anchorFile());
      svc = await start();
      assert.equal(
        readdirSync(dataDir).filter((f) => f.startsWith('audit-anchor.superseded-')).length,
        0,
        'the anchor file alone matches the cut chain',
      );
      const r = await verify();
      const problems = r.anchor!.findings.map((f) => f.problem).sort();
      assert.deepEqual(problems, ['rolled-back', 'tail-missing']);
      assert.match(r.anchor!.findings.find((f) => f.problem === 'tail-missing')!.source, /^backup bk_/);
    });

    it('after a restore of an older backup, the checkpoints of the history it replaced are skipped, not reported', async () => {
      for (const f of readdirSync(config.backups.dir)) rmSync(join(config.backups.dir, f));
      const older = await svc.backups.create({ actor: 'test' });
      await someEntries(2);
      await svc.backups.create({ actor: 'test' });
      await settled();
      await svc.stop();
      const fresh = await target.create();
      const { kek } = loadKek(config, false);
      await restoreBackup(
        {
          db: fresh,
          store: new BackupStore(),
          kek,
          audit: new AuditLog(new AuditStore(fresh), deriveKey(kek, 'audit chain'), systemClock),
          clock: systemClock,
        },
        join(config.backups.dir, older.fileName),
        { actor: 'test' },
      );
      await disposeDb(db);
      db = fresh;
      svc = await start(); // finds the anchor of the replaced history and keeps it aside
      assert.equal(readdirSync(dataDir).filter((f) => f.startsWith('audit-anchor.superseded-')).length, 1);
      const r = await verify();
      assert.deepEqual(r.anchor?.findings, []);
      assert.equal(r.skipped.filter((x) => /before the restore/.test(x)).length, 3, r.skipped.join('\n')); // both backups, the kept anchor
      for (const f of readdirSync(dataDir).filter((x) => x.startsWith('audit-anchor.superseded-'))) rmSync(join(dataDir, f));
    });

    it('an anchor file that is not signed with the KEK is reported as forged', async () => {
      for (const f of readdirSync(config.backups.dir)) rmSync(join(config.backups.dir, f));
      await someEntries(1);
      await settled();
      const c = JSON.parse(readFileSync(anchorFile(), 'utf8')) as Record<string, unknown>;
      writeFileSync(anchorFile(), JSON.stringify({ ...c, seq: 1 }));
      const r = await verify();
      assert.deepEqual(
        r.anchor?.findings.map((f) => f.problem),
        ['forged'],
      );
    });
  });
}
