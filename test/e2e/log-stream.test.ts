import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import { bootstrap } from '../../src/bootstrap.js';
import { loadConfig } from '../../src/config/config.js';
import { buildService, createHttpHandler, createLogger, type Service } from '../../src/main.js';
import type { Db } from '../../src/store/db.js';
import { TokenStore } from '../../src/store/token-store.js';
import { dbTargets, disposeDb } from '../helpers/db.js';

/** The service's log stream, as a SIEM would receive it: one JSON object a line. */
class CapturedLog extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString('utf8');
    done();
  }
  lines(): Array<Record<string, unknown>> {
    return this.text
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
  of(kind: string): Array<Record<string, unknown>> {
    return this.lines().filter((l) => l.kind === kind);
  }
}

for (const target of dbTargets) {
  describe(`the log stream on ${target.name}`, { skip: target.skip }, () => {
    let db: Db;
    let dataDir: string;
    let log: CapturedLog;
    let svc: Service;
    let api: ReturnType<typeof request>;
    let adminKey: string;

    before(async () => {
      db = await target.create();
      dataDir = mkdtempSync(join(tmpdir(), 'mqttca-log-'));
      log = new CapturedLog();
      const config = loadConfig({
        MQTT_CA_KEK: randomBytes(32).toString('base64'),
        DATA_DIR: dataDir,
        LOG_LEVEL: 'info',
        AUDIT_ANCHOR_BATCH_MS: '10',
      });
      svc = await buildService(config, { db, logger: createLogger('info', log) });
      const boot = await bootstrap(svc);
      adminKey = boot.adminKey!;
      api = request(createHttpHandler(svc));
    });
    after(async () => {
      await svc?.stop();
      if (db) await disposeDb(db);
      rmSync(dataDir, { recursive: true, force: true });
    });

    /** Waits until every committed audit entry has had its line (they are written once their transaction commits). */
    async function allAudited(): Promise<number[]> {
      const seqs = async () =>
        ((await db('audit_log').select('seq').orderBy('seq')) as Array<{ seq: string | number }>).map((r) => Number(r.seq));
      let inTable = await seqs();
      for (let i = 0; i < 200 && log.of('audit').length < inTable.length; i++) {
        await new Promise((r) => setTimeout(r, 25));
        inTable = await seqs();
      }
      return inTable;
    }

    it('every audit entry is a structured line with stable fields, and no secret reaches the stream', async () => {
      const created = await api
        .post('/v1/api-keys')
        .set('Authorization', `Bearer ${adminKey}`)
        .send({ name: 'line 3 provisioning', role: 'provisioner' });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      const provisionerKey = created.body.key as string;
      const token = await api.post('/v1/enrollment-tokens').set('Authorization', `Bearer ${provisionerKey}`).send({ lot: 'lot-log-1' });
      assert.equal(token.status, 201, JSON.stringify(token.body));

      const inTable = await allAudited();
      const lines = log.of('audit');
      assert.deepEqual(
        lines.map((l) => l.seq),
        inTable,
        'one line for each entry, in order',
      );
      const keyLine = lines.find((l) => l.action === 'apikey.created' && l.targetId === created.body.id);
      assert.ok(keyLine, 'apikey.created is logged');
      assert.equal(keyLine.targetType, 'api-key');
      assert.equal(keyLine.targetId, created.body.id);
      assert.match(String(keyLine.actor), /^api-key:/);
      assert.match(String(keyLine.hash), /^[0-9a-f]{64}$/);
      assert.equal(typeof keyLine.at, 'string');
      assert.ok(lines.some((l) => l.action === 'enrollment-token.created' && l.targetId === token.body.id));

      const stream = log.text;
      assert.ok(!stream.includes(adminKey), 'the generated admin key is not in the log stream');
      assert.ok(!stream.includes(provisionerKey), 'a created API key is not in the log stream');
      assert.ok(!stream.includes(token.body.token as string), 'an enrollment token is not in the log stream');
      assert.ok(!stream.includes(adminKey.slice(-20)), 'nor any tail of the admin key');
    });

    it('security events are warning lines of their own, and a presented credential is not logged', async () => {
      const wrong = `mqca_${randomBytes(24).toString('base64url')}`;
      const r = await api.get('/v1/cas').set('Authorization', `Bearer ${wrong}`);
      assert.equal(r.status, 401);
      await allAudited();
      let events = log.of('security-event');
      for (let i = 0; i < 200 && !events.some((e) => e.event === 'auth.failed'); i++) {
        await new Promise((res) => setTimeout(res, 25));
        events = log.of('security-event');
      }
      const failed = events.find((e) => e.event === 'auth.failed');
      assert.ok(failed, 'auth.failed is logged as a security event');
      assert.equal(failed.level, 40);
      assert.equal(failed.severity, 'warning');
      assert.equal(typeof failed.id, 'number');
      assert.ok(
        log.of('audit').some((l) => l.action === 'security.auth.failed' && l.targetId === String(failed.id)),
        'and as its audit entry',
      );
      assert.ok(!log.text.includes(wrong), 'the presented credential is not logged');
    });

    it('audit checkpoints are on the stream: the anchor as it moves', async () => {
      const inTable = await allAudited();
      let checkpoints = log.of('audit-checkpoint');
      for (let i = 0; i < 200 && checkpoints.at(-1)?.seq !== inTable.at(-1); i++) {
        await new Promise((res) => setTimeout(res, 25));
        checkpoints = log.of('audit-checkpoint');
      }
      const last = checkpoints.at(-1)!;
      assert.equal(last.seq, inTable.at(-1));
      assert.ok(
        svc.auditCheckpoints.authentic({ seq: last.seq, head: last.head, at: last.at, mac: last.mac }),
        'a line from the stream can be checked by audit verify --checkpoint',
      );
    });

    it('an anchor file that cannot be written does not stop the service: it says so, and the checkpoints still go to the stream', async () => {
      const other = new CapturedLog();
      const config = loadConfig({
        MQTT_CA_KEK: svc.config.kek!,
        DATA_DIR: dataDir,
        LOG_LEVEL: 'info',
        AUDIT_ANCHOR_FILE: '/dev/null/audit-anchor',
        AUDIT_ANCHOR_BATCH_MS: '10',
      });
      const second = await buildService(config, { db, logger: createLogger('info', other) });
      try {
        assert.ok(
          other
            .of('audit-anchor')
            .some((l) => l.level === 50 && /cannot keep the audit anchor at \/dev\/null\/audit-anchor/.test(String(l.msg))),
          other.text,
        );
        await second.apiKeys.create({ name: 'after', role: 'auditor' }, { actor: 'test' });
        const head = (await second.audit.head(db))!.seq;
        for (let i = 0; i < 200 && !other.of('audit-checkpoint').some((c) => c.seq === head); i++)
          await new Promise((r) => setTimeout(r, 25));
        assert.ok(
          other.of('audit-checkpoint').some((c) => c.seq === head),
          'the checkpoint is on the stream',
        );
      } finally {
        await second.stop();
      }
    });

    it('a database error is logged without the values bound to its statement (a token hash)', async () => {
      const store = new TokenStore();
      const created = await svc.tokens.create({ lot: 'lot-log-2' }, { actor: 'test' });
      const row = (await store.get(db, created.id))!;
      // PostgreSQL quotes the first bytes of a long value in a detail ("\\xbac6…"): look for a prefix.
      const hashHex = row.secretHash.toString('hex').slice(0, 32);
      // A statement that fails with the token's hash bound to it: the row is refused (no profile).
      const err = await store.insert(db, { ...row, id: `${row.id}x`, profile: null as unknown as string }).then(
        () => assert.fail('the insert should fail'),
        (e: unknown) => e as Error & Record<string, unknown>,
      );
      const raw = JSON.stringify(Object.fromEntries(Object.getOwnPropertyNames(err).map((k) => [k, err[k]])));
      assert.ok(
        raw.includes(hashHex) || raw.includes(row.secretHash.toString('base64')) || raw.includes('"type":"Buffer"'),
        `the error as the driver gives it carries the hash: ${raw}`,
      );
      svc.logger.error({ err, path: '/v1/enrollment-tokens' }, 'request failed');
      const line = log.lines().findLast((l) => l.msg === 'request failed')!;
      const logged = line.err as Record<string, unknown>;
      assert.equal(logged.code, '23502', 'the error is still recognisable');
      assert.match(String(logged.message), /null value in column "profile"/);
      const text = JSON.stringify(line);
      assert.ok(!text.includes(hashHex), 'the token hash (hex) is not logged');
      assert.ok(!text.includes(row.secretHash.toString('base64')), 'nor in base64');
      assert.ok(!text.includes('"type":"Buffer"'), 'nor as a Buffer');
    });
  });
}
