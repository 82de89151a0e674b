import type { IncomingHttpHeaders } from 'node:http';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { loadApiSpec } from './openapi.js';
import { badTextIn } from './well-formed-text.js';

// ajv-formats is CommonJS: under ESM its function is the default export's default.
const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (
  ajv: Ajv2020,
) => void;

/** A request that breaks the contract: mapped to problem+json like the validator's own errors (see problemFor). */
export class ContractError extends Error {
  constructor(
    readonly status: 400 | 413 | 415,
    message: string,
    readonly errors: { path: string; message: string }[] = [],
    readonly type?: string,
  ) {
    super(message);
  }
}

export type ContractBody = { json: unknown } | { bytes: Buffer };

/**
 * One operation of openapi.yaml, compiled once, for the handlers served in front of Express
 * (where express-openapi-validator does not run): the same contract, checked the same way.
 */
export interface OperationContract {
  /** Header parameters: required ones present, each value valid against its schema. Throws ContractError. */
  checkHeaders(headers: IncomingHttpHeaders): void;
  /** The body for its media type: parsed and schema-checked JSON, or raw bytes for a binary type. Throws ContractError. */
  readBody(contentType: string | undefined, raw: Buffer): ContractBody;
  /** Test mode: how a JSON response breaks the contract; [] when it conforms. */
  responseErrors(status: number, contentType: string, body: unknown): string[];
}

const SPEC_ID = 'urn:mqtt-ca:openapi';
let shared: Ajv2020 | undefined;

function ajvForSpec(): Ajv2020 {
  if (!shared) {
    shared = new Ajv2020({ strict: false, allErrors: true });
    addFormats(shared);
    shared.addFormat('binary', true);
    shared.addSchema({ $id: SPEC_ID, components: (loadApiSpec() as { components: unknown }).components });
  }
  return shared;
}

/** A schema from the spec, its local $refs pointed into the spec document. */
function compile(schema: unknown): ValidateFunction {
  const json = JSON.stringify(schema).replaceAll('"#/components/', `"${SPEC_ID}#/components/`);
  return ajvForSpec().compile(JSON.parse(json) as object);
}

const mediaType = (contentType: string | undefined) => contentType?.split(';')[0]!.trim().toLowerCase() ?? '';
const isJson = (t: string) => t === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(t);

function deref<T>(spec: Record<string, unknown>, node: T): T {
  const ref = (node as { $ref?: string } | undefined)?.$ref;
  if (!ref) return node;
  return ref
    .slice(2)
    .split('/')
    .reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], spec) as T;
}

interface OpenApiOperation {
  parameters?: { name: string; in: string; required?: boolean; schema?: unknown }[];
  requestBody?: { required?: boolean; content: Record<string, { schema?: { type?: string; format?: string } }> };
  responses: Record<string, { $ref?: string; content?: Record<string, { schema?: unknown }> }>;
}

export function operationContract(path: string, method: 'post'): OperationContract {
  const spec = loadApiSpec();
  const op = ((spec.paths as Record<string, Record<string, OpenApiOperation>>)[path] ?? {})[method];
  if (!op) throw new Error(`openapi.yaml has no ${method.toUpperCase()} ${path}`);
  const params = (op.parameters ?? []).map((p) => deref(spec, p));
  if (params.some((p) => p.in !== 'header')) throw new Error(`${path}: only header parameters can be served in front of Express`);
  const headerChecks = params.map((p) => ({
    name: p.name.toLowerCase(),
    required: !!p.required,
    validate: p.schema ? compile(p.schema) : undefined,
  }));

  const bodies = new Map<string, ValidateFunction | 'binary'>();
  for (const [type, media] of Object.entries(op.requestBody?.content ?? {})) {
    bodies.set(type, media.schema?.type === 'string' && media.schema.format === 'binary' ? 'binary' : compile(media.schema ?? {}));
  }
  const responses = new Map<string, ValidateFunction>();
  for (const [status, r] of Object.entries(op.responses)) {
    for (const [type, media] of Object.entries(deref(spec, r).content ?? {}))
      responses.set(`${status} ${type}`, compile(media.schema ?? {}));
  }
  const errorsOf = (v: ValidateFunction, where: string) =>
    (v.errors ?? []).map((e) => ({ path: `${where}${e.instancePath}`, message: e.message ?? 'is not valid' }));

  return {
    checkHeaders(headers) {
      for (const h of headerChecks) {
        const value = headers[h.name];
        if (value === undefined) {
          if (h.required)
            throw new ContractError(400, `the ${h.name} header is required`, [{ path: `.headers.${h.name}`, message: 'is required' }]);
          continue;
        }
        if (h.validate && !h.validate(value))
          throw new ContractError(400, `the ${h.name} header is not valid`, errorsOf(h.validate, `.headers.${h.name}`));
      }
    },
    readBody(contentType, raw) {
      const type = mediaType(contentType);
      const key = bodies.has(type) ? type : isJson(type) && bodies.has('application/json') ? 'application/json' : undefined;
      if (!key) throw new ContractError(415, `unsupported media type ${type || '(none)'}; send ${[...bodies.keys()].join(' or ')}`);
      const check = bodies.get(key)!;
      if (check === 'binary') return { bytes: raw };
      let json: unknown;
      try {
        json = JSON.parse(raw.toString('utf8'));
      } catch {
        throw new ContractError(400, 'the body is not valid JSON', [], 'entity.parse.failed');
      }
      if (!check(json)) throw new ContractError(400, 'the request body does not match the API contract', errorsOf(check, '.body'));
      const bad = badTextIn(json, '/body');
      if (bad) throw new ContractError(400, `request${bad.path} ${bad.message}`, [bad]);
      return { json };
    },
    responseErrors(status, contentType, body) {
      const check = responses.get(`${status} ${mediaType(contentType)}`);
      if (!check) return [`${status} ${mediaType(contentType)} is not a documented response`];
      return check(body) ? [] : errorsOf(check, '.response').map((e) => `${e.path} ${e.message}`);
    },
  };
}
