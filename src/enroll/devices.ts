import { serialFromBytes } from '../shared/ids.js';
import type { ActorContext } from '../shared/actor.js';
import { cursorText, isCanonicalCursor, timeIdCursor, type Page } from '../shared/page.js';
import type { AuditEntryInput, AuditLog } from '../audit/audit-log.js';
import { DEVICE_ID_RE } from '../ca/profiles.js';
import { NO_RESERVED_IDENTITIES, type ReservedIdentities } from './reserved-identities.js';
import {
  checkInput,
  checkPatch,
  checkText,
  DEVICE_KINDS,
  isPlainObject,
  PATCH_FIELDS,
  type DeviceInput,
  type DevicePatch,
  type FieldError,
} from './device-fields.js';
import { parseManifest, type ManifestRowError, type ParsedManifest } from './device-manifest.js';
import type { Clock } from '../shared/clock.js';
import { badRequest, conflict, DomainError, notFound } from '../shared/errors.js';
import type { Db, Executor } from '../store/db.js';
import type { DeviceFilter, DeviceKind, DeviceRow, DeviceStatus, DeviceStore, NewDeviceRow } from '../store/device-store.js';
import type { DeviceView } from '../shared/api-views.js';

export type { DeviceKind, DeviceStatus } from '../store/device-store.js';
/** A device as the API shows it (src/shared/api-views.ts: the CLI and the console use it too). */
export type { DeviceView };
/** A device as the domain and the enrollment code see it (Dates, the serial as bytes). */
export type DeviceRecord = DeviceRow;

export const DEVICE_STATUSES: readonly DeviceStatus[] = ['registered', 'active', 'suspended', 'revoked', 'decommissioned'];

export interface ImportResult {
  imported: number;
  /** The lot the import applied, or the one lot all rows share; null when they differ or have none. */
  lot: string | null;
}

/** A manifest row as importManifest would register it (the lot applied, the default kind filled in). */
export interface ImportPreviewRow {
  row: number;
  id: string;
  kind: DeviceKind;
  model: string | null;
  hardwareRevision: string | null;
  firmwareVersion: string | null;
  site: string | null;
  lot: string | null;
  labels: Record<string, string>;
}

/** What importManifest would do with a manifest that passes every check: nothing is written. */
export interface ImportPreview {
  dryRun: true;
  /** How many devices the import would register (every row). */
  wouldImport: number;
  lot: string | null;
  /** The first IMPORT_PREVIEW_ROWS rows, as they would be stored. */
  preview: ImportPreviewRow[];
}

export interface DeviceListFilter {
  status?: DeviceStatus | undefined;
  kind?: DeviceKind | undefined;
  lot?: string | undefined;
  model?: string | undefined;
  firmwareVersion?: string | undefined;
  site?: string | undefined;
  /** devices whose current certificate ends before this time */
  expiringBefore?: Date | undefined;
  /** Presence on the bus (docs/bus-watch.md#presence): true, connected now (on `broker`); false, connected nowhere (not on `broker`) now, never-seen devices included. */
  connected?: boolean | undefined;
  /** Seen on the bus (on `broker`), connected nowhere now, and not seen since this time; never-seen devices are not silent. */
  silentSince?: Date | undefined;
  /** Seen on this broker (the broker's id in this service). */
  broker?: string | undefined;
}

export const MAX_IMPORT_ROWS = 50_000;
/** How many rows a dry run of an import shows. */
export const IMPORT_PREVIEW_ROWS = 20;
export const LIST_MAX_LIMIT = 500;
/** A manifest with more errors reports the first ones and their total in `detail`. */
export const MAX_REPORTED_ERRORS = 1000;

/**
 * The lifecycle, in one place. decommissioned is terminal; revoked leads only to decommissioned or
 * (an operator re-admitting the device) back to registered.
 */
const TRANSITIONS: Readonly<Record<DeviceStatus, readonly DeviceStatus[]>> = {
  registered: ['active', 'revoked', 'decommissioned'],
  active: ['suspended', 'revoked', 'decommissioned'],
  suspended: ['active', 'revoked', 'decommissioned'],
  revoked: ['registered', 'decommissioned'],
  decommissioned: [],
};

export const canTransition = (from: DeviceStatus, to: DeviceStatus): boolean => TRANSITIONS[from].includes(to);

