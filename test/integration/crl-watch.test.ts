// The scheduled CRL refresh and the stale-CRL alarm: due CRLs are replaced without anyone fetching
// them; a CA whose CRL cannot be replaced (here the database refuses new CRLs) raises one
// crl-stale security event per CRL and severity, and /metrics shows it.
import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import request from 'supertest';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { bootstrap } from '../../src/bootstrap.js';
import { createHttpHandler, type Service } from '../../src/main.js';
import { ManualClock } from '../../src/shared/clock.js';

const HOUR = 3_600_000;

for (const target of dbTargets) {
  describe(`CRL watch on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    const clock = new ManualClock(new Date('2026-12-01T00:00:00Z'));
    let issuingId: string;
    let rootId: string;
    let keys: { admin: string; auditor: string; provisioner: string };
    const events = async () => (await svc.securityEvents.list({ kinds: ['crl-stale'] }, { limit: 50 })).items;
    const latest = async (caId: string) => (await svc.db('crls').where({ ca_id: caId, kind: 'full' }).max({ n: 'crl_number' }).first())!.n;
    const scrape = async () =>
      (
        await request(createHttpHandler(svc, { validateResponses: true }))
          .get('/metrics')
          .set('Authorization', `Bearer ${keys.auditor}`)
          .expect(200)
      ).text;

    before(async () => {
      // CRLs valid for 48 h: due after 12 h, critical with less than 12 h left.
      svc = await makeService(target, { clock, env: { CRL_VALIDITY_HOURS: '48' } });
      const boot = await bootstrap(svc);
      issuingId = boot.issuingId!;
      rootId = boot.rootId!;
      keys = {
        admin: boot.adminKey!,
        auditor: (await svc.apiKeys.create({ name: 'a', role: 'auditor' }, { actor: 'test' })).key,
        provisioner: (await svc.apiKeys.create({ name: 'p', role: 'provisioner' }, { actor: 'test' })).key,
      };
    });
    after(async () => {
      await svc?.db.raw('drop trigger if exists crls_refuse on crls').catch(() => undefined);
      await svc?.dispose();
    });

    it('publishes missing CRLs and replaces due ones on its own, with no alarm', async () => {
      const first = await svc.crlWatch.check();
      assert.deepEqual(first.map((s) => s.caId).sort(), [issuingId, rootId].sort());
      assert.ok(first.every((s) => s.crl && !s.stale));
      const before = await latest(issuingId);
      clock.advance(6 * HOUR);
      await svc.crlWatch.check();
      assert.equal(await latest(issuingId), before, 'not due yet: left alone');
      clock.advance(6 * HOUR + 60_000);
      const due = await svc.crlWatch.check();
      assert.ok(BigInt(await latest(issuingId)) > BigInt(before), 'due: replaced');
      assert.ok(due.every((s) => !s.stale && s.crl!.thisUpdate.getTime() === clock.now().getTime()));
      assert.equal((await events()).length, 0);
    });

    it('raises one warning when a due CRL cannot be replaced, a critical alarm as expiry nears, and clears once publishing works again', async () => {
      await svc.db.raw(
        `create or replace function crls_refuse() returns trigger language plpgsql as $$ begin raise exception 'disk full'; end $$`,
      );
      await svc.db.raw('create trigger crls_refuse before insert on crls for each row execute function crls_refuse()');
      const stuck = await latest(issuingId);
      clock.advance(12 * HOUR + 60_000);
      for (let i = 0; i < 3; i++) await svc.crlWatch.check();
      assert.equal(await latest(issuingId), stuck);
      let e = await events();
      assert.deepEqual(
        e.map((x) => [x.subject, x.severity]).sort(),
        [
          [issuingId, 'warning'],
          [rootId, 'warning'],
        ].sort(),
      );
      assert.match(String(e.find((x) => x.subject === issuingId)!.details.error), /disk full/);
      let text = await scrape();
      assert.match(text, new RegExp(`^mqttca_crl_stale\\{ca_id="${issuingId}",shard="0"\\} 1$`, 'm'));
      const left = Number(
        new RegExp(`^mqttca_crl_seconds_to_next_update\\{ca_id="${issuingId}",shard="0"\\} ([\\d.]+)$`, 'm').exec(text)![1],
      );
      assert.ok(Math.abs(left - (36 * HOUR - 60_000) / 1000) < 1, `seconds to nextUpdate: ${left}`);

      clock.advance(25 * HOUR); // under 12 h left
      await svc.crlWatch.check();
      await svc.crlWatch.check();
      e = await events();
      assert.equal(e.filter((x) => x.severity === 'critical').length, 2, 'one critical alarm per CA');
      const audit = await svc.audit.list({ limit: 10, action: 'security.crl-stale' });
      assert.equal(audit.items.length, 4);

      await svc.db.raw('drop trigger crls_refuse on crls');
      const healed = await svc.crlWatch.check();
      assert.ok(healed.every((s) => !s.stale));
      text = await scrape();
      assert.match(text, new RegExp(`^mqttca_crl_stale\\{ca_id="${issuingId}",shard="0"\\} 0$`, 'm'));
      assert.match(text, /^mqttca_process_cpu_seconds_total \d/m);
    });

    it('/metrics wants an API key of a role that may read it', async () => {
      const api = request(createHttpHandler(svc, { validateResponses: true }));
      assert.equal((await api.get('/metrics')).status, 401);
      assert.equal((await api.get('/metrics').set('Authorization', `Bearer ${keys.provisioner}`)).status, 403);
      const ok = await api.get('/metrics').set('Authorization', `Bearer ${keys.admin}`).expect(200);
      assert.match(String(ok.headers['content-type']), /^text\/plain; version=0\.0\.4/);
      // Every sample line is `name{labels} value` (the text exposition format).
      for (const line of ok.text.split('\n').filter((l) => l && !l.startsWith('#')))
        assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[\d.e+-]+|NaN$/);
    });
  });
}
