import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defaultConsoleDir } from '../../src/http/console-static.js';

/** Builds the web console (scripts/build-console.mjs) unless dist/console has a build; throws when the build fails. */
export function ensureConsoleBuilt(): string {
  const dir = defaultConsoleDir();
  if (existsSync(`${dir}/index.html`)) return dir;
  const script = fileURLToPath(new URL('../../scripts/build-console.mjs', import.meta.url));
  const r = spawnSync(process.execPath, [script, '--if-missing'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`the console build failed:\n${r.stdout}\n${r.stderr}`);
  return dir;
}