function actionOf(from: DeviceStatus, to: DeviceStatus): string {
  switch (to) {
    case 'active':
      return from === 'suspended' ? 'device.reactivated' : 'device.activated';
    case 'registered':
      return 'device.readmitted';
    default:
      return `device.${to}`;
  }
}

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString());

export function deviceView(r: DeviceRow): DeviceView {
  return {
    id: r.id,
    kind: r.kind,
    model: r.model,
    hardwareRevision: r.hardwareRevision,
    firmwareVersion: r.firmwareVersion,
    site: r.site,
    lot: r.lot,
    status: r.status,
    labels: r.labels,
    currentSerial: r.currentSerial ? r.currentSerial.toString('hex') : null,
    currentNotAfter: iso(r.currentNotAfter),
    createdAt: r.createdAt.toISOString(),
    activatedAt: iso(r.activatedAt),
    suspendedAt: iso(r.suspendedAt),
    revokedAt: iso(r.revokedAt),
    decommissionedAt: iso(r.decommissionedAt),
    updatedAt: r.updatedAt.toISOString(),
  };
}

function toNewRow(input: DeviceInput, lot: string | undefined, at: Date): NewDeviceRow {
  return {
    id: input.id,
    kind: input.kind ?? 'client',
    model: input.model ?? null,
    hardwareRevision: input.hardwareRevision ?? null,
    firmwareVersion: input.firmwareVersion ?? null,
    site: input.site ?? null,
    lot: input.lot ?? lot ?? null,
    labels: input.labels ?? {},
    createdAt: at,
  };
}

function registeredEntry(row: NewDeviceRow, ctx: ActorContext, source: 'api' | 'import'): AuditEntryInput {
  const details: Record<string, unknown> = { source, kind: row.kind };
  for (const [k, v] of [
    ['model', row.model],
    ['hardwareRevision', row.hardwareRevision],
    ['firmwareVersion', row.firmwareVersion],
    ['site', row.site],
    ['lot', row.lot],
  ] as const) {
    if (v !== null) details[k] = v;
  }
  if (Object.keys(row.labels).length > 0) details.labels = row.labels;
  return { actor: ctx.actor, requestId: ctx.requestId, action: 'device.registered', targetType: 'device', targetId: row.id, details };
}

const sameLabels = (a: Record<string, string>, b: Record<string, string>): boolean => {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && a[k] === b[k]);
};

// ---- cursor ---------------------------------------------------------------------------------

const deviceCursor = (r: DeviceRow) => timeIdCursor(r.createdAt, r.id);

/** Stricter than readTimeIdCursor: the id must be a device id and the cursor the one deviceCursor wrote. */
function decodeCursor(cursor: string): { createdAt: Date; id: string } {
  const s = cursorText(cursor);
  const bar = s.indexOf('|');
  const createdAt = new Date(bar > 0 ? s.slice(0, bar) : '');
  const id = s.slice(bar + 1);
  if (bar <= 0 || Number.isNaN(createdAt.getTime()) || !DEVICE_ID_RE.test(id) || !isCanonicalCursor(cursor, s)) {
    throw badRequest('the cursor is not valid');
  }
  return { createdAt, id };
}

// ---- the inventory --------------------------------------------------------------------------

/**
 * The device inventory (Identify): who may hold an identity on the bus, and where each device is
 * in its lifecycle. Every change is audited in the transaction that makes it.
 */
export class DeviceInventory {
  constructor(
    private readonly db: Db,
    private readonly store: DeviceStore,
    private readonly audit: AuditLog,
    private readonly clock: Clock,
    private readonly events?: {
      record(e: {
        kind: string;
        severity?: 'info' | 'warning';
        subject?: string;
        requestId?: string | undefined;
        details?: Record<string, unknown>;
      }): Promise<unknown>;
    },
    /** The device's enrollment tokens, voided when it is re-admitted. */
    private readonly tokens?: { revokeForDevice(tx: Executor, deviceId: string, at: Date): Promise<string[]> },
    /** The service's own names, which no device may take (ReservedIdentities). */
    private readonly reserved: ReservedIdentities = NO_RESERVED_IDENTITIES,
  ) {}

