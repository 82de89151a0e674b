#!/usr/bin/env node
// Builds the web console (console/src, Preact + TSX) into dist/console: esbuild bundles and
// minifies it into content-hashed files under dist/console/assets, and index.html names them.
// Run by `npm install` (the `prepare` script) and by `npm run build:console`; nothing is fetched.
// `--if-missing` builds only when dist/console/index.html is absent (what tests call).
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'console');

export async function buildConsole({ quiet = false } = {}) {
  const staging = `${out}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: ['console/src/main.tsx'],
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2022'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    outdir: join(staging, 'assets'),
    entryNames: '[name]-[hash]',
    assetNames: '[name]-[hash]',
    legalComments: 'none',
    metafile: true,
    logLevel: quiet ? 'error' : 'warning',
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  const outputs = Object.keys(result.metafile.outputs);
  const js = outputs.find((f) => f.endsWith('.js'));
  const css = outputs.find((f) => f.endsWith('.css'));
  if (!js || !css) throw new Error(`console build: expected one .js and one .css output, got ${outputs.join(', ')}`);
  const html = readFileSync(join(root, 'console', 'index.html'), 'utf8')
    .replace('%JS%', basename(js))
    .replace('%CSS%', basename(css));
  writeFileSync(join(staging, 'index.html'), html);
  // Swap in the new build whole, so a running service never serves an index naming missing assets for long.
  mkdirSync(dirname(out), { recursive: true });
  rmSync(out, { recursive: true, force: true });
  renameSync(staging, out);
  const gz = gzipSync(readFileSync(join(out, 'assets', basename(js)))).length;
  if (!quiet) console.log(`console built: dist/console (${basename(js)}, ${basename(css)}; JavaScript ${gz} bytes gzipped)`);
  return { js: basename(js), css: basename(css), gzippedJsBytes: gz };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv.includes('--if-missing') && existsSync(join(out, 'index.html'))) process.exit(0);
  await buildConsole();
}
