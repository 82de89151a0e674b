import { stdSerializers } from 'pino';

const CENSOR = '[redacted]';

/** Field names whose values are secrets (or a secret's hash) wherever they appear in a log line. */
const SECRET_FIELD =
  /^(authorization|proxy-authorization|cookie|set-cookie|key|kek|pin)$|(password|passphrase|secret|token|privatekey|private_key|apikey|api_key|sessionkey)s?$|(token|secret|password)_?hash$/i;

export function isSecretField(name: string): boolean {
  return SECRET_FIELD.test(name);
}

/** A copy of a JSON-like value with the values of secret fields (at any depth) replaced by '[redacted]'. */
export function redactSecrets(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object' || depth > 8) return value;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, depth + 1));
  if (value instanceof Date || Buffer.isBuffer(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = isSecretField(k) ? CENSOR : redactSecrets(v, depth + 1);
  return out;
}

/** pg's and PGlite's DatabaseError: an SQLSTATE code and the server's fields. */
function isDatabaseError(e: Record<string, unknown>): boolean {
  return typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && ('severity' in e || 'routine' in e);
}

/** Fields of an error that carry a statement's bound values (PGlite's DatabaseError: params). */
const BOUND_VALUE_FIELDS = ['params', 'parameters', 'bindings', 'queryOptions'];
/** A database error's fields that quote row contents: detail ("Key (token_hash)=(\x…) already exists", "Failing row contains (…)"). */
const DB_VALUE_FIELDS = ['detail'];

function redactDbMessage(code: string, message: string): string {
  // Data exceptions (class 22) quote the offending input: invalid input syntax for type uuid: "…".
  return code.startsWith('22') ? message.replace(/"(?:[^"]|"")*"/g, `"${CENSOR}"`) : message;
}

function sanitizedError(err: Error, depth: number): Error {
  const src = err as unknown as Record<string, unknown>;
  const copy = Object.create(Object.getPrototypeOf(err) as object) as Record<string, unknown>;
  for (const k of Object.getOwnPropertyNames(err)) copy[k] = src[k];
  for (const f of BOUND_VALUE_FIELDS) if (copy[f] !== undefined) copy[f] = CENSOR;
  if (isDatabaseError(src)) {
    for (const f of DB_VALUE_FIELDS) if (copy[f] !== undefined) copy[f] = CENSOR;
    const message = redactDbMessage(src.code as string, String(src.message ?? ''));
    const stack = typeof src.stack === 'string' ? src.stack : '';
    const frames = stack.indexOf('\n    at ');
    copy.message = message;
    copy.stack = `${String(src.name ?? 'Error')}: ${message}${frames >= 0 ? stack.slice(frames) : ''}`;
  }
  for (const [k, v] of Object.entries(copy)) {
    if (k === 'message' || k === 'stack') continue;
    if (isSecretField(k)) copy[k] = CENSOR;
    else if (v instanceof Error) copy[k] = depth < 5 ? sanitizedError(v, depth + 1) : CENSOR;
    else if (k === 'errors' && Array.isArray(v))
      copy[k] = v.map((x: unknown) => (x instanceof Error && depth < 5 ? sanitizedError(x, depth + 1) : redactSecrets(x)));
    else copy[k] = redactSecrets(v);
  }
  if (err.cause instanceof Error && depth < 5) copy.cause = sanitizedError(err.cause, depth + 1);
  return copy as unknown as Error;
}

/**
 * pino's `err` serializer with secrets kept out: a database error loses the values bound to
 * its statement and the row contents the server quotes back; any error's secret-named fields
 * (and its causes') are redacted.
 */
export function safeErrorSerializer(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  return stdSerializers.err(sanitizedError(err, 0));
}
