import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  deviceOf,
  judgeBackupPlacement,
  judgeKekPlacement,
  measureStorageLayout,
  type StorageLayout,
} from '../../src/detect/storage-layout.js';

const at = (path: string, device: number | null) => ({ path, device });
const embedded = (kek: number | null, store: number, backups: number): StorageLayout => ({
  store: at('/srv/ca/pglite', store),
  dataDir: at('/srv/ca', store),
  backups: at('/backups', backups),
  kekFile: kek === null ? null : at('/secrets/kek', kek),
});

describe('where the KEK and the backups are kept (posture: data at rest, backup systems)', () => {
  it('measures the filesystem of each path, or of its nearest existing parent', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqttca-layout-'));
    try {
      const l = measureStorageLayout({
        storeDir: join(dir, 'pglite'),
        dataDir: dir,
        backupDir: join(dir, 'not', 'yet', 'made'),
        kekFile: join(dir, 'kek'),
      });
      const dev = statSync(dir).dev;
      assert.deepEqual(l, {
        store: at(join(dir, 'pglite'), dev),
        dataDir: at(dir, dev),
        backups: at(join(dir, 'not', 'yet', 'made'), dev),
        kekFile: at(join(dir, 'kek'), dev),
      });
      assert.equal(measureStorageLayout({ storeDir: null, dataDir: dir, backupDir: dir, kekFile: null }).store, null);
      assert.equal(deviceOf('/'), statSync('/').dev);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a KEK file on the filesystem of the store or of the backups is not met; apart from both, it is', () => {
    assert.equal(judgeKekPlacement(embedded(1, 1, 2)).status, 'unmet');
    assert.match(judgeKekPlacement(embedded(1, 1, 2)).evidence, /same filesystem as the store/);
    assert.equal(judgeKekPlacement(embedded(2, 1, 2)).status, 'unmet');
    assert.match(judgeKekPlacement(embedded(2, 1, 2)).evidence, /same filesystem as BACKUP_DIR/);
    assert.equal(judgeKekPlacement(embedded(3, 1, 2)).status, 'met');
    assert.equal(judgeKekPlacement(embedded(null, 1, 2)).status, 'partial', 'MQTT_CA_KEK: where it is kept is not observed');
    assert.match(judgeKekPlacement(embedded(null, 1, 2)).evidence, /not observed/);
    const unreadable = { ...embedded(3, 1, 2), kekFile: at('/secrets/kek', null) };
    assert.equal(judgeKekPlacement(unreadable).status, 'unmet', 'a placement that cannot be read is not taken as apart');
  });

  it('with DATABASE_URL, a KEK file is judged against DATA_DIR and BACKUP_DIR, and the database disk is said to be unobserved', () => {
    const remote = (kek: number, dataDir: number, backups: number): StorageLayout => ({
      store: null,
      dataDir: at('/srv/ca', dataDir),
      backups: at('/backups', backups),
      kekFile: at('/secrets/kek', kek),
    });
    assert.equal(judgeKekPlacement(remote(1, 1, 2)).status, 'unmet');
    assert.match(judgeKekPlacement(remote(1, 1, 2)).evidence, /same filesystem as DATA_DIR/);
    assert.equal(judgeKekPlacement(remote(2, 1, 2)).status, 'unmet');
    const apart = judgeKekPlacement(remote(3, 1, 2));
    assert.equal(apart.status, 'met');
    assert.match(apart.evidence, /DATABASE_URL database: not observed/);
    assert.equal(judgeBackupPlacement(remote(3, 1, 1)).status, 'partial');
    assert.match(judgeBackupPlacement(remote(3, 1, 2)).evidence, /DATABASE_URL database: not observed/);
  });

  it('backups on the filesystem of the store are partial at best; on another, placement is met', () => {
    assert.equal(judgeBackupPlacement(embedded(3, 1, 1)).status, 'partial');
    assert.match(judgeBackupPlacement(embedded(3, 1, 1)).evidence, /same filesystem as the store/);
    assert.equal(judgeBackupPlacement(embedded(3, 1, 2)).status, 'met');
    assert.match(judgeBackupPlacement(embedded(3, 1, 2)).evidence, /another machine: not observed/);
  });
});
