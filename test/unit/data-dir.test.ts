import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataDirError, makePrivate, securePrivateDirs } from '../../src/store/data-dir.js';

const mode = (p: string) => statSync(p).mode & 0o777;

describe('DATA_DIR permissions', () => {
  it('refuses a directory, or the store in it, that group or others may write to, with the fix', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqttca-dd-'));
    try {
      mkdirSync(join(dir, 'pglite'), { mode: 0o700 });
      for (const [path, bits] of [
        [dir, 0o777],
        [dir, 0o720],
        [dir, 0o702],
        [join(dir, 'pglite'), 0o770],
      ] as const) {
        chmodSync(path, bits);
        assert.throws(
          () => securePrivateDirs(dir, [join(dir, 'pglite')]),
          (e: unknown) => e instanceof DataDirError && e.message.includes(`chmod -R go-rwx ${dir}`),
          `${path} ${bits.toString(8)}`,
        );
        chmodSync(path, 0o700);
      }
      securePrivateDirs(dir, [join(dir, 'pglite')]);
      securePrivateDirs(join(dir, 'not-yet'), []); // a DATA_DIR that does not exist yet is made by init/serve, 0700
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('tightens a tree to 0700/0600 without loosening anything or following symbolic links', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mqttca-dd-'));
    const outside = mkdtempSync(join(tmpdir(), 'mqttca-dd-out-'));
    try {
      mkdirSync(join(dir, 'pglite', 'base'), { recursive: true });
      chmodSync(join(dir, 'pglite'), 0o755);
      chmodSync(join(dir, 'pglite', 'base'), 0o777);
      writeFileSync(join(dir, 'pglite', 'base', '1259'), 'x', { mode: 0o666 });
      writeFileSync(join(dir, 'kek'), 'x', { mode: 0o400 });
      writeFileSync(join(outside, 'theirs'), 'x', { mode: 0o644 });
      symlinkSync(join(outside, 'theirs'), join(dir, 'link'));
      makePrivate(dir);
      assert.equal(mode(join(dir, 'pglite')), 0o700);
      assert.equal(mode(join(dir, 'pglite', 'base')), 0o700);
      assert.equal(mode(join(dir, 'pglite', 'base', '1259')), 0o600);
      assert.equal(mode(join(dir, 'kek')), 0o400, 'a stricter mode stays');
      assert.equal(mode(join(outside, 'theirs')), 0o644, 'the link was not followed');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });
});
