/**
 * A small RFC 4180 CSV reader: comma-separated fields, records ended by CRLF, LF or CR, fields
 * optionally in double quotes (which may hold commas, line breaks and doubled quotes `""`).
 * A leading byte-order mark is dropped and blank lines are skipped. It is strict where a guess
 * could silently change data: a quote inside an unquoted field, text after a closing quote and an
 * unterminated quote are errors.
 */

export interface CsvRecord {
  /** 1-based line on which the record starts */
  line: number;
  fields: string[];
}

export interface CsvError {
  /** 1-based line on which the bad record starts */
  line: number;
  /** 0-based index the bad record would have had in `records` */
  record: number;
  message: string;
}

export interface CsvResult {
  /** The records before the first error (all of them when there is none). */
  records: CsvRecord[];
  error?: CsvError;
}

export function parseCsv(input: string): CsvResult {
  const text = input.charCodeAt(0) === 0xfeff ? input.slice(1) : input;
  const records: CsvRecord[] = [];
  const n = text.length;
  let i = 0;
  let line = 1;

  while (i < n) {
    const startLine = line;
    const fields: string[] = [];
    let ended = false;
    let quoted = false;
    while (!ended) {
      let value: string;
      if (text[i] === '"') {
        // Quoted field: up to the quote that is not doubled.
        quoted = true;
        const parts: string[] = [];
        let from = ++i;
        for (;;) {
          const q = text.indexOf('"', i);
          if (q === -1) {
            return {
              records,
              error: { line: startLine, record: records.length, message: `a quoted field is not closed (opened on line ${startLine})` },
            };
          }
          if (text[q + 1] === '"') {
            parts.push(text.slice(from, q + 1));
            i = q + 2;
            from = i;
            continue;
          }
          parts.push(text.slice(from, q));
          i = q + 1;
          break;
        }
        value = parts.join('');
        line += countBreaks(value);
        const c = text[i];
        if (i < n && c !== ',' && c !== '\n' && c !== '\r') {
          return {
            records,
            error: { line: startLine, record: records.length, message: `unexpected text after a closing quote on line ${line}` },
          };
        }
      } else {
        let j = i;
        while (j < n) {
          const c = text[j];
          if (c === ',' || c === '\n' || c === '\r') break;
          if (c === '"') {
            return {
              records,
              error: {
                line: startLine,
                record: records.length,
                message: `a quote inside an unquoted field on line ${line} (quote the whole field and double the quote)`,
              },
            };
          }
          j++;
        }
        value = text.slice(i, j);
        i = j;
      }
      fields.push(value);
      if (i >= n) {
        ended = true;
      } else if (text[i] === ',') {
        i++;
        if (i >= n) fields.push(''); // a trailing comma at the very end: one more empty field
        ended = i >= n;
      } else {
        // \n, \r\n or \r
        if (text[i] === '\r' && text[i + 1] === '\n') i += 2;
        else i += 1;
        line += 1;
        ended = true;
      }
    }
    if (quoted || !(fields.length === 1 && fields[0] === '')) records.push({ line: startLine, fields });
  }
  return { records };
}

function countBreaks(s: string): number {
  let k = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 10) k++;
    else if (c === 13 && s.charCodeAt(i + 1) !== 10) k++;
  }
  return k;
}

/** Quotes a field when it needs it (for writing CSV, and for tests). */
export function csvField(v: string): string {
  return /[",\r\n]/.test(v) || v !== v.trim() ? `"${v.replace(/"/g, '""')}"` : v;
}
