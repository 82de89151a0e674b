#!/usr/bin/env node
// The `mqtt-ca` command. From a source tree it runs src/cli.ts through tsx (a dependency), so it
// works right after `npm install` and never runs a build older than the source; a package that
// ships only the compiled dist/ (npm run build) runs that. The daily-work commands over the API
// (devices, tokens, certs, incidents, approvals, posture) start from src/cli/entry.ts, which
// leaves the service's code unloaded.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli.ts', import.meta.url);
const fromSource = existsSync(source);
if (fromSource) {
  const { register } = await import('tsx/esm/api');
  register();
}
const entry = await import(fromSource ? new URL('../src/cli/entry.ts', import.meta.url).href : '../dist/src/cli/entry.js');
if (entry.isApiInvocation(process.argv.slice(2))) await entry.runApiCommands(process.argv);
else await import(fromSource ? source.href : '../dist/src/cli.js');
