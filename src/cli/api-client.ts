/**
 * The daily-work commands' HTTP client: the running service's /v1 API with an API key, nothing
 * else. It knows no domain or store code (eslint room `src/cli`): what the API answers is what
 * the commands show.
 *
 * The API key comes from a file (`--key-file`, `MQTT_CA_KEY_FILE`) or the environment
 * (`MQTT_CA_API_KEY`), never from the command line (where `ps` and shell history would show it),
 * and it is never printed: messages name the file, not its content.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { Page } from '../shared/page.js';
import { EXIT, exitCodeForStatus } from './exit-codes.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

/** One field or row error of a problem (RFC 9457 `errors`, as openapi.yaml's Problem has them). */
export interface ProblemFieldError {
  path?: string;
  message?: string;
  row?: number;
  id?: string;
  field?: string;
}

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  requestId?: string;
  errors?: ProblemFieldError[];
}

/** A command the CLI refuses before or without asking the API (bad usage, no confirmation): exit 2. */
export class UsageError extends Error {
  override name = 'UsageError';
  constructor(
    message: string,
    readonly exitCode: number = EXIT.usage,
  ) {
    super(message);
  }
}

/** A non-2xx answer of the API, with its problem+json (or what stood in for it). */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly problem: Problem,
    readonly body: unknown,
    /** Retry-After in seconds (429, 503), when the answer gave one. */
    readonly retryAfter?: number,
  ) {
    super(problem.detail ?? problem.title ?? `HTTP ${status}`);
  }
  get exitCode(): number {
    return exitCodeForStatus(this.status);
  }
}

/** The service could not be reached at all (refused, DNS, TLS, timeout): exit 1. */
export class ConnectionError extends Error {
  override name = 'ConnectionError';
  constructor(
    message: string,
    /** The connection dropped after the request may have been sent (reset, closed), not refused before it. */
    readonly dropped = false,
  ) {
    super(message);
  }
}

export interface ConnectionOptions {
  url?: string;
  keyFile?: string;
}

export interface Connection {
  url: string;
  /** Where the key came from, for messages (a file name or the variable's name; never the key). */
  keySource: string;
  key: string;
}

/**
 * The service's URL and API key: options first, then MQTT_CA_URL, MQTT_CA_KEY_FILE,
 * MQTT_CA_API_KEY. A key file others can read is used, with a warning (as ssh does for its keys it refuses).
 */