  /** Registers one device (status `registered`); Conflict when the id exists. */
  async register(input: DeviceInput, ctx: ActorContext): Promise<DeviceView> {
    const errors = checkInput(input, this.reserved);
    if (errors.length > 0) {
      const id = isPlainObject(input) && typeof input.id === 'string' ? input.id : undefined;
      throw badRequest(errors[0]!.message, { errors: errors.map((e) => ({ ...(id ? { id } : {}), ...e })) });
    }
    const row = toNewRow(input, undefined, this.clock.now());
    return this.db.transaction(async (tx) => {
      if (!(await this.store.insert(tx, row))) throw conflict(`a device with id ${row.id} exists`);
      await this.audit.append(tx, [registeredEntry(row, ctx, 'api')]);
      const stored = await this.store.get(tx, row.id);
      return deviceView(stored!);
    });
  }

  /** See parseManifest. */
  parseManifest(body: string | object, contentType: string | undefined): ParsedManifest {
    return parseManifest(body, contentType);
  }

  /**
   * Registers every row or none. All rows are checked first (checkManifest); any problem throws
   * BadRequest with `details.errors` = [{ row, id, field, message }] (1-based rows) and nothing is
   * written. Otherwise one INSERT for all rows and one `device.registered` audit entry per device,
   * in one transaction. `opts.lot` applies to rows without a lot.
   */
  async importManifest(
    rows: DeviceInput[],
    ctx: ActorContext,
    opts: { lot?: string | undefined; parseErrors?: ManifestRowError[] } = {},
  ): Promise<ImportResult> {
    const errors = await this.checkManifest(rows, opts);
    if (errors.length > 0) {
      // A refused manifest is recorded (security event + audit entry): a factory feeding bad or
      // duplicate identities is worth seeing.
      await this.events?.record({
        kind: 'manifest.refused',
        severity: 'info',
        subject: opts.lot ?? rows.find((r) => isPlainObject(r) && typeof r.lot === 'string')?.lot,
        requestId: ctx.requestId,
        details: { actor: ctx.actor, rows: rows.length, errors: errors.length, first: errors.slice(0, 5) },
      });
      throw manifestError(errors);
    }

    const at = this.clock.now();
    const newRows = rows.map((r) => toNewRow(r, opts.lot, at));
    await this.db.transaction(async (tx) => {
      const inserted = await this.store.insertMany(tx, newRows);
      if (inserted.length !== newRows.length) {
        // Someone registered one of these ids since the check: roll everything back.
        const got = new Set(inserted);
        throw manifestError(
          newRows.flatMap((r, i) =>
            got.has(r.id) ? [] : [{ row: i + 1, id: r.id, field: 'id', message: `a device with id ${r.id} exists` }],
          ),
        );
      }
      await this.audit.append(
        tx,
        newRows.map((r) => registeredEntry(r, ctx, 'import')),
      );
    });
    return { imported: newRows.length, lot: importedLot(newRows, opts.lot) };
  }

  /**
   * The dry run of importManifest: the same checks and the same BadRequest (the same `errors`),
   * but nothing is written, and a refusal is not recorded as a security event (a preview exists
   * so that bad rows are fixed before anyone imports). On success: how many devices the import
   * would register, its lot, and its first IMPORT_PREVIEW_ROWS rows as they would be stored. The
   * ids that exist are read now; an import after the preview checks them again.
   */
  async previewManifest(
    rows: DeviceInput[],
    opts: { lot?: string | undefined; parseErrors?: ManifestRowError[] } = {},
  ): Promise<ImportPreview> {
    const errors = await this.checkManifest(rows, opts);
    if (errors.length > 0) throw manifestError(errors);
    const at = this.clock.now();
    const newRows = rows.map((r) => toNewRow(r, opts.lot, at));
    return {
      dryRun: true,
      wouldImport: newRows.length,
      lot: importedLot(newRows, opts.lot),
      preview: newRows.slice(0, IMPORT_PREVIEW_ROWS).map((r, i) => ({
        row: i + 1,
        id: r.id,
        kind: r.kind,
        model: r.model,
        hardwareRevision: r.hardwareRevision,
        firmwareVersion: r.firmwareVersion,
        site: r.site,
        lot: r.lot,
        labels: r.labels,
      })),
    };
  }

