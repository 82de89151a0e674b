import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Db } from '../../src/store/db.js';
import { DeviceStore, type DeviceFilter } from '../../src/store/device-store.js';
import { disposeDb, postgresTarget } from '../helpers/db.js';

const DEVICES = 50_000;
const LOTS = 20;
const LIMIT = 100;

interface PlanNode {
  'Node Type': string;
  'Actual Rows': number;
  'Actual Loops': number;
  'Rows Removed by Filter'?: number;
  'Rows Removed by Index Recheck'?: number;
  Plans?: PlanNode[];
}

/** Rows every node of the plan produced or threw away: what the query read, whatever the plan. */
function rowsTouched(n: PlanNode): number {
  const own = (n['Actual Rows'] + (n['Rows Removed by Filter'] ?? 0) + (n['Rows Removed by Index Recheck'] ?? 0)) * n['Actual Loops'];
  return own + (n.Plans ?? []).reduce((s, p) => s + rowsTouched(p), 0);
}

/**
 * A page of the device list reads about a page of rows, however large the fleet (#29 item 4):
 * counted in the plan PostgreSQL ran (EXPLAIN ANALYZE), not timed.
 */
describe('the device list on a large fleet (PostgreSQL)', { skip: postgresTarget.skip }, () => {
  let db: Db;
  const store = new DeviceStore();

  before(async () => {
    db = await postgresTarget.create();
    // Every lot has every status; 1% suspended.
    await db.raw(
      `insert into devices (id, kind, lot, status, labels, created_at, updated_at)
       select 'dev-' || lpad(i::text, 6, '0'), 'client', 'LOT-' || (i % ${LOTS}),
              case when (i / ${LOTS}) % 100 = 0 then 'suspended' when (i / ${LOTS}) % 100 < 10 then 'revoked' else 'active' end,
              '{}', timestamptz '2026-01-01' + i * interval '1 millisecond', now()
         from generate_series(1, ?::int) as i`,
      [DEVICES],
    );
    await db.raw('analyze devices');
  });
  after(() => disposeDb(db));

  /** The rows the plan of `store.list(filter, page)` touched, and the page it returned. */
  async function explain(
    filter: DeviceFilter,
    cursor?: { createdAt: Date; id: string },
  ): Promise<{ touched: number; page: number; plan: string }> {
    let query: { sql: string; bindings: unknown[] } | undefined;
    const listen = (q: { sql: string; bindings: unknown[] }) => (query ??= q);
    db.on('query', listen);
    let page: number;
    try {
      page = (await store.list(db, filter, { cursor, limit: LIMIT + 1 })).length;
    } finally {
      db.off('query', listen);
    }
    // The logged SQL is node-postgres's ($1, $2, ... in binding order); knex.raw takes ?.
    const r = await db.raw(`explain (analyze, format json) ${query!.sql.replace(/\$\d+/g, '?')}`, query!.bindings as never);
    const plan = (r.rows as { 'QUERY PLAN': { Plan: PlanNode }[] }[])[0]!['QUERY PLAN'][0]!.Plan;
    return { touched: rowsTouched(plan), page, plan: JSON.stringify(plan) };
  }

  for (const [what, filter] of [
    ['a lot and a rare status', { lot: 'LOT-7', status: 'suspended' }],
    ['a lot and a common status', { lot: 'LOT-7', status: 'active' }],
    ['a lot', { lot: 'LOT-7' }],
    ['a rare status', { status: 'suspended' }],
  ] as [string, DeviceFilter][]) {
    it(`reads about a page for ${what}, on the first page and deep by cursor`, async () => {
      const first = await explain(filter);
      assert.ok(first.page > 0, 'the page is not empty');
      assert.ok(first.touched <= 4 * (LIMIT + 1), `the first page touched ${first.touched} rows: ${first.plan}`);
      // A cursor 90% down the list.
      const all = await db('devices').where(filter).count({ n: '*' });
      const deep = (await db('devices')
        .select('created_at', 'id')
        .where(filter)
        .orderBy([
          { column: 'created_at', order: 'desc' },
          { column: 'id', order: 'desc' },
        ])
        .offset(Math.floor(Number(all[0]!.n) * 0.9))
        .first()) as { created_at: Date; id: string };
      const later = await explain(filter, { createdAt: new Date(deep.created_at), id: deep.id });
      assert.ok(later.page > 0, 'the deep page is not empty');
      assert.ok(later.touched <= 4 * (LIMIT + 1), `the deep page touched ${later.touched} rows: ${later.plan}`);
    });
  }
});
