import type { Knex } from 'knex';
import type { Executor } from './db.js';
import { presenceFilterSql, type PresenceFilter } from './bus-presence-store.js';

import type { DeviceKind, DeviceStatus } from '../shared/api-views.js';

export type { DeviceKind, DeviceStatus };

/** A devices row as the domain sees it. */
export interface DeviceRow {
  id: string;
  kind: DeviceKind;
  model: string | null;
  hardwareRevision: string | null;
  firmwareVersion: string | null;
  site: string | null;
  lot: string | null;
  status: DeviceStatus;
  labels: Record<string, string>;
  currentSerial: Buffer | null;
  currentNotAfter: Date | null;
  createdAt: Date;
  activatedAt: Date | null;
  suspendedAt: Date | null;
  revokedAt: Date | null;
  decommissionedAt: Date | null;
  updatedAt: Date;
}

/** A device to insert: always `registered`, created and updated at `createdAt`. */
export type NewDeviceRow = Pick<
  DeviceRow,
  'id' | 'kind' | 'model' | 'hardwareRevision' | 'firmwareVersion' | 'site' | 'lot' | 'labels' | 'createdAt'
>;

export interface DeviceFilter extends PresenceFilter {
  status?: DeviceStatus | undefined;
  kind?: DeviceKind | undefined;
  lot?: string | undefined;
  model?: string | undefined;
  firmwareVersion?: string | undefined;
  site?: string | undefined;
  /** current_not_after < expiringBefore (devices without a certificate never match) */
  expiringBefore?: Date | undefined;
}

/** Keyset cursor over (created_at, id), newest first. */
export interface DeviceCursor {
  createdAt: Date;
  id: string;
}

/** The descriptive columns an update may change. */
export interface DeviceAttributes {
  model?: string | null;
  hardwareRevision?: string | null;
  firmwareVersion?: string | null;
  site?: string | null;
  labels?: Record<string, string>;
}

const COLUMNS = [
  'id',
  'kind',
  'model',
  'hardware_revision',
  'firmware_version',
  'site',
  'lot',
  'status',
  'labels',
  'current_serial',
  'current_not_after',
  'created_at',
  'activated_at',
  'suspended_at',
  'revoked_at',
  'decommissioned_at',
  'updated_at',
];

/** The timestamp column each status sets when a device enters it. */
const STATUS_AT: Partial<Record<DeviceStatus, string>> = {
  active: 'activated_at',
  suspended: 'suspended_at',
  revoked: 'revoked_at',
  decommissioned: 'decommissioned_at',
};

const dateOrNull = (v: unknown): Date | null => (v == null ? null : new Date(v as string | Date));
const textOrNull = (v: unknown): string | null => (v == null ? null : (v as string));

function fromRow(r: Record<string, unknown>): DeviceRow {
  const labels = typeof r.labels === 'string' ? (JSON.parse(r.labels) as unknown) : r.labels;
  return {
    id: r.id as string,
    kind: r.kind as DeviceKind,
    model: textOrNull(r.model),
    hardwareRevision: textOrNull(r.hardware_revision),
    firmwareVersion: textOrNull(r.firmware_version),
    site: textOrNull(r.site),
    lot: textOrNull(r.lot),
    status: r.status as DeviceStatus,
    labels: (labels ?? {}) as Record<string, string>,
    currentSerial: r.current_serial == null ? null : Buffer.from(r.current_serial as Uint8Array),
    currentNotAfter: dateOrNull(r.current_not_after),
    createdAt: new Date(r.created_at as string | Date),
    activatedAt: dateOrNull(r.activated_at),
    suspendedAt: dateOrNull(r.suspended_at),
    revokedAt: dateOrNull(r.revoked_at),
    decommissionedAt: dateOrNull(r.decommissioned_at),
    updatedAt: new Date(r.updated_at as string | Date),
  };
}

/** The list's filters on a devices query. */
function filtered<Q extends Knex.QueryBuilder>(q: Q, filter: DeviceFilter): Q {
  if (filter.status) q.where('status', filter.status);
  if (filter.kind) q.where('kind', filter.kind);
  if (filter.lot !== undefined) q.where('lot', filter.lot);
  if (filter.model !== undefined) q.where('model', filter.model);
  if (filter.firmwareVersion !== undefined) q.where('firmware_version', filter.firmwareVersion);
  if (filter.site !== undefined) q.where('site', filter.site);
  if (filter.expiringBefore) q.where('current_not_after', '<', filter.expiringBefore);
  // Presence on the bus (bus_presence, migration 0030): connected, broker, silentSince.
  for (const c of presenceFilterSql(filter)) q.whereRaw(c.sql, c.bindings);
  return q;
}

/** SQL for the device inventory (devices). */
export class DeviceStore {
  /** Inserts one device unless the id exists; true when inserted. */
  async insert(db: Executor, row: NewDeviceRow): Promise<boolean> {
    return (await this.insertMany(db, [row])).length === 1;
  }

  /**
   * Inserts all rows in ONE statement, whatever their number: the rows travel as one jsonb
   * parameter, so there is no bind-parameter limit to chunk around. Rows whose id already exists
   * are skipped; returns the ids that were inserted (the caller rolls back when some are missing).
   */
  async insertMany(db: Executor, rows: NewDeviceRow[]): Promise<string[]> {
    if (rows.length === 0) return [];
    const payload = JSON.stringify(
      rows.map((r) => ({
        id: r.id,
        kind: r.kind,
        model: r.model,
        hardware_revision: r.hardwareRevision,
        firmware_version: r.firmwareVersion,
        site: r.site,
        lot: r.lot,
        labels: r.labels,
        created_at: r.createdAt.toISOString(),
      })),
    );
    const result = await db.raw(
      `insert into devices (id, kind, model, hardware_revision, firmware_version, site, lot, status, labels, created_at, updated_at)
       select r.id, r.kind, r.model, r.hardware_revision, r.firmware_version, r.site, r.lot, 'registered',
              coalesce(r.labels, '{}'::jsonb), r.created_at, r.created_at
         from jsonb_to_recordset(?::jsonb) as r(id text, kind text, model text, hardware_revision text,
              firmware_version text, site text, lot text, labels jsonb, created_at timestamptz)
       on conflict (id) do nothing
       returning id`,
      [payload],
    );
    return (result.rows as { id: string }[]).map((r) => r.id);
  }

