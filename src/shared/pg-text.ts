/**
 * PostgreSQL's text and jsonb cannot hold U+0000, and outside strings reach both (a manifest's
 * cell, a CSR's name, a refused request's reason): recorded with U+FFFD in its place.
 */
export function pgText(s: string): string {
  return s.includes('\u0000') ? s.replaceAll('\u0000', '\uFFFD') : s;
}

/** What jsonb keeps of a JSON object: as JSON would (undefined dropped, Dates as strings), with pgText on every key and string. */
export function pgJsonObject(value: Record<string, unknown>): Record<string, unknown> {
  const text = JSON.stringify(value);
  const plain: unknown = JSON.parse(text);
  if (plain === null || typeof plain !== 'object' || Array.isArray(plain)) throw new TypeError('not a JSON object');
  // JSON writes U+0000 as \u0000: only then is there anything to walk.
  return (text.includes('\\u0000') ? clean(plain) : plain) as Record<string, unknown>;
}

function clean(v: unknown): unknown {
  if (typeof v === 'string') return pgText(v);
  if (Array.isArray(v)) return v.map(clean);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [pgText(k), clean(x)]));
  return v;
}
