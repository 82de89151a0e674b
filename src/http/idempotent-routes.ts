import { Router, type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import type { Idempotency } from '../enroll/idempotency.js';
import { DomainError } from '../shared/errors.js';
import type { Principal } from './auth.js';

/**
 * The state-changing routes an operator, the console and the CLI use, which take an
 * `Idempotency-Key` (issue #25; draft-ietf-httpapi-idempotency-key-header). Other routes ignore
 * the header (enrollment has its own: src/enroll/enrollment.ts).
 */
export const IDEMPOTENT_ROUTES: readonly (readonly ['post' | 'patch', string])[] = [
  ['post', '/v1/certificates/:serial/revoke'],
  ['post', '/v1/certificates/:serial/release'],
  ['post', '/v1/revocations'],
  ['post', '/v1/devices'],
  ['post', '/v1/devices/import'],
  ['patch', '/v1/devices/:deviceId'],
  ['post', '/v1/devices/:deviceId/readmit'],
  ['post', '/v1/devices/:deviceId/decommission'],
  ['post', '/v1/enrollment-tokens'],
  ['post', '/v1/incidents'],
  ['post', '/v1/incidents/:incidentId/actions'],
  ['post', '/v1/incidents/:incidentId/steps/:stepId/retry'],
  ['post', '/v1/incidents/:incidentId/close'],
  ['post', '/v1/approvals/:approvalId/approve'],
  ['post', '/v1/approvals/:approvalId/reject'],
];

/** The response headers a replay repeats (the rest are the replay's own). */
const REPLAYED_HEADERS = ['location', 'revocation-changed', 'also-revoked'];

/**
 * Top-level response fields that are shown once (openapi.yaml): an enrollment token's `token`, an
 * incident reissue's or an approved reissue's `secrets`, an API key's `key`. Never kept: a
 * response that carried one is kept without it, and its replay is a 409 naming what was made.
 */
const SHOWN_ONCE = ['token', 'secrets', 'key'] as const;

/** A response as it is kept under its key: status, the headers a replay repeats, the JSON body. */
export interface KeptResponse {
  status: number;
  headers: Record<string, string>;
  body: unknown;
  /** The shown-once fields taken out of the body before it was kept. */
  secretsRemoved?: string[];
}

/** The route answered something that is not kept (an error, a non-JSON body): its answer goes out as it is. */
class NotKept extends Error {
  constructor(readonly send: () => void) {
    super('the response is not kept');
  }
}

/**
 * Idempotency-Key on IDEMPOTENT_ROUTES, in front of the routes themselves (after authentication
 * and request validation). Scoped to the API key (a console session acts as its key): another
 * key's same Idempotency-Key is another claim. The first request claims (key, method, route,
 * SHA-256 of the body) in progress and runs; a 2xx JSON answer is kept before it goes out, any
 * other answer (4xx: nothing was done; 5xx: the key is released so a retry runs) is not. A repeat
 * gets the kept answer with `Idempotent-Replayed: true` and runs nothing; another body or route
 * under the key is 422, a repeat while the first runs 409 with Retry-After. A kept answer whose
 * shown-once secret was taken out is replayed as 409 naming what was made.
 */
export function idempotentRoutes(idempotency: Idempotency, opts: { ttlMs: number }): Router {
  const handler: RequestHandler = async (req, res, next) => {
    const key = req.header('idempotency-key');
    const principal = res.locals.principal as Principal | undefined;
    if (key === undefined || !principal) return next();
    let send: (() => void) | undefined;
    try {
      const { response, replayed } = await idempotency.run<KeptResponse>(
        `api-key:${principal.keyId}`,
        key,
        requestBytes(req),
        (r) => r.status,
        () =>
          capture(res, next, (s) => {
            send = s;
          }),
        async () => undefined, // a claim whose process died: this request runs as a first one
        { method: req.method, route: req.originalUrl, ttlMs: opts.ttlMs, keep: withoutSecrets },
      );
      if (!replayed) return send!();
      replay(res, response);
    } catch (e) {
      if (e instanceof NotKept) return e.send();
      // The route ran and answered, but its answer could not be kept: it goes out all the same.
      if (send) return send();
      next(e);
    }
  };
  const r = Router();
  for (const [method, path] of IDEMPOTENT_ROUTES) r[method](path, handler);
  return r;
}

/** What the key's request hash covers: the body as parsed (JSON re-serialized, CSV as text), nothing for none. */
function requestBytes(req: Request): string | Uint8Array {
  const body: unknown = req.body;
  if (body === undefined || body === null) return '';
  if (typeof body === 'string') return body;
  if (Buffer.isBuffer(body)) return body;
  return JSON.stringify(body);
}

/**
 * Lets the route run (`next()`) and resolves with its answer when it ends in a 2xx JSON body, the
 * answer held back (`onKept` gets the function that sends it) until it is kept; anything else
 * rejects with NotKept carrying the function that sends it.
 */
function capture(res: Response, next: NextFunction, onKept: (send: () => void) => void): Promise<KeptResponse> {
  return new Promise<KeptResponse>((resolve, reject) => {
    const json = res.json;
    const end = res.end;
    let body: unknown;
    let isJson = false;
    res.json = function (this: Response, b: unknown) {
      body = b;
      isJson = true;
      return json.call(this, b);
    } as Response['json'];
    res.end = function (this: Response, ...args: unknown[]) {
      res.end = end;
      const send = () => {
        (end as (...a: unknown[]) => Response).apply(res, args);
      };
      if (isJson && res.statusCode >= 200 && res.statusCode < 300) {
        onKept(send);
        const headers: Record<string, string> = {};
        for (const h of REPLAYED_HEADERS) {
          const v = res.getHeader(h);
          if (v !== undefined) headers[h] = String(v);
        }
        resolve({ status: res.statusCode, headers, body });
      } else reject(new NotKept(send));
      return res;
    } as Response['end'];
    next();
  });
}

/** The answer as kept: without its shown-once fields (and saying which it lost). */
export function withoutSecrets(r: KeptResponse): KeptResponse {
  const body = r.body;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return r;
  const removed = SHOWN_ONCE.filter((f) => f in body);
  if (removed.length === 0) return r;
  const kept = { ...(body as Record<string, unknown>) };
  for (const f of removed) delete kept[f];
  return { ...r, body: kept, secretsRemoved: removed };
}

function replay(res: Response, kept: KeptResponse): void {
  if (kept.secretsRemoved?.length) {
    const id = (kept.body as { id?: unknown } | null)?.id;
    const what = kept.secretsRemoved.includes('token')
      ? 'the token was'
      : kept.secretsRemoved.includes('key')
        ? 'the key was'
        : 'its secrets were';
    throw new DomainError(
      'Conflict',
      `already done${typeof id === 'string' ? ` (${id})` : ''}; ${what} shown once, in the first answer, and is not kept: this Idempotency-Key's answer cannot be repeated`,
    );
  }
  res.status(kept.status).set(kept.headers).set('Idempotent-Replayed', 'true').json(kept.body);
}
