import { statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { OutcomeStatus } from './posture.js';

/** A path and the filesystem (st_dev) it is on: its own, or its nearest existing parent's; null when none can be read. */
export interface Placed {
  path: string;
  device: number | null;
}

/** Where the service keeps what protects data at rest and what recovers it, as measured on this machine. */
export interface StorageLayout {
  /** The embedded store's directory (DATA_DIR/pglite); null with DATABASE_URL: that database's disk is not observed here. */
  store: Placed | null;
  dataDir: Placed;
  backups: Placed;
  /** The KEK file (MQTT_CA_KEK_FILE or DATA_DIR/kek); null when the KEK comes from MQTT_CA_KEK. */
  kekFile: Placed | null;
}

export interface Judgement {
  status: OutcomeStatus;
  evidence: string;
}

export type DeviceOf = (path: string) => number | null;

/** st_dev of the path, or of its nearest existing parent (a backup directory may not exist before the first backup). */
export const deviceOf: DeviceOf = (path) => {
  for (let p = path; ; p = dirname(p)) {
    try {
      return statSync(p).dev;
    } catch {
      if (dirname(p) === p) return null;
    }
  }
};

export function measureStorageLayout(
  paths: { storeDir: string | null; dataDir: string; backupDir: string; kekFile: string | null },
  device: DeviceOf = deviceOf,
): StorageLayout {
  const place = (path: string): Placed => ({ path, device: device(path) });
  return {
    store: paths.storeDir === null ? null : place(paths.storeDir),
    dataDir: place(paths.dataDir),
    backups: place(paths.backupDir),
    kekFile: paths.kekFile === null ? null : place(paths.kekFile),
  };
}

const where = (p: Placed) => `${p.path} (filesystem ${p.device ?? 'not readable'})`;
const sameFs = (a: Placed, b: Placed) => a.device === null || b.device === null || a.device === b.device;

/**
 * The database the wrapped keys live in: the embedded store, or with DATABASE_URL, DATA_DIR
 * standing in for it (the database server's disk is not observed).
 */
function storeOrDataDir(l: StorageLayout): { place: Placed; name: string } {
  return l.store ? { place: l.store, name: 'the store' } : { place: l.dataDir, name: 'DATA_DIR' };
}

/**
 * Data-at-rest encryption: CA and session keys are wrapped under the KEK and backups sealed under
 * a key derived from it, so the protection holds only while the KEK is kept apart from them. A
 * KEK file on the filesystem of the store (or DATA_DIR) or of the backups is beside what it
 * protects: one copy of that disk opens everything. An unreadable placement counts as shared.
 */
export function judgeKekPlacement(l: StorageLayout): Judgement {
  const wrapped = 'CA and session keys are stored wrapped under the KEK, backups sealed under a key derived from it';
  const unobservedDb = l.store ? '' : '; the disk of the DATABASE_URL database: not observed';
  if (!l.kekFile) {
    return { status: 'partial', evidence: `${wrapped}; the KEK comes from MQTT_CA_KEK: where it is kept is not observed` };
  }
  const db = storeOrDataDir(l);
  const kekFile = l.kekFile;
  const beside = [db, { place: l.backups, name: 'BACKUP_DIR' }].filter((x) => sameFs(kekFile, x.place));
  if (beside.length) {
    return {
      status: 'unmet',
      evidence: `${wrapped}, but the KEK file ${where(kekFile)} is on the same filesystem as ${beside.map((b) => `${b.name} ${where(b.place)}`).join(' and ')}${unobservedDb}`,
    };
  }
  return {
    status: 'met',
    evidence: `${wrapped}; the KEK file ${where(kekFile)} is on another filesystem than ${db.name} ${where(db.place)} and BACKUP_DIR ${where(l.backups)}${unobservedDb}`,
  };
}

/** Where backups are kept: on the filesystem of the store (or DATA_DIR), one disk lost takes the backups with it. */
export function judgeBackupPlacement(l: StorageLayout): Judgement {
  const db = storeOrDataDir(l);
  const unobservedDb = l.store ? '' : '; the disk of the DATABASE_URL database: not observed';
  if (sameFs(l.backups, db.place)) {
    return {
      status: 'partial',
      evidence: `BACKUP_DIR ${where(l.backups)} is on the same filesystem as ${db.name} ${where(db.place)}${unobservedDb}`,
    };
  }
  return {
    status: 'met',
    evidence: `BACKUP_DIR ${where(l.backups)} is on another filesystem than ${db.name} ${where(db.place)} (whether on another machine: not observed)${unobservedDb}`,
  };
}
