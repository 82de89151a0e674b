import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { dbTargets } from '../helpers/db.js';
import { makeService } from '../helpers/service.js';
import { bootstrap } from '../../src/bootstrap.js';
import { parseKek, KekError } from '../../src/ca/kek.js';
import { unseal } from '../../src/ca/envelope.js';
import { buildService, type Service } from '../../src/main.js';
import { loadConfig } from '../../src/config/config.js';

for (const target of dbTargets) {
  describe(`key custody on ${target.name}`, { skip: target.skip }, () => {
    let svc: Service & { dispose(): Promise<void> };
    before(async () => {
      svc = await makeService(target);
      await bootstrap(svc);
    });
    after(async () => svc?.dispose());

    it('stores no private key in plaintext anywhere in the database', async () => {
      const kek = parseKek(svc.config.kek!, 'test');
      const rows = await svc.db('key_material').select('id', 'kek_id', 'wrapped_dek', 'ciphertext');
      assert.equal(rows.length, 4, "the root and issuing CA keys, and each one's OCSP responder key");
      const secrets: Buffer[] = [];
      for (const r of rows) {
        const pkcs8 = unseal(kek, { kekId: r.kek_id, wrappedDek: Buffer.from(r.wrapped_dek), ciphertext: Buffer.from(r.ciphertext) }, r.id);
        const jwk = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' });
        secrets.push(pkcs8, Buffer.from(jwk.d!, 'base64url'));
      }
      // Every table, every column, as the database would hand it to someone who dumped it.
      const tables = (await svc.db.raw(`select tablename from pg_tables where schemaname = 'public'`)).rows.map(
        (t: { tablename: string }) => t.tablename,
      );
      let cells = 0;
      for (const t of tables) {
        for (const row of (await svc.db.raw(`select * from ${t}`)).rows as Record<string, unknown>[]) {
          for (const v of Object.values(row)) {
            if (v == null) continue;
            const bytes = v instanceof Uint8Array ? Buffer.from(v) : Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));
            cells++;
            for (const s of secrets) {
              assert.ok(!bytes.includes(s), `a private key appears in ${t}`);
              assert.ok(
                !bytes.includes(Buffer.from(s.toString('hex'))) && !bytes.includes(Buffer.from(s.toString('base64'))),
                `a private key appears encoded in ${t}`,
              );
            }
          }
        }
      }
      assert.ok(cells > 50);
    });

    it('refuses to open the store with a different KEK, naming the variable to fix, and leaves it untouched', async () => {
      const config = loadConfig({ MQTT_CA_KEK: randomBytes(32).toString('base64'), DATA_DIR: svc.config.dataDir, LOG_LEVEL: 'silent' });
      await assert.rejects(buildService(config, { db: svc.db, logger: pino({ level: 'silent' }) }), (e: unknown) => {
        assert.ok(e instanceof KekError, String(e));
        assert.match(e.message, /is not the one this store's keys are wrapped with .*MQTT_CA_KEK/);
        return true;
      });
      assert.equal((await svc.hierarchy.list()).length, 2);
      assert.equal((await svc.audit.verify(svc.db)).ok, true);
    });
  });
}
