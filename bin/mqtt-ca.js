#!/usr/bin/env node
// The `mqtt-ca` command. From a source tree it runs src/cli.ts through tsx (a dependency), so it
// works right after `npm install` and never runs a build older than the source; a package that
// ships only the compiled dist/ (npm run build) runs that.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli.ts', import.meta.url);
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
} else {
  await import('../dist/src/cli.js');
}
