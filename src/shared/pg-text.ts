// eslint-disable-next-line no-control-regex -- the NUL is what this looks for
const NOT_TEXT = /[\u0000\p{Cs}]/gu;

/**
 * PostgreSQL's text and jsonb cannot hold U+0000, jsonb refuses a UTF-16 surrogate without its
 * pair (UTF-8 text turns it into U+FFFD), and outside strings reach both (a manifest's cell, a
 * CSR's name, a refused request's reason): recorded with U+FFFD in their place. Requests are
 * refused such text at the edge (src/http/well-formed-text.ts); this keeps the rest storable.
 */
export function pgText(s: string): string {
  NOT_TEXT.lastIndex = 0;
  return NOT_TEXT.test(s) ? s.replace(NOT_TEXT, '\uFFFD') : s;
}

/** What jsonb keeps of a JSON object: as JSON would (undefined dropped, Dates as strings), with pgText on every key and string. */
export function pgJsonObject(value: Record<string, unknown>): Record<string, unknown> {
  const text = JSON.stringify(value);
  const plain: unknown = JSON.parse(text);
  if (plain === null || typeof plain !== 'object' || Array.isArray(plain)) throw new TypeError('not a JSON object');
  // JSON writes U+0000 as \u0000 and a lone surrogate as \udXXX: only then is there anything to walk.
  return (/\\u(?:0000|d[89a-f])/i.test(text) ? clean(plain) : plain) as Record<string, unknown>;
}

function clean(v: unknown): unknown {
  if (typeof v === 'string') return pgText(v);
  if (Array.isArray(v)) return v.map(clean);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [pgText(k), clean(x)]));
  return v;
}
