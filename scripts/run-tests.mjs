#!/usr/bin/env node
// Runs every test file under test/ with Node's test runner and tsx.
// Node 20's --test takes no globs, so the files are found here. Arguments keep only the files
// whose path contains one of them: `npm run test:unit` passes `test/unit/`.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return find(path);
    return name.endsWith('.test.ts') ? [path] : [];
  });
}

const filters = process.argv.slice(2);
const files = find('test')
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
// The console tests (and the service at / and /console) need the built console: build it if missing.
const build = spawnSync(process.execPath, ['scripts/build-console.mjs', '--if-missing'], { stdio: 'inherit' });
if (build.status !== 0) {
  console.error('the console build failed (scripts/build-console.mjs)');
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  // A hung test fails after 20 minutes instead of holding CI to its limit (seen here: a failing
  // assert.ok() without a message can hang while Node looks for its source text under tsx).
  ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=1200000', '--test-reporter=spec', ...files],
  { stdio: 'inherit', env: { ...process.env, NODE_ENV: 'test' } },
);
process.exit(result.status ?? 1);
