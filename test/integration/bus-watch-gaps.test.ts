// The bus watch's gaps in the database (migration 0031): written as they open and close, the
// start-of-process recovery in SQL, and — with the link to PostgreSQL cut — kept in memory and
// written once it is back. The source here is a Mosquitto log file that does not exist at first.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { databaseUrlOf, dbTargets, disposeDb, postgresTarget } from '../helpers/db.js';
import { tempDir } from '../helpers/openssl.js';
import { faultyLink, until } from '../helpers/processes.js';
import { envSkip } from '../helpers/tools.js';
import { createDb, type Db } from '../../src/store/db.js';
import { BusWatchGapStore } from '../../src/store/bus-watch-gap-store.js';
import { WatchGapBook } from '../../src/detect/bus-watch-gaps.js';
import { BusWatch } from '../../src/detect/bus-watch.js';
import { MosquittoLogFileSource } from '../../src/broker/mosquitto-log-file-source.js';
import type { WatchedBusEvent } from '../../src/broker/bus-events.js';
import { migrationSource } from '../../migrations/index.js';

const clock = { now: () => new Date() };
const store = new BusWatchGapStore();
const CONNECT_LINE = (id: string) =>
  `${Math.floor(Date.now() / 1000)}: New client connected from 127.0.0.1:40000 as ${id} (p2, c1, k60, u'${id}-cn').\n`;

for (const target of dbTargets) {
  describe(`bus watch gaps (migration 0031) on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    before(async () => {
      db = await target.create();
    });
    after(async () => {
      if (db) await disposeDb(db);
    });

    it('at start: gaps another process left open are closed then; where it died (no gap of the whole watch), one from its last mark', async () => {
      // Process p0 watches a and b. It stops a's watch cleanly (a gap of the whole watch, open), and dies
      // while b's $SYS source is down (its gap open) and b's file source up (marking).
      const p0 = new WatchGapBook(db, store, clock, { process: 'p0' });
      p0.mark(['a', 'b']);
      await p0.flush();
      const stopped = p0.open('a', 'watch', 'watch-stopped');
      const dropped = p0.open('b', 'mosquitto-sys-log', 'session-dropped');
      await p0.close();
      const markB = (await store.marks(db, ['b'])).get('b')!;
      await new Promise((r) => setTimeout(r, 20));
      const start = new Date();
      const p1 = new WatchGapBook(db, store, clock, { process: 'p1' });
      p1.recover(['a', 'b', 'never-watched'], start);
      assert.equal(await p1.flush(), true);
      const rows = await store.since(db, new Date(0));
      assert.equal(rows.find((g) => g.id === stopped.id)!.to?.getTime(), start.getTime(), 'closed at the start');
      assert.equal(rows.filter((g) => g.broker === 'a').length, 1, 'a stop closed its books: no gap from the mark');
      assert.equal(rows.find((g) => g.id === dropped.id)!.to?.getTime(), start.getTime());
      const died = rows.filter((g) => g.broker === 'b' && g.why === 'watch-not-running');
      assert.equal(died.length, 1);
      assert.equal(died[0]!.source, 'watch');
      assert.equal(died[0]!.from.getTime(), markB.watchedUntil.getTime());
      assert.equal(died[0]!.to?.getTime(), start.getTime());
      assert.equal(rows.filter((g) => g.broker === 'never-watched').length, 0, 'never watched: no gap invented');
      assert.deepEqual(
        p1
          .known(new Date(0))
          .map((g) => g.id)
          .sort(),
        [stopped.id, dropped.id, died[0]!.id].sort(),
        'what the recovery recorded is known to the process (its status with the database away)',
      );
      // A mark never moves back.
      await store.mark(db, ['b'], new Date(0), 'p1');
      assert.equal((await store.marks(db, ['b'])).get('b')!.watchedUntil.getTime(), markB.watchedUntil.getTime());
      await p1.close();
    });

    it('the migration goes down and up again', async () => {
      const name = '20261207_0031_bus_watch_gaps';
      const [, undone] = (await db.migrate.down({ migrationSource, name })) as [number, string[]];
      assert.deepEqual(undone, [name]);
      assert.equal(await db.schema.hasTable('bus_watch_gaps'), false);
      const [, applied] = (await db.migrate.up({ migrationSource, name })) as [number, string[]];
      assert.deepEqual(applied, [name]);
      assert.equal(await db.schema.hasTable('bus_watch_marks'), true);
    });
  });
}

describe(
  'bus watch gaps with PostgreSQL away: kept in memory, written when it is back',
  { skip: envSkip('DATABASE_URL', 'a PostgreSQL behind a link the test cuts') ?? postgresTarget.skip },
  () => {
    let direct: Db;
    let viaLink: Db;
    let link: Awaited<ReturnType<typeof faultyLink>>;
    before(async () => {
      direct = await postgresTarget.create();
      const url = new URL(databaseUrlOf(direct));
      link = await faultyLink(Number(url.port || 5432));
      url.hostname = '127.0.0.1';
      url.port = String(link.port);
      viaLink = createDb({ databaseUrl: url.toString(), poolMax: 2 });
    });
    after(async () => {
      await viaLink?.destroy();
      await link?.close();
      if (direct) await disposeDb(direct);
    });

    it('a log file missing at start: start-failed, retried; the gap and its end wait in memory while the link is cut', async () => {
      const path = join(tempDir(), 'mosquitto.log');
      const source = new MosquittoLogFileSource({ broker: 'lab', path, pollMs: 50 });
      const errors: unknown[] = [];
      const gaps = new WatchGapBook(viaLink, store, clock, { process: 'p-link', retryMs: 200, onError: (e) => errors.push(e) });
      const seen: WatchedBusEvent[] = [];
      const watch = new BusWatch({
        sources: [source],
        observers: [{ observe: (w) => seen.push(w) }],
        gaps,
        clock,
        retry: { minMs: 100, maxMs: 200 },
      });
      link.cut(true);
      await watch.start();
      let st = await watch.status();
      assert.equal(st.sources[0]!.up, false);
      assert.equal(st.sources[0]!.why, 'start-failed');
      assert.match(st.sources[0]!.detail!, /ENOENT/);
      assert.equal(st.gapsComplete, false, 'the database could not be read: what this process knows');
      writeFileSync(path, '');
      await until('the file source up', async () => (await watch.status()).sources[0]!.up, 10_000);
      appendFileSync(path, CONNECT_LINE('dev-7'));
      await until('the connect from the file', async () => seen.find((w) => w.identity === 'dev-7-cn'), 5_000);
      st = await watch.status();
      const gap = st.sources[0]!.gaps.find((g) => g.why === 'start-failed')!;
      assert.ok(gap.to, 'closed in memory');
      assert.ok(st.gapsWaiting >= 1);
      assert.equal((await direct('bus_watch_gaps').where({ id: gap.id })).length, 0, 'not written yet');
      assert.ok(errors.length >= 1);

      link.cut(false);
      await until(
        'the gap written',
        async () => (await direct('bus_watch_gaps').where({ id: gap.id }).whereNotNull('to_at')).length === 1,
        10_000,
      );
      await until('nothing waits', async () => (await watch.status()).gapsWaiting === 0, 10_000);
      assert.equal((await watch.status()).gapsComplete, true);
      await watch.stop();
      const stopped = await direct('bus_watch_gaps').where({ broker: 'lab', why: 'watch-stopped' }).whereNull('to_at');
      assert.equal(stopped.length, 1, 'stopping leaves an open gap for the next start');
    });
  },
);
