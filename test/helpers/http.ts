import assert from 'node:assert/strict';
import type { Response } from 'supertest';

/** Asserts an RFC 9457 problem+json response with the given status. */
export function assertProblem(res: Response, status: number, detail?: RegExp): void {
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${res.text}`);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const body = JSON.parse(res.text) as Record<string, unknown>;
  assert.equal(body.status, status);
  assert.equal(typeof body.title, 'string');
  assert.equal(typeof body.type, 'string');
  if (detail) assert.match(String(body.detail), detail);
}
