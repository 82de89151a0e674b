import { existsSync, readFileSync } from 'node:fs';
import { parse } from 'yaml';

// openapi.yaml sits at the project root: two levels up from src/http, three from dist/src/http.
const CANDIDATES = ['../../openapi.yaml', '../../../openapi.yaml'].map((p) => new URL(p, import.meta.url));

/** openapi.yaml, the contract, parsed once. */
let cached: Record<string, unknown> | undefined;
export function loadApiSpec(): Record<string, unknown> {
  if (!cached) {
    const file = CANDIDATES.find((u) => existsSync(u));
    if (!file) throw new Error('openapi.yaml not found beside the project');
    cached = parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  }
  return cached;
}
