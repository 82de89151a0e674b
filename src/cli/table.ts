/**
 * Readable output of the daily-work commands. Every value shown comes from the API, and so may
 * come from a device or a manifest: `safe` escapes what a terminal would act on (C0 and C1
 * controls, ESC, DEL, and the bidirectional overrides that reorder a line) so a device named
 * `\x1b]0;owned\x07` prints as that text and never as a terminal command.
 */

// eslint-disable-next-line no-control-regex -- the controls are what this escapes
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

/** A value as one line of plain text: controls as `\xNN` / `\uNNNN` escapes, null as `-`. */
export function safe(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  const s = typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
  return s.replace(UNSAFE, (c) => {
    const code = c.codePointAt(0)!;
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/** A date-time as the API gives it, shortened to the minute (UTC). */
export function when(v: unknown): string {
  if (typeof v !== 'string') return safe(v);
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(v);
  return m ? `${m[1]} ${m[2]}Z` : safe(v);
}

export interface Column<T> {
  header: string;
  value: (row: T) => unknown;
  /** Already formatted (and escaped) text: when() output. Anything else goes through safe(). */
  raw?: boolean;
}

/** Rows as aligned columns under a header line. */
export function table<T>(rows: T[], columns: Column<T>[]): string {
  const cells = rows.map((r) => columns.map((c) => (c.raw ? String(c.value(r)) : safe(c.value(r)))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((row) => [...row[i]!].length)));
  const line = (parts: string[]) =>
    parts
      .map((p, i) => (i === parts.length - 1 ? p : p + ' '.repeat(widths[i]! - [...p].length)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n');
}

/** `name: value` lines, names aligned; values escaped. */
export function fields(pairs: [string, unknown][]): string {
  const width = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${safe(v)}`).join('\n');
}
