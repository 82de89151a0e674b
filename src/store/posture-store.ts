import type { Executor } from './db.js';

export interface FleetCounts {
  byStatus: Record<string, number>;
  /** Active devices, and of them: with a current certificate that is issued and unexpired; with model, firmware, site recorded. */
  active: {
    total: number;
    clients: number;
    brokers: number;
    validCertificate: number;
    validBrokers: number;
    withModel: number;
    withFirmware: number;
    withSite: number;
  };
  /**
   * Holders of a valid broker-profile certificate that are not broker devices in the inventory,
   * by device id, else common name: a broker certificate issued through POST /v1/certificates
   * without an inventory record is a broker all the same. Certificates of devices that are not
   * active are left out (the device's status speaks for them).
   */
  otherBrokers: number;
}

const n = (v: unknown) => Number(v ?? 0);

/** Where the next page of unlabelledCertificates starts: after this (notAfter, serial). */
export interface UnlabelledCursor {
  notAfter: string;
  serial: Buffer;
}

/** The queries behind the posture report: counts over the inventory, certificates, backups, incidents and events. */
export class PostureStore {
  async fleet(ex: Executor, now: Date): Promise<FleetCounts> {
    const statuses = (await ex('devices').select('status').count({ n: '*' }).groupBy('status')) as { status: string; n: unknown }[];
    const r = await ex.raw(
      `select count(*) as total,
              count(*) filter (where d.kind = 'client') as clients,
              count(*) filter (where d.kind = 'broker') as brokers,
              count(c.serial) as valid,
              count(c.serial) filter (where d.kind = 'broker') as valid_brokers,
              count(*) filter (where d.model is not null) as with_model,
              count(*) filter (where d.firmware_version is not null) as with_firmware,
              count(*) filter (where d.site is not null) as with_site
         from devices d
         left join certificates c on c.serial = d.current_serial and c.status = 'issued' and c.not_after > ?
        where d.status = 'active'`,
      [now],
    );
    const a = (r.rows as Record<string, unknown>[])[0]!;
    const other = await ex.raw(
      `select count(distinct coalesce('device:' || c.device_id, 'cn:' || c.subject_cn)) as holders
         from certificates c
        where c.profile = 'broker' and c.status = 'issued' and c.not_after > ?
          and not exists (select 1 from devices d where d.id = c.device_id and (d.kind = 'broker' or d.status <> 'active'))`,
      [now],
    );
    return {
      byStatus: Object.fromEntries(statuses.map((s) => [s.status, n(s.n)])),
      active: {
        total: n(a.total),
        clients: n(a.clients),
        brokers: n(a.brokers),
        validCertificate: n(a.valid),
        validBrokers: n(a.valid_brokers),
        withModel: n(a.with_model),
        withFirmware: n(a.with_firmware),
        withSite: n(a.with_site),
      },
      otherBrokers: n((other.rows as Record<string, unknown>[])[0]!.holders),
    };
  }

  /**
   * Every issued, unexpired end-entity certificate, whoever holds it (devices in a lot or not,
   * brokers issued through any route, the service's own responders), counted by the key type
   * recorded at issuance; null counts the rows issued before it was recorded (migration 0029).
   * CA certificates are counted with the CAs.
   */
  async certificateKeyTypes(ex: Executor, now: Date): Promise<{ keyType: string | null; n: number }[]> {
    const rows = (await ex('certificates as c')
      .where('c.status', 'issued')
      .andWhere('c.profile', '<>', 'ca')
      .andWhere('c.not_after', '>', now)
      .select('c.key_type')
      .count({ n: '*' })
      .groupBy('c.key_type')) as { key_type: string | null; n: unknown }[];
    return rows.map((r) => ({ keyType: r.key_type, n: n(r.n) }));
  }

  /**
   * DERs of the issued, unexpired end-entity certificates with no key type recorded (issued
   * before migration 0029), a page at a time in notAfter order, by that migration's partial index.
   * Pass the previous page's `next` to read on (null for the first page).
   */
  async unlabelledCertificates(
    ex: Executor,
    now: Date,
    after: UnlabelledCursor | null,
    limit: number,
  ): Promise<{ rows: { der: Buffer }[]; next: UnlabelledCursor | null }> {
    const q = ex('certificates as c')
      .whereNull('c.key_type')
      .andWhere('c.status', 'issued')
      .andWhere('c.not_after', '>', now)
      .andWhere('c.profile', '<>', 'ca')
      // notAfter as the database's own text: a Date would drop its microseconds, and the keyset with them.
      .select('c.serial', 'c.der', ex.raw('c.not_after::text as not_after_key'))
      .orderBy([{ column: 'c.not_after' }, { column: 'c.serial' }])
      .limit(limit);
    if (after) q.andWhereRaw('(c.not_after, c.serial) > (?::timestamptz, ?)', [after.notAfter, after.serial]);
    const rows = (await q) as { serial: Uint8Array; der: Uint8Array; not_after_key: string }[];
    const last = rows[rows.length - 1];
    return {
      rows: rows.map((r) => ({ der: Buffer.from(r.der) })),
      next: rows.length < limit || !last ? null : { notAfter: last.not_after_key, serial: Buffer.from(last.serial) },
    };
  }

  async lastBackupAt(ex: Executor): Promise<Date | null> {
    const r = (await ex('backups').max({ at: 'created_at' }).first()) as { at: unknown } | undefined;
    return r?.at ? new Date(r.at as string) : null;
  }

  async openIncidents(ex: Executor): Promise<{ kind: string; openedAt: Date }[]> {
    const rows = (await ex('incidents').select('kind', 'opened_at').where('status', 'open')) as { kind: string; opened_at: unknown }[];
    return rows.map((r) => ({ kind: r.kind, openedAt: new Date(r.opened_at as string) }));
  }

  async eventsSince(ex: Executor, since: Date): Promise<{ kind: string; severity: string; n: number }[]> {
    const rows = (await ex('security_events')
      .select('kind', 'severity')
      .count({ n: '*' })
      .where('at', '>=', since)
      .groupBy('kind', 'severity')
      .orderBy('kind')) as { kind: string; severity: string; n: unknown }[];
    return rows.map((r) => ({ kind: r.kind, severity: r.severity, n: n(r.n) }));
  }

  /**
   * From the broker's time of the act that crossed a bus rule's threshold (details.actAt) to its
   * security event, over the bus events since `since`; null when there are none.
   */
  async busLag(ex: Executor, since: Date): Promise<{ count: number; p50Seconds: number; p99Seconds: number } | null> {
    const r = await ex.raw(
      `select count(*)::bigint as n,
              percentile_cont(0.5) within group (order by lag) as p50,
              percentile_cont(0.99) within group (order by lag) as p99
         from (select greatest(0, extract(epoch from (at - (details->>'actAt')::timestamptz))) as lag
                 from security_events
                where at >= ? and kind like 'bus.%' and details->>'actAt' is not null) l`,
      [since],
    );
    const row = r.rows[0] as { n: string | number; p50: number | null; p99: number | null };
    if (Number(row.n) === 0) return null;
    const round = (x: number | null) => Math.round(Number(x) * 1000) / 1000;
    return { count: Number(row.n), p50Seconds: round(row.p50), p99Seconds: round(row.p99) };
  }
}
