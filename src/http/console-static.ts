import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { Router, type Response } from 'express';
import { sendProblem } from './problem.js';

/**
 * The web console's policy: nothing inline (no script, no style attribute or element), nothing from
 * another origin, never framed. The console's build emits no inline code, so nothing needs a hash.
 */
export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** Where `npm install` (the `prepare` script: scripts/build-console.mjs) puts the built console: <package root>/dist/console. */
export function defaultConsoleDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, 'dist', 'console');
}

function secureHeaders(res: Response): void {
  res.setHeader('Content-Security-Policy', CONSOLE_CSP);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
}

/**
 * Serves the built console: `/` redirects to `/console/`; `/console/assets/*` are the hashed
 * bundles (cached for a year, immutable); any other `/console` path is the single page's
 * index.html (never cached, so a new build is picked up at once). Without a build, 503 naming the
 * command that makes one.
 */
export function consoleStatic(dir: string = defaultConsoleDir()): Router {
  const r = Router();
  const indexPath = join(dir, 'index.html');
  // Read on every page load (a few hundred bytes): a rebuild is served without a restart.
  const indexHtml = (): Buffer | undefined => (existsSync(indexPath) ? readFileSync(indexPath) : undefined);
  r.get('/', (_req, res) => {
    res.redirect(302, '/console/');
  });
  r.use(
    '/console/assets',
    express.static(join(dir, 'assets'), {
      index: false,
      immutable: true,
      maxAge: '365d',
      dotfiles: 'deny',
      redirect: false,
      setHeaders: (res) => secureHeaders(res as Response),
    }),
  );
  r.get('/console/assets/{*rest}', (_req, res) => {
    sendProblem(res, { status: 404, title: 'Not found', detail: 'no such console asset' });
  });
  r.get(['/console', '/console/{*rest}'], (_req, res) => {
    const html = indexHtml();
    if (!html) {
      sendProblem(res, {
        status: 503,
        title: 'Service unavailable',
        detail: 'the web console is not built: run `npm run build:console` (npm install does it)',
      });
      return;
    }
    secureHeaders(res);
    res.setHeader('Cache-Control', 'no-cache');
    res.type('html').send(html);
  });
  return r;
}
