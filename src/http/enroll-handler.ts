import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Enrollment } from '../enroll/enrollment.js';
import { ContractError, operationContract, type OperationContract } from './openapi-contract.js';
import { problemDocument, problemFor, writeProblem } from './problem.js';
import { assignRequestId, credentialOf, recordWhenFinished, sourceOf } from './request-context.js';
import type { Telemetry } from '../shared/telemetry.js';

export interface EnrollHandlerDeps {
  enrollment: Enrollment;
  logger: Logger;
  telemetry: Telemetry;
  /** BODY_LIMIT, in bytes. */
  bodyLimitBytes: number;
  /** Tests: every response is checked against openapi.yaml, and a mismatch is a 500. */
  validateResponses?: boolean | undefined;
}

/** The paths served here, and the enrollment methods each accepts (all, when undefined). */
const ROUTES: Record<string, string[] | undefined> = {
  '/v1/enroll': undefined,
  '/v1/renew': ['mtls-renewal', 'signed-renewal'],
};

/** The whole request body, or a 413 ContractError past `limit` bytes (the rest is drained, and the connection closed after the answer). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new ContractError(413, 'the request body exceeds the size limit', [], 'entity.too.large');
    if (Number(req.headers['content-length'] ?? 0) > limit) {
      req.resume();
      return reject(tooLarge());
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.off('data', onData);
        req.resume();
        reject(tooLarge());
      } else chunks.push(c);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks, size)));
    req.once('error', reject);
    // A client that goes away mid-body: nothing more will come, and nobody is left to answer.
    req.once('close', () => {
      if (!req.complete) reject(new ContractError(400, 'the request body was cut off'));
    });
  });
}

/**
 * POST /v1/enroll and /v1/renew, the factory line's hot path, on bare node:http in front of
 * Express (as /pki is): measured here, Express and its OpenAPI middleware cost about a third of
 * an enrollment's time on the event loop. The contract is the same — the request is checked
 * against openapi.yaml (headers, media type, body schema), errors are the same problem+json,
 * and tests check the responses. Returns false for requests it does not serve.
 */
export function createEnrollHandler(d: EnrollHandlerDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  const limit = d.bodyLimitBytes;
  const routes = new Map(
    Object.entries(ROUTES).map(([path, methods]) => [path, { path, methods, contract: operationContract(path, 'post') }]),
  );

  const send = (
    res: ServerResponse,
    contract: OperationContract,
    requestId: string,
    status: number,
    type: string,
    body: unknown,
    headers: Record<string, string>,
  ) => {
    if (d.validateResponses) {
      const errors = contract.responseErrors(status, type, body);
      if (errors.length) {
        d.logger.error({ requestId, status, errors }, 'response breaks the API contract');
        return writeProblem(
          res,
          { status: 500, title: 'Internal error', detail: `the response breaks the API contract: ${errors.join('; ')}` },
          requestId,
        );
      }
    }
    if (type === 'application/problem+json') return writeProblem(res, body as Parameters<typeof writeProblem>[1], requestId, headers);
    const json = JSON.stringify(body);
    res.writeHead(status, { ...headers, 'Content-Type': `${type}; charset=utf-8`, 'Content-Length': String(Buffer.byteLength(json)) });
    res.end(json);
  };

  async function serve(
    req: IncomingMessage,
    res: ServerResponse,
    route: { path: string; methods: string[] | undefined; contract: OperationContract },
    query: string,
    requestId: string,
  ) {
    try {
      if (query) throw new ContractError(400, 'this operation takes no query parameters');
      route.contract.checkHeaders(req.headers);
      const body = route.contract.readBody(req.headers['content-type'], await readBody(req, limit));
      const out = await d.enrollment.enroll({
        credential: credentialOf(req),
        csr: 'bytes' in body ? body.bytes : (body.json as { csr: string }).csr,
        idempotencyKey: req.headers['idempotency-key'] as string | undefined,
        ctx: { source: sourceOf(req), requestId },
        methods: route.methods,
      });
      send(res, route.contract, requestId, 201, 'application/json', out.result, out.replayed ? { 'Idempotent-Replayed': 'true' } : {});
    } catch (err) {
      if (res.headersSent) return;
      const { problem, headers, internal } = problemFor(err);
      if (internal) d.logger.error({ err, requestId, path: req.url }, 'request failed');
      if (problem.status === 413) headers.Connection = 'close';
      send(res, route.contract, requestId, problem.status, 'application/problem+json', problemDocument(problem, requestId), headers);
    }
  }

  return (req, res) => {
    if (req.method !== 'POST') return false;
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const route = routes.get(q < 0 ? url : url.slice(0, q));
    if (!route) return false;
    const requestId = assignRequestId(req, res);
    recordWhenFinished(d, req, res, requestId, () => route.path);
    void serve(req, res, route, q < 0 ? '' : url.slice(q + 1), requestId);
    return true;
  };
}
