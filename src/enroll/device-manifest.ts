import { parseCsv } from '../shared/csv.js';
import { badRequest } from '../shared/errors.js';
import { checkText, isPlainObject, type DeviceInput, type FieldError } from './device-fields.js';

// Reading a lot manifest (CSV or JSON) into device inputs; checking and importing them is DeviceInventory.importManifest.

/** One problem with one manifest row (`row` is 1-based; absent for a problem with the whole manifest, e.g. its CSV header). */
export interface ManifestRowError {
  row?: number;
  id?: string;
  field?: string;
  message: string;
}

export interface ParsedManifest {
  /** One entry per manifest row, in order (row n is devices[n - 1]), malformed rows included as far as they could be read. */
  devices: DeviceInput[];
  /** The manifest's own lot (JSON `{ "lot": ... }`). */
  lot: string | undefined;
  /** Rows that could not be read; pass them on to importManifest as `parseErrors`. */
  errors: ManifestRowError[];
}

/** CSV header names, compared without case, `_` or `-` (so `hardware_revision` works too). */
const CSV_COLUMNS: Record<string, keyof DeviceInput> = {
  id: 'id',
  kind: 'kind',
  model: 'model',
  hardwarerevision: 'hardwareRevision',
  firmwareversion: 'firmwareVersion',
  site: 'site',
  lot: 'lot',
};
const LABEL_COLUMN_RE = /^labels?\.(.+)$/i;

type Column = { field: Exclude<keyof DeviceInput, 'labels'> } | { label: string };

function manifestFromCsv(text: string): ParsedManifest {
  const { records, error } = parseCsv(text);
  const header = records[0];
  if (!header) {
    throw badRequest(
      error ? `the CSV cannot be read: ${error.message}` : 'the CSV is empty: it needs a header row and one row per device',
      {
        errors: [{ field: 'header', message: error?.message ?? 'no header row' }],
      },
    );
  }
  const headerErrors: ManifestRowError[] = [];
  const columns: Column[] = [];
  const seen = new Set<string>();
  for (const rawName of header.fields) {
    const name = rawName.trim();
    const label = LABEL_COLUMN_RE.exec(name)?.[1];
    const field = CSV_COLUMNS[name.toLowerCase().replace(/[_-]/g, '')];
    const key = label !== undefined ? `labels.${label}` : (field ?? name);
    if (seen.has(key)) headerErrors.push({ field: name, message: `column ${name} appears twice` });
    seen.add(key);
    if (label !== undefined) columns.push({ label });
    else if (field && field !== 'labels') columns.push({ field });
    else
      headerErrors.push({
        field: name || '(empty)',
        message: `unknown column ${JSON.stringify(name)}; columns are ${Object.values(CSV_COLUMNS).join(', ')} and labels.<key>`,
      });
  }
  if (!seen.has('id')) headerErrors.push({ field: 'id', message: 'the header has no id column' });
  if (headerErrors.length > 0) throw badRequest('the CSV header is not valid', { errors: headerErrors });

  const devices: DeviceInput[] = [];
  const errors: ManifestRowError[] = [];
  const idColumn = columns.findIndex((c) => 'field' in c && c.field === 'id');
  for (let r = 1; r < records.length; r++) {
    const { fields } = records[r]!;
    const input: Record<string, unknown> = {};
    columns.forEach((c, i) => {
      const v = fields[i];
      if (v === undefined || v === '') return;
      if ('label' in c) ((input.labels ??= {}) as Record<string, string>)[c.label] = v;
      else input[c.field] = v;
    });
    devices.push(input as unknown as DeviceInput);
    if (fields.length !== columns.length) {
      const id = fields[idColumn];
      errors.push({ row: r, ...(id ? { id } : {}), message: `the row has ${fields.length} fields; the header has ${columns.length}` });
    }
  }
  if (error) {
    // The rest of the text cannot be split into rows: report the row where it went wrong.
    if (error.record === 0)
      throw badRequest(`the CSV header cannot be read: ${error.message}`, { errors: [{ field: 'header', message: error.message }] });
    errors.push({ row: error.record, message: error.message });
    devices.push({} as DeviceInput);
  }
  return { devices, lot: undefined, errors };
}

function manifestFromJson(body: unknown): ParsedManifest {
  let list: unknown;
  let lot: string | undefined;
  if (Array.isArray(body)) {
    list = body;
  } else if (isPlainObject(body)) {
    const unknown = Object.keys(body).filter((k) => k !== 'lot' && k !== 'devices');
    if (unknown.length > 0) {
      throw badRequest(`unknown field ${unknown[0]}: a manifest is { "lot": ..., "devices": [...] } or an array of devices`, {
        errors: unknown.map((k) => ({ field: k, message: `unknown field ${k}` })),
      });
    }
    if (body.lot !== undefined) {
      const errs: FieldError[] = [];
      checkText('lot', body.lot, errs);
      if (errs.length > 0) throw badRequest(errs[0]!.message, { errors: errs });
      lot = body.lot as string;
    }
    list = body.devices;
  }
  if (!Array.isArray(list)) throw badRequest('a manifest is { "lot": ..., "devices": [...] } or an array of devices');
  // Each element is checked (type, fields) by importManifest, which numbers its errors by row.
  return { devices: list as DeviceInput[], lot, errors: [] };
}

/**
 * Turns a manifest body into rows. JSON: `{ "lot": "...", "devices": [...] }` or a bare array.
 * CSV (`text/csv`): a header row naming the columns (id, kind, model, hardwareRevision,
 * firmwareVersion, site, lot, and `labels.<key>` for labels), then one row per device; empty
 * cells are absent fields. A broken header throws; broken rows come back in `errors`.
 */
export function parseManifest(body: string | object, contentType: string | undefined): ParsedManifest {
  const mediaType = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (mediaType === 'text/csv') {
    if (typeof body !== 'string') throw badRequest('a CSV manifest must be text');
    return manifestFromCsv(body);
  }
  if (mediaType === 'application/json' || /^application\/[a-z0-9.+-]+\+json$/.test(mediaType)) {
    if (typeof body !== 'string') return manifestFromJson(body);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw badRequest('the body is not valid JSON');
    }
    return manifestFromJson(parsed);
  }
  throw badRequest(`a manifest is application/json or text/csv, not ${mediaType || 'untyped'}`);
}
