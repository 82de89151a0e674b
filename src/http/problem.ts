import type { ErrorRequestHandler, Response } from 'express';
import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { DomainError, type ErrorKind } from '../shared/errors.js';
import { isDatabaseUnavailable } from '../store/db.js';

/** RFC 9457 problem details; the one place errors become HTTP. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  requestId?: string;
  errors?: ProblemError[];
}

/** One item of a problem's `errors`: a request-validation error (`path`) or a row of a bulk input (`row`, `id`, `field`). */
export interface ProblemError {
  path?: string;
  message?: string;
  row?: number;
  id?: string;
  field?: string;
}

/** The `errors` a domain error carries in its details, keeping only the documented fields. */
function domainErrors(details: Record<string, unknown> | undefined): ProblemError[] | undefined {
  const list = details?.errors;
  if (!Array.isArray(list) || list.length === 0) return undefined;
  return list.map((x: Record<string, unknown>) => {
    const out: ProblemError = {};
    if (typeof x.path === 'string') out.path = x.path;
    if (typeof x.row === 'number' && Number.isInteger(x.row)) out.row = x.row;
    if (typeof x.id === 'string') out.id = x.id;
    if (typeof x.field === 'string') out.field = x.field;
    if (typeof x.message === 'string') out.message = x.message;
    return out;
  });
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
  RateLimited: { status: 429, title: 'Too many requests' },
  Unavailable: { status: 503, title: 'Service unavailable' },
  Internal: { status: 500, title: 'Internal error' },
};

const slug = (title: string) => title.toLowerCase().replace(/[^a-z0-9]+/g, '-');

export type ProblemInput = Omit<Problem, 'type' | 'requestId'> & { type?: string };

export function problemDocument(p: ProblemInput, requestId: string | undefined): Problem {
  return { type: p.type ?? `urn:mqtt-ca:problem:${slug(p.title)}`, ...p, ...(requestId ? { requestId } : {}) };
}

/** Writes a problem on any node:http response (Express's included): the one way a problem goes out. */
export function writeProblem(
  res: ServerResponse,
  p: ProblemInput,
  requestId: string | undefined,
  headers: Record<string, string> = {},
): void {
  const body = JSON.stringify(problemDocument(p, requestId));
  res.writeHead(p.status, {
    ...headers,
    // A route that asks for another scheme (HTTP Basic for the dashboard) has set its own challenge.
    ...(p.status === 401 && !res.hasHeader('WWW-Authenticate') ? { 'WWW-Authenticate': 'Bearer realm="mqtt-ca"' } : {}),
    'Content-Type': 'application/problem+json; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(body)),
  });
  res.end(body);
}

export function sendProblem(res: Response, p: ProblemInput): void {
  writeProblem(res, p, res.locals.requestId as string | undefined);
}

interface HttpishError {
  status?: number;
  statusCode?: number;
  type?: string;
  errors?: { path?: string; message?: string }[];
  message?: string;
}

/**
 * The problem an error becomes: domain errors by kind, body-parser and OpenAPI validation
 * errors by their status; anything else is a 500 without detail. `internal` says the error
 * must be logged (its detail stays out of the response).
 */
export function problemFor(err: unknown): { problem: ProblemInput; headers: Record<string, string>; internal: boolean } {
  const internalError = {
    problem: { status: 500, title: 'Internal error', detail: 'the request could not be completed' },
    headers: {},
    internal: true,
  };
  if (err instanceof DomainError) {
    const { status, title } = BY_KIND[err.kind];
    if (status >= 500)
      return {
        problem: { status, title, detail: 'the request could not be completed' },
        headers: status === 503 ? { 'Retry-After': '1' } : {},
        internal: true,
      };
    const headers: Record<string, string> = {};
    if (typeof err.details?.retryAfterSeconds === 'number') headers['Retry-After'] = String(err.details.retryAfterSeconds);
    const errors = domainErrors(err.details);
    return { problem: { status, title, detail: err.message, ...(errors ? { errors } : {}) }, headers, internal: false };
  }
  if (isDatabaseUnavailable(err)) {
    return {
      problem: { status: 503, title: 'Service unavailable', detail: 'the database is not reachable; retry shortly' },
      headers: { 'Retry-After': '1' },
      internal: true,
    };
  }
  const e = (err ?? {}) as HttpishError;
  const status = e.status ?? e.statusCode;
  if (typeof status !== 'number' || status < 400 || status >= 500) return internalError;
  if (e.type === 'entity.too.large')
    return {
      problem: { status: 413, title: 'Payload too large', detail: 'the request body exceeds the size limit' },
      headers: {},
      internal: false,
    };
  if (e.type === 'entity.parse.failed')
    return { problem: { status: 400, title: 'Bad request', detail: 'the body is not valid JSON' }, headers: {}, internal: false };
  const title =
    status === 404 ? 'Not found' : status === 405 ? 'Method not allowed' : status === 415 ? 'Unsupported media type' : 'Bad request';
  const errors = e.errors?.map((x) => ({ path: x.path ?? '', message: x.message ?? '' }));
  return { problem: { status, title, detail: e.message ?? title, ...(errors?.length ? { errors } : {}) }, headers: {}, internal: false };
}

export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    if (res.headersSent) return;
    const { problem, headers, internal } = problemFor(err);
    if (internal) logger.error({ err, requestId: res.locals.requestId, path: req.path }, 'request failed');
    writeProblem(res, problem, res.locals.requestId as string | undefined, headers);
  };
}
