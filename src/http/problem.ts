import type { ErrorRequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import { DomainError, type ErrorKind } from '../shared/errors.js';

/** RFC 9457 problem details; the one place errors become HTTP. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  requestId?: string;
  errors?: { path: string; message: string }[];
}

const BY_KIND: Record<ErrorKind, { status: number; title: string }> = {
  BadRequest: { status: 400, title: 'Bad request' },
  BadCsr: { status: 400, title: 'Bad certificate signing request' },
  BadKey: { status: 400, title: 'Unacceptable public key' },
  PolicyViolation: { status: 422, title: 'Refused by policy' },
  NotFound: { status: 404, title: 'Not found' },
  Conflict: { status: 409, title: 'Conflict' },
  AlreadyRevoked: { status: 409, title: 'Already revoked' },
  Unauthenticated: { status: 401, title: 'Unauthenticated' },
  Forbidden: { status: 403, title: 'Forbidden' },
  PayloadTooLarge: { status: 413, title: 'Payload too large' },
  Unavailable: { status: 503, title: 'Service unavailable' },
  Internal: { status: 500, title: 'Internal error' },
};

const slug = (title: string) => title.toLowerCase().replace(/[^a-z0-9]+/g, '-');

export function sendProblem(res: Response, p: Omit<Problem, 'type' | 'requestId'> & { type?: string }): void {
  const requestId = res.locals.requestId as string | undefined;
  const body: Problem = { type: p.type ?? `urn:mqtt-ca:problem:${slug(p.title)}`, ...p, ...(requestId ? { requestId } : {}) };
  if (p.status === 401) res.setHeader('WWW-Authenticate', 'Bearer realm="mqtt-ca"');
  res.status(p.status).type('application/problem+json').send(JSON.stringify(body));
}

interface HttpishError {
  status?: number;
  statusCode?: number;
  type?: string;
  errors?: { path?: string; message?: string }[];
  message?: string;
}

/** Maps domain errors, body-parser errors and OpenAPI validation errors; anything else is a 500 without detail. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    if (res.headersSent) return;
    if (err instanceof DomainError) {
      const { status, title } = BY_KIND[err.kind];
      if (status >= 500) {
        logger.error({ err, requestId: res.locals.requestId }, 'request failed');
        sendProblem(res, { status, title, detail: 'the request could not be completed' });
        return;
      }
      sendProblem(res, { status, title, detail: err.message });
      return;
    }
    const e = (err ?? {}) as HttpishError;
    const status = e.status ?? e.statusCode;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      if (e.type === 'entity.too.large') {
        sendProblem(res, { status: 413, title: 'Payload too large', detail: 'the request body exceeds the size limit' });
      } else if (e.type === 'entity.parse.failed') {
        sendProblem(res, { status: 400, title: 'Bad request', detail: 'the body is not valid JSON' });
      } else {
        const title = status === 404 ? 'Not found' : status === 405 ? 'Method not allowed' : status === 415 ? 'Unsupported media type' : 'Bad request';
        const errors = e.errors?.map((x) => ({ path: x.path ?? '', message: x.message ?? '' }));
        sendProblem(res, { status, title, detail: e.message ?? title, ...(errors?.length ? { errors } : {}) });
      }
      return;
    }
    logger.error({ err, requestId: res.locals.requestId, path: req.path }, 'unhandled error');
    sendProblem(res, { status: 500, title: 'Internal error', detail: 'the request could not be completed' });
  };
}