  /**
   * Every problem with a manifest, reading nothing but which of its ids exist: id format,
   * duplicates within the manifest, ids that exist, kind, field lengths, plus `parseErrors` from
   * parseManifest. Throws BadRequest for a manifest that is wrong as a whole (empty, too long, a bad lot).
   */
  private async checkManifest(
    rows: DeviceInput[],
    opts: { lot?: string | undefined; parseErrors?: ManifestRowError[] },
  ): Promise<ManifestRowError[]> {
    if (rows.length === 0) throw badRequest('the manifest lists no devices');
    if (rows.length > MAX_IMPORT_ROWS)
      throw badRequest(`a manifest lists at most ${MAX_IMPORT_ROWS} devices; this one lists ${rows.length}`);
    if (opts.lot !== undefined) {
      const errs: FieldError[] = [];
      checkText('lot', opts.lot, errs);
      if (errs.length > 0) throw badRequest(errs[0]!.message, { errors: errs });
    }

    const errors: ManifestRowError[] = [...(opts.parseErrors ?? [])];
    const unreadable = new Set(errors.map((e) => e.row));
    const firstRowOf = new Map<string, number>();
    const candidates: { id: string; row: number }[] = [];
    rows.forEach((raw, i) => {
      const row = i + 1;
      const id = isPlainObject(raw) && typeof raw.id === 'string' ? raw.id : undefined;
      const withId = id ? { id } : {};
      if (!unreadable.has(row)) {
        for (const e of checkInput(raw, this.reserved)) errors.push({ row, ...withId, ...e });
      }
      if (id === undefined || !DEVICE_ID_RE.test(id)) return;
      const first = firstRowOf.get(id);
      if (first !== undefined) errors.push({ row, id, field: 'id', message: `id ${id} is also on row ${first}` });
      else {
        firstRowOf.set(id, row);
        candidates.push({ id, row });
      }
    });
    for (const id of await this.store.existingIds(
      this.db,
      candidates.map((c) => c.id),
    )) {
      errors.push({ row: firstRowOf.get(id)!, id, field: 'id', message: `a device with id ${id} exists` });
    }
    return errors;
  }

  async get(id: string): Promise<DeviceView> {
    const row = await this.store.get(this.db, id);
    if (!row) throw notFound(`no device with id ${id}`);
    return deviceView(row);
  }

  /** Newest first; `nextCursor` is null on the last page. */
  async list(filter: DeviceListFilter, page: { cursor?: string | undefined; limit: number }): Promise<Page<DeviceView>> {
    if (!Number.isInteger(page.limit) || page.limit < 1 || page.limit > LIST_MAX_LIMIT) {
      throw badRequest(`limit must be an integer from 1 to ${LIST_MAX_LIMIT}`);
    }
    if (filter.status !== undefined && !DEVICE_STATUSES.includes(filter.status))
      throw badRequest(`status must be one of ${DEVICE_STATUSES.join(', ')}`);
    if (filter.kind !== undefined && !DEVICE_KINDS.includes(filter.kind))
      throw badRequest(`kind must be one of ${DEVICE_KINDS.join(', ')}`);
    if (filter.expiringBefore !== undefined && Number.isNaN(filter.expiringBefore.getTime()))
      throw badRequest('expiringBefore is not a valid time');
    if (filter.silentSince !== undefined && Number.isNaN(filter.silentSince.getTime())) throw badRequest('silentSince is not a valid time');
    const storeFilter: DeviceFilter = { ...filter };
    const rows = await this.store.list(this.db, storeFilter, {
      cursor: page.cursor ? decodeCursor(page.cursor) : undefined,
      limit: page.limit + 1,
    });
    const more = rows.length > page.limit;
    const items = more ? rows.slice(0, page.limit) : rows;
    const last = items[items.length - 1];
    return { items: items.map(deviceView), nextCursor: more && last ? deviceCursor(last) : null };
  }

  /** How many devices match the list's filters (status aside), by status: every status is named, 0 included. */
  async countByStatus(filter: Omit<DeviceListFilter, 'status'>): Promise<{ byStatus: Record<DeviceStatus, number>; total: number }> {
    if (filter.kind !== undefined && !DEVICE_KINDS.includes(filter.kind))
      throw badRequest(`kind must be one of ${DEVICE_KINDS.join(', ')}`);
    if (filter.expiringBefore !== undefined && Number.isNaN(filter.expiringBefore.getTime()))
      throw badRequest('expiringBefore is not a valid time');
    const counts = await this.store.countByStatus(this.db, filter);
    const byStatus = Object.fromEntries(DEVICE_STATUSES.map((s) => [s, counts[s] ?? 0])) as Record<DeviceStatus, number>;
    return { byStatus, total: Object.values(byStatus).reduce((a, b) => a + b, 0) };
  }

