import express, { Router, type RequestHandler } from 'express';
import type { Role } from '../access/api-keys.js';
import { allow } from './auth.js';

/** Bulk requests (device manifests, bulk revocations by serial) are larger than ordinary ones: up to this. */
export const LARGE_BODY_LIMIT = '5mb';

/**
 * Body parsers for one POST route whose bodies exceed BODY_LIMIT, mounted in app.ts BEFORE the
 * global parsers: the caller is authenticated and its role checked first, so nobody without the
 * right key makes the service read a large body. A body read here is not read again by the global
 * parser. Other methods and paths pass through untouched.
 */
export function largeBodyParsers(
  apiKeyAuth: RequestHandler,
  path: string,
  roles: Role[],
  opts: { csv?: boolean; limit?: string } = {},
): Router {
  const limit = opts.limit ?? LARGE_BODY_LIMIT;
  const r = Router();
  r.post(
    path,
    apiKeyAuth,
    allow(...roles),
    ...(opts.csv ? [express.text({ type: 'text/csv', limit })] : []),
    express.json({ type: ['application/json', 'application/*+json'], limit }),
    (_req, _res, next) => next(),
  );
  return r;
}
