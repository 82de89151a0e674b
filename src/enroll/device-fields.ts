import { DEVICE_ID_RE } from '../ca/profiles.js';
import { badRequest } from '../shared/errors.js';
import type { DeviceAttributes, DeviceKind } from '../store/device-store.js';
import type { ReservedIdentities } from './reserved-identities.js';

// What a valid device is, field by field: shared by one registration, an update and a manifest.

export const DEVICE_KINDS: readonly DeviceKind[] = ['client', 'broker'];

/** A device to register, from the API or a manifest row. */
export interface DeviceInput {
  id: string;
  /** default `client` */
  kind?: DeviceKind | undefined;
  model?: string | undefined;
  hardwareRevision?: string | undefined;
  firmwareVersion?: string | undefined;
  site?: string | undefined;
  lot?: string | undefined;
  labels?: Record<string, string> | undefined;
}

/** What an update may change; `null` clears a field, `labels` replaces the whole map. */
export interface DevicePatch {
  model?: string | null | undefined;
  hardwareRevision?: string | null | undefined;
  firmwareVersion?: string | null | undefined;
  site?: string | null | undefined;
  labels?: Record<string, string> | undefined;
}

export const TEXT_FIELD_MAX = 128;
export const LABELS_MAX = 32;
export const LABEL_VALUE_MAX = 256;
export const LABEL_KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;

const TEXT_FIELDS = ['model', 'hardwareRevision', 'firmwareVersion', 'site', 'lot'] as const;
const INPUT_FIELDS = new Set(['id', 'kind', ...TEXT_FIELDS, 'labels']);
export const PATCH_FIELDS = ['model', 'hardwareRevision', 'firmwareVersion', 'site', 'labels'] as const;
/** Ids that name API paths (/v1/devices/import; paths match without case) and so cannot be device ids, in any case. */
export const RESERVED_DEVICE_IDS: ReadonlySet<string> = new Set(['import']);
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\x00-\x1f\x7f]/;

export interface FieldError {
  field?: string;
  message: string;
}

export const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export function checkText(field: string, v: unknown, errors: FieldError[]): void {
  if (typeof v !== 'string') errors.push({ field, message: `${field} must be a string` });
  else if (v.length === 0 || v.length > TEXT_FIELD_MAX)
    errors.push({ field, message: `${field} must be 1 to ${TEXT_FIELD_MAX} characters` });
  else if (CONTROL_RE.test(v)) errors.push({ field, message: `${field} must not contain control characters` });
}

function checkId(v: unknown, errors: FieldError[], reserved: ReservedIdentities): void {
  if (typeof v !== 'string' || v.length === 0) errors.push({ field: 'id', message: 'id is required' });
  else if (!DEVICE_ID_RE.test(v)) {
    errors.push({ field: 'id', message: 'id must be 1 to 64 of A-Z a-z 0-9 . _ : - and start with a letter or digit' });
  } else if (RESERVED_DEVICE_IDS.has(v.toLowerCase())) errors.push({ field: 'id', message: `${v} is reserved` });
  else if (reserved.isReserved(v)) errors.push({ field: 'id', message: `${v} is reserved for the service's own identity` });
}

function checkLabels(v: unknown, errors: FieldError[]): void {
  if (!isPlainObject(v)) {
    errors.push({ field: 'labels', message: 'labels must be an object of strings' });
    return;
  }
  const entries = Object.entries(v);
  if (entries.length > LABELS_MAX) errors.push({ field: 'labels', message: `at most ${LABELS_MAX} labels` });
  for (const [k, val] of entries) {
    if (!LABEL_KEY_RE.test(k))
      errors.push({ field: `labels.${k}`, message: 'a label key must be 1 to 63 of A-Z a-z 0-9 . _ / - and start with a letter or digit' });
    else if (typeof val !== 'string') errors.push({ field: `labels.${k}`, message: 'a label value must be a string' });
    else if (val.length > LABEL_VALUE_MAX || CONTROL_RE.test(val)) {
      errors.push({
        field: `labels.${k}`,
        message: `a label value must be at most ${LABEL_VALUE_MAX} characters without control characters`,
      });
    }
  }
}

/** Every problem with one device input (unknown fields included); none means it is a valid DeviceInput. */
export function checkInput(raw: unknown, reserved: ReservedIdentities): FieldError[] {
  if (!isPlainObject(raw)) return [{ message: 'a device must be an object' }];
  const errors: FieldError[] = [];
  for (const k of Object.keys(raw)) if (!INPUT_FIELDS.has(k)) errors.push({ field: k, message: `unknown field ${k}` });
  checkId(raw.id, errors, reserved);
  if (raw.kind !== undefined && !DEVICE_KINDS.includes(raw.kind as DeviceKind)) {
    errors.push({ field: 'kind', message: `kind must be one of ${DEVICE_KINDS.join(', ')}` });
  }
  for (const f of TEXT_FIELDS) if (raw[f] !== undefined) checkText(f, raw[f], errors);
  if (raw.labels !== undefined) checkLabels(raw.labels, errors);
  return errors;
}

export function checkPatch(input: DevicePatch): DeviceAttributes {
  const patch: unknown = input;
  if (!isPlainObject(patch)) throw badRequest('a device patch must be an object');
  const errors: FieldError[] = [];
  for (const k of Object.keys(patch)) {
    if (!(PATCH_FIELDS as readonly string[]).includes(k)) errors.push({ field: k, message: `${k} cannot be changed` });
  }
  const attrs: DeviceAttributes = {};
  for (const f of ['model', 'hardwareRevision', 'firmwareVersion', 'site'] as const) {
    const v = patch[f];
    if (v === undefined) continue;
    if (v !== null) checkText(f, v, errors);
    attrs[f] = v as string | null;
  }
  if (patch.labels !== undefined) {
    checkLabels(patch.labels, errors);
    attrs.labels = patch.labels as Record<string, string>;
  }
  if (errors.length > 0) throw badRequest(errors[0]!.message, { errors });
  if (Object.keys(attrs).length === 0) throw badRequest(`a patch changes at least one of ${PATCH_FIELDS.join(', ')}`);
  return attrs;
}