  /** Changes descriptive fields; `device.updated` records the changed fields. A decommissioned device is Conflict. */
  async update(id: string, patch: DevicePatch, ctx: ActorContext): Promise<DeviceView> {
    const attrs = checkPatch(patch);
    return this.db.transaction(async (tx) => {
      const current = await this.store.getForUpdate(tx, id);
      if (!current) throw notFound(`no device with id ${id}`);
      if (current.status === 'decommissioned') throw conflict(`device ${id} is decommissioned and cannot be changed`);
      const changed: string[] = [];
      const from: Record<string, unknown> = {};
      const to: Record<string, unknown> = {};
      for (const f of PATCH_FIELDS) {
        const next = attrs[f];
        if (next === undefined) continue;
        const prev = current[f];
        const same = f === 'labels' ? sameLabels(prev as Record<string, string>, next as Record<string, string>) : prev === next;
        if (same) continue;
        changed.push(f);
        from[f] = prev;
        to[f] = next;
      }
      if (changed.length === 0) return deviceView(current);
      const updated = await this.store.updateAttributes(tx, id, attrs, this.clock.now());
      await this.audit.append(tx, [
        {
          actor: ctx.actor,
          requestId: ctx.requestId,
          action: 'device.updated',
          targetType: 'device',
          targetId: id,
          details: { changed, from, to },
        },
      ]);
      return deviceView(updated!);
    });
  }

  /**
   * Lets a revoked device in again: back to registered, so it may be given a new enrollment token
   * and enroll (its revoked certificates stay revoked). Tokens handed out before are voided: they
   * may have leaked with the device. Only a revoked device can be re-admitted; one already
   * registered is left as it is.
   */
  async readmit(id: string, ctx: ActorContext): Promise<DeviceView> {
    return this.db.transaction(async (tx) => {
      const current = await this.store.getForUpdate(tx, id);
      if (!current) throw notFound(`no device with id ${id}`);
      if (current.status === 'registered') return deviceView(current);
      if (current.status !== 'revoked') throw conflict(`device ${id} is ${current.status}: only a revoked device can be re-admitted`);
      const voided = (await this.tokens?.revokeForDevice(tx, id, this.clock.now())) ?? [];
      const { row, entry } = await this.move(tx, current, 'registered', ctx, { tokensVoided: voided.length });
      await this.audit.append(tx, [
        ...voided.map((t): AuditEntryInput => ({
          actor: ctx.actor,
          requestId: ctx.requestId,
          action: 'enrollment-token.revoked',
          targetType: 'enrollment-token',
          targetId: t,
          details: { deviceId: id, why: 'device re-admitted' },
        })),
        entry!,
      ]);
      return deviceView(row);
    });
  }

  /** Takes the device out of service for good. Idempotent: decommissioning a decommissioned device changes nothing. */
  async decommission(id: string, ctx: ActorContext): Promise<DeviceView> {
    return this.db.transaction(async (tx) => deviceView(await this.transition(tx, id, 'decommissioned', ctx)));
  }

  /**
   * The one place a device changes status. Locks the row, checks the lifecycle (Conflict when the
   * move is not allowed; NotFound when there is no such device), stamps the status's time and
   * appends the audit entry (`device.activated`, `device.reactivated`, `device.suspended`,
   * `device.revoked`, `device.decommissioned`, `device.readmitted`) with `details` merged in.
   * Moving to the current status changes nothing and writes no entry. Appends to the audit log:
   * call it last in `tx`.
   */
  async transition(
    tx: Executor,
    id: string,
    to: DeviceStatus,
    ctx: ActorContext,
    details: Record<string, unknown> = {},
  ): Promise<DeviceRecord> {
    const current = await this.store.getForUpdate(tx, id);
    if (!current) throw notFound(`no device with id ${id}`);
    const { row, entry } = await this.move(tx, current, to, ctx, details);
    if (entry) await this.audit.append(tx, [entry]);
    return row;
  }

