import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

/** openapi.yaml, the contract, parsed once. */
let cached: Record<string, unknown> | undefined;
export function loadApiSpec(): Record<string, unknown> {
  cached ??= parse(readFileSync(new URL('../../openapi.yaml', import.meta.url), 'utf8')) as Record<string, unknown>;
  return cached;
}