  /** Which of these ids exist (one statement, one parameter). */
  async existingIds(db: Executor, ids: string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const result = await db.raw(
      `select d.id from devices d
        where d.id in (select jsonb_array_elements_text(?::jsonb))`,
      [JSON.stringify(ids)],
    );
    return (result.rows as { id: string }[]).map((r) => r.id);
  }

  async get(db: Executor, id: string): Promise<DeviceRow | undefined> {
    const r = await db('devices').select(COLUMNS).where({ id }).first();
    return r ? fromRow(r) : undefined;
  }

  /** Reads the row and locks it until `tx` ends. */
  async getForUpdate(tx: Executor, id: string): Promise<DeviceRow | undefined> {
    const r = await tx('devices').select(COLUMNS).where({ id }).forUpdate().first();
    return r ? fromRow(r) : undefined;
  }

  /** The device when it exists and belongs to this lot. */
  async getInLot(db: Executor, lot: string, id: string): Promise<DeviceRow | undefined> {
    const r = await db('devices').select(COLUMNS).where({ id, lot }).first();
    return r ? fromRow(r) : undefined;
  }

  async list(db: Executor, filter: DeviceFilter, page: { cursor?: DeviceCursor | undefined; limit: number }): Promise<DeviceRow[]> {
    const q = filtered(db('devices').select(COLUMNS), filter);
    if (page.cursor) q.whereRaw('(created_at, id) < (?::timestamptz, ?::text)', [page.cursor.createdAt, page.cursor.id]);
    const rows = await q
      .orderBy([
        { column: 'created_at', order: 'desc' },
        { column: 'id', order: 'desc' },
      ])
      .limit(page.limit);
    return rows.map(fromRow);
  }

  /** How many devices match the filter (its status aside), by status. */
  async countByStatus(db: Executor, filter: Omit<DeviceFilter, 'status'>): Promise<Record<string, number>> {
    const rows = (await filtered(db('devices'), filter).select('status').count({ n: '*' }).groupBy('status')) as {
      status: string;
      n: unknown;
    }[];
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  }

  /** Sets the given descriptive columns and updated_at; returns the updated row. */
  async updateAttributes(db: Executor, id: string, attrs: DeviceAttributes, at: Date): Promise<DeviceRow | undefined> {
    const set: Record<string, unknown> = { updated_at: at };
    if (attrs.model !== undefined) set.model = attrs.model;
    if (attrs.hardwareRevision !== undefined) set.hardware_revision = attrs.hardwareRevision;
    if (attrs.firmwareVersion !== undefined) set.firmware_version = attrs.firmwareVersion;
    if (attrs.site !== undefined) set.site = attrs.site;
    if (attrs.labels !== undefined) set.labels = JSON.stringify(attrs.labels);
    const rows = await db('devices').where({ id }).update(set).returning(COLUMNS);
    return rows[0] ? fromRow(rows[0]) : undefined;
  }

  /** Moves the device to `to` (the domain has checked the transition), stamping the status's time column. */
  async setStatus(db: Executor, id: string, to: DeviceStatus, at: Date): Promise<DeviceRow | undefined> {
    const set: Record<string, unknown> = { status: to, updated_at: at };
    const column = STATUS_AT[to];
    if (column) set[column] = at;
    const rows = await db('devices').where({ id }).update(set).returning(COLUMNS);
    return rows[0] ? fromRow(rows[0]) : undefined;
  }

  /**
   * Moves every device whose current certificate is one of `serials`, and whose status is one of
   * `from`, to `to`, in one statement. Returns each moved device with the status it left.
   */
  async setStatusByCurrentSerial(
    db: Executor,
    serials: Buffer[],
    from: readonly DeviceStatus[],
    to: DeviceStatus,
    at: Date,
  ): Promise<{ id: string; previous: DeviceStatus; serial: Buffer }[]> {
    if (serials.length === 0 || from.length === 0) return [];
    const column = STATUS_AT[to];
    const r = await db.raw(
      `with moved as (
         select id, status from devices where current_serial = any(?::bytea[]) and status = any(?::text[]) for update)
       update devices d set status = ?, updated_at = ?${column ? `, ${column} = ?` : ''}
         from moved where d.id = moved.id
       returning d.id, moved.status as previous, d.current_serial as serial`,
      [serials, [...from], to, at, ...(column ? [at] : [])],
    );
    return (r.rows as { id: string; previous: DeviceStatus; serial: Uint8Array }[]).map((x) => ({
      id: x.id,
      previous: x.previous,
      serial: Buffer.from(x.serial),
    }));
  }

  /** Records the newest issued certificate. */
  async setCurrentCertificate(
    db: Executor,
    id: string,
    cert: { serial: Buffer; notAfter: Date },
    at: Date,
  ): Promise<DeviceRow | undefined> {
    const rows = await db('devices')
      .where({ id })
      .update({ current_serial: cert.serial, current_not_after: cert.notAfter, updated_at: at })
      .returning(COLUMNS);
    return rows[0] ? fromRow(rows[0]) : undefined;
  }
}
