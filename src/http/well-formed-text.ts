import type { RequestHandler } from 'express';

/**
 * Text a request may carry: Unicode scalar values other than U+0000. PostgreSQL's text and jsonb
 * cannot hold a NUL, and a UTF-16 surrogate without its pair (JSON lets a client write "\ud800")
 * is no character at all: jsonb refuses it and UTF-8 turns it into U+FFFD. In `u` mode, \p{Cs}
 * matches only a surrogate that is not half of a pair.
 */
// eslint-disable-next-line no-control-regex -- the NUL is what this looks for
const NOT_TEXT = /[\u0000\p{Cs}]/u;

function defectOf(s: string): string | undefined {
  if (!NOT_TEXT.test(s)) return undefined;
  return s.includes('\u0000') ? 'must not contain NUL (U+0000)' : 'must not contain an unpaired UTF-16 surrogate';
}

/** The 1-based line of the first defect in a multi-line string (a CSV manifest, say). */
function lineOf(s: string): number {
  const at = s.search(NOT_TEXT);
  let line = 1;
  for (let i = s.indexOf('\n'); i >= 0 && i < at; i = s.indexOf('\n', i + 1)) line++;
  return line;
}

const pointer = (key: string) => key.replaceAll('~', '~0').replaceAll('/', '~1');

/**
 * The first string (value or object key) in a parsed JSON value, a query or a set of parameters
 * that is not text, as a validation error whose path is a JSON pointer under `at` (as
 * `/body/site`, like the OpenAPI validator's). Walks without recursion: a body may nest deeply.
 */
export function badTextIn(value: unknown, at: string): { path: string; message: string } | undefined {
  const stack: [unknown, string][] = [[value, at]];
  while (stack.length) {
    const [v, path] = stack.pop()!;
    if (typeof v === 'string') {
      const message = defectOf(v);
      if (message) return { path, message: v.includes('\n') ? `${message} (line ${lineOf(v)})` : message };
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], `${path}/${i}`]);
    } else if (v !== null && typeof v === 'object' && !ArrayBuffer.isView(v)) {
      const entries = Object.entries(v);
      for (let i = entries.length - 1; i >= 0; i--) {
        const [k, x] = entries[i]!;
        const message = defectOf(k);
        if (message) return { path: `${path}/${pointer(k.replace(NOT_TEXT, '\uFFFD'))}`, message: `a key ${message}` };
        stack.push([x, `${path}/${pointer(k)}`]);
      }
    }
  }
  return undefined;
}

/** The request's path, decoded, for requests the OpenAPI validator did not match to named parameters. */
function decodedPath(path: string): string {
  try {
    return decodeURIComponent(path);
  } catch {
    return path; // a malformed escape is the router's 400 to give
  }
}

/**
 * Refuses, with a 400 that names the field, a request whose body (JSON or text), query or path
 * parameters carry a NUL or an unpaired surrogate: once, here, for every text field of every route,
 * so none reaches a text column. Runs after the body parsers and the OpenAPI validator (whose
 * `req.openapi.pathParams` names the path's parameters). Headers are not walked: Node refuses a
 * NUL in a header, and header values are Latin-1, which has no surrogates.
 */
export const wellFormedText: RequestHandler = (req, _res, next) => {
  const params = (req as { openapi?: { pathParams?: Record<string, string> } }).openapi?.pathParams;
  const found =
    badTextIn(params ?? { path: decodedPath(req.path) }, params ? '/params' : '') ??
    badTextIn(req.query, '/query') ??
    badTextIn(req.body, '/body');
  if (!found) return next();
  next(Object.assign(new Error(`request${found.path} ${found.message}`), { status: 400, errors: [found] }));
};