export function resolveConnection(
  o: ConnectionOptions,
  env: NodeJS.ProcessEnv = process.env,
  warn = (m: string) => console.error(m),
): Connection {
  const url = (o.url ?? env.MQTT_CA_URL ?? DEFAULT_URL).replace(/\/+$/, '');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--url / MQTT_CA_URL: not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new UsageError('--url / MQTT_CA_URL: an http:// or https:// URL');
  if (parsed.username || parsed.password)
    throw new UsageError('--url / MQTT_CA_URL: no user or password in the URL; the API key goes in --key-file');
  const keyFile = o.keyFile ?? env.MQTT_CA_KEY_FILE;
  if (keyFile) {
    let text: string;
    try {
      text = readFileSync(keyFile, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read the API key file ${keyFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    try {
      if ((statSync(keyFile).mode & 0o077) !== 0)
        warn(`mqtt-ca: warning: the API key file ${keyFile} is readable by others (chmod 600 it)`);
    } catch {
      // read it already; the mode check is advice only
    }
    const key = text.trim();
    if (!key || /\s/.test(key)) throw new UsageError(`the API key file ${keyFile} does not hold one key (one line, no spaces)`);
    return { url, key, keySource: keyFile };
  }
  const key = env.MQTT_CA_API_KEY?.trim();
  if (key) return { url, key, keySource: 'MQTT_CA_API_KEY' };
  throw new UsageError(
    'no API key: give --key-file FILE (or set MQTT_CA_KEY_FILE, e.g. to data/admin-api-key, or MQTT_CA_API_KEY); a key is never taken on the command line',
  );
}

export interface ApiResponse<T> {
  status: number;
  headers: Headers;
  body: T;
}

export interface RequestOptions {
  query?: Record<string, string | number | undefined>;
  /** JSON-encoded unless `contentType` is given (then sent as it is). */
  body?: unknown;
  contentType?: string;
}

/** Methods whose requests carry an Idempotency-Key (the API's state-changing routes take it; the others ignore it). */
const KEYED_METHODS = new Set(['POST', 'PATCH']);

/** How often a request is sent again after a dropped connection, a 503, or a 409 that says when to retry (Retry-After). */
const RETRIES = 2;
/** Longest Retry-After waited for before a retry; beyond it the answer is the command's. */
const MAX_RETRY_WAIT_S = 5;
/** Connection failures after which the request may have reached the service: sent again under the same Idempotency-Key. */
const DROPPED = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

export class ApiClient {
  /**
   * One per command invocation (the client is made per invocation): its n-th state-changing
   * request sends `<intent>-<n>` as Idempotency-Key, and a retry of that request sends it again,
   * so a request that did reach the service before the connection dropped runs once.
   */
  private readonly intent = randomUUID();
  private keyed = 0;

  constructor(
    private readonly conn: Connection,
    private readonly wait: (seconds: number) => Promise<void> = (s) => new Promise((r) => setTimeout(r, s * 1000)),
  ) {}

  get url(): string {
    return this.conn.url;
  }

  async request<T>(method: string, path: string, o: RequestOptions = {}): Promise<ApiResponse<T>> {
    const target = new URL(this.conn.url + path);
    for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) target.searchParams.set(k, String(v));
    const headers: Record<string, string> = { authorization: `Bearer ${this.conn.key}`, accept: 'application/json' };
    if (KEYED_METHODS.has(method)) headers['idempotency-key'] = `${this.intent}-${++this.keyed}`;
    let body: string | undefined;
    if (o.body !== undefined) {
      headers['content-type'] = o.contentType ?? 'application/json';
      body = o.contentType ? String(o.body) : JSON.stringify(o.body);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.send<T>(target, method, headers, body);
      } catch (e) {
        const keyed = headers['idempotency-key'] !== undefined;
        if (!keyed || attempt >= RETRIES) throw e;
        if (e instanceof ConnectionError && e.dropped) continue;
        if (
          e instanceof ApiError &&
          (e.status === 503 || e.status === 409) &&
          e.retryAfter !== undefined &&
          e.retryAfter <= MAX_RETRY_WAIT_S
        ) {
          await this.wait(e.retryAfter);
          continue;
        }
        throw e;
      }
    }
  }

  private async send<T>(target: URL, method: string, headers: Record<string, string>, body: string | undefined): Promise<ApiResponse<T>> {
    let res: Response;
    try {
      res = await fetch(target, { method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(120_000) });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new ConnectionError(
        `cannot reach ${this.conn.url}: ${cause?.code ?? cause?.message ?? (e as Error).message}`,
        DROPPED.has(cause?.code ?? ''),
      );
    }
    const text = await res.text();
    let parsed: unknown = text;
    if (/json/i.test(res.headers.get('content-type') ?? '')) {
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = text;
      }
    }
    if (res.status >= 200 && res.status < 300) return { status: res.status, headers: res.headers, body: parsed as T };
    const problem: Problem =
      parsed && typeof parsed === 'object' ? (parsed as Problem) : { title: res.statusText || `HTTP ${res.status}`, status: res.status };
    if (res.status === 401 && !problem.detail) problem.detail = `the API key from ${this.conn.keySource} was not accepted`;
    const retryAfter = Number(res.headers.get('retry-after') ?? NaN);
    throw new ApiError(res.status, problem, parsed, Number.isInteger(retryAfter) && retryAfter > 0 ? retryAfter : undefined);
  }

  get<T>(path: string, query?: RequestOptions['query']): Promise<ApiResponse<T>> {
    return this.request<T>('GET', path, { query });
  }

  post<T>(path: string, body?: unknown, o: Omit<RequestOptions, 'body'> = {}): Promise<ApiResponse<T>> {
    return this.request<T>('POST', path, { ...o, body });
  }

  /** One page of a list, or (`all`) every page, following `nextCursor`; `limit` is the page size. */
  async list<T>(path: string, query: Record<string, string | number | undefined>, o: { all?: boolean } = {}): Promise<Page<T>> {
    const first = (await this.get<Page<T>>(path, query)).body;
    if (!o.all) return first;
    const items = [...first.items];
    let cursor = first.nextCursor;
    while (cursor) {
      const page = (await this.get<Page<T>>(path, { ...query, cursor })).body;
      items.push(...page.items);
      cursor = page.nextCursor;
    }
    return { items, nextCursor: null };
  }
}

/** A path segment as the API routes take it. */
export const seg = (s: string): string => encodeURIComponent(s);