  /**
   * The devices whose current certificate is one of `serials` follow its revocation state, in
   * one statement: each moves to `to` where the lifecycle allows it (a hold suspends only an
   * active device; release reactivates only a suspended one). Returns the audit entries for the
   * caller to append with its own.
   */
  async followCertificates(
    tx: Executor,
    serials: Buffer[],
    to: 'suspended' | 'revoked' | 'active',
    ctx: ActorContext,
    details: Record<string, unknown>,
  ): Promise<AuditEntryInput[]> {
    const from = to === 'active' ? (['suspended'] as const) : DEVICE_STATUSES.filter((f) => f !== to && canTransition(f, to));
    const moved = await this.store.setStatusByCurrentSerial(tx, serials, from, to, this.clock.now());
    return moved.map((m) => ({
      actor: ctx.actor,
      requestId: ctx.requestId,
      action: actionOf(m.previous, to),
      targetType: 'device',
      targetId: m.id,
      details: { ...details, serial: serialFromBytes(m.serial), from: m.previous, to },
    }));
  }

  /** The device, locked until `tx` ends; undefined when there is none. */
  async getForUpdate(tx: Executor, id: string): Promise<DeviceRecord | undefined> {
    return this.store.getForUpdate(tx, id);
  }

  /** The device when it exists and belongs to `lot` (not locked); undefined otherwise. */
  async findByLot(tx: Executor, lot: string, id: string): Promise<DeviceRecord | undefined> {
    return this.store.getInLot(tx, lot, id);
  }

  /**
   * Records a certificate just issued to the device (its newest): sets currentSerial and
   * currentNotAfter and, on the first issuance, moves `registered` → `active` with a
   * `device.activated` audit entry. Only a registered or active device may receive one (Conflict
   * otherwise; NotFound without a device). Appends to the audit log: call it last in `tx`.
   */
  async recordIssued(tx: Executor, id: string, cert: { serial: Buffer; notAfter: Date }, ctx: ActorContext): Promise<DeviceRecord> {
    const current = await this.store.getForUpdate(tx, id);
    if (!current) throw notFound(`no device with id ${id}`);
    if (current.status !== 'registered' && current.status !== 'active') {
      throw conflict(`device ${id} is ${current.status}: it may not receive a certificate`);
    }
    const withCert = await this.store.setCurrentCertificate(tx, id, cert, this.clock.now());
    if (current.status === 'active') return withCert!;
    const { row, entry } = await this.move(tx, withCert!, 'active', ctx, {
      serial: cert.serial.toString('hex'),
      notAfter: cert.notAfter.toISOString(),
    });
    if (entry) await this.audit.append(tx, [entry]);
    return row;
  }

  /** Checks and applies one status change on a locked row; returns the audit entry to append. */
  private async move(
    tx: Executor,
    current: DeviceRow,
    to: DeviceStatus,
    ctx: ActorContext,
    details: Record<string, unknown>,
  ): Promise<{ row: DeviceRow; entry?: AuditEntryInput }> {
    if (!DEVICE_STATUSES.includes(to)) throw badRequest(`unknown device status ${String(to)}`);
    if (current.status === to) return { row: current };
    if (!canTransition(current.status, to)) {
      const why =
        current.status === 'decommissioned'
          ? 'decommissioned is final'
          : `allowed from ${current.status}: ${TRANSITIONS[current.status].join(', ') || 'nothing'}`;
      throw new DomainError('Conflict', `device ${current.id} cannot go from ${current.status} to ${to} (${why})`);
    }
    const row = await this.store.setStatus(tx, current.id, to, this.clock.now());
    return {
      row: row!,
      entry: {
        actor: ctx.actor,
        requestId: ctx.requestId,
        action: actionOf(current.status, to),
        targetType: 'device',
        targetId: current.id,
        details: { ...details, from: current.status, to },
      },
    };
  }
}

/** The lot an import applied, or the one lot all its rows share; null when they differ or have none. */
function importedLot(rows: NewDeviceRow[], lot: string | undefined): string | null {
  if (lot !== undefined) return lot;
  const lots = new Set(rows.map((r) => r.lot));
  return lots.size === 1 ? [...lots][0]! : null;
}

function manifestError(errors: ManifestRowError[]): DomainError {
  const sorted = [...errors].sort((a, b) => (a.row ?? 0) - (b.row ?? 0));
  const rows = new Set(sorted.map((e) => e.row)).size;
  const shown = sorted.slice(0, MAX_REPORTED_ERRORS);
  const more = sorted.length > shown.length ? ` (the first ${shown.length} are listed)` : '';
  return badRequest(`the manifest has ${sorted.length} error(s) on ${rows} row(s)${more}; nothing was imported`, { errors: shown });
}
