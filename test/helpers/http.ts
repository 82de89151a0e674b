import assert from 'node:assert/strict';
import type request from 'supertest';
import type { Response } from 'supertest';
import { createServer } from 'node:http';
import { run, tempDir, writeTemp } from './openssl.js';
import type { Service } from '../../src/main.js';

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

/** A CA's current CRL as the service serves it (`GET /pki/crl/{caId}.pem`), printed by `openssl crl -text`. */
export async function servedCrlText(api: ReturnType<typeof request>, caId: string): Promise<string> {
  const res = await api.get(`/pki/crl/${caId}.pem`);
  assert.equal(res.status, 200, res.text);
  const out = run('openssl', ['crl', '-noout', '-text', '-in', writeTemp(tempDir(), 'crl.pem', res.text)]);
  assert.equal(out.status, 0, out.stderr);
  return out.stdout;
}

/** An HTTP server for the handler on a free loopback port; `close` ends its connections too (streams). */
export async function listenOnLoopback(handler: Parameters<typeof createServer>[1]): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** The root and issuing CA certificates as PEM files, for openssl's -CAfile and -issuer. */
export async function writeCaFiles(svc: Service, issuingId: string, dir: string): Promise<{ root: string; issuing: string }> {
  const cas = await svc.hierarchy.list();
  return {
    root: writeTemp(dir, 'root.pem', cas.find((c) => c.kind === 'root')!.certificate!),
    issuing: writeTemp(dir, 'issuing.pem', cas.find((c) => c.id === issuingId)!.certificate!),
  };
}

/** A fetch of `base() + path` with an optional JSON body; the answer's body parsed when it is JSON. */
export function jsonCaller(base: () => string) {
  return async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${base()}${path}`, {
      method,
      headers: { ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return {
      status: res.status,
      headers: res.headers,
      body: text && /json/.test(res.headers.get('content-type') ?? '') ? JSON.parse(text) : text,
    };
  };
}
