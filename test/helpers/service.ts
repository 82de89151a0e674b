import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config/config.js';
import request from 'supertest';
import { buildService, createHttpHandler, type Service } from '../../src/main.js';
import { bootstrap } from '../../src/bootstrap.js';
import type { Role } from '../../src/access/api-keys.js';
import type { Clock } from '../../src/shared/clock.js';
import type { DbTarget } from './db.js';
import { disposeDb } from './db.js';

export const TEST_PUBLIC_URL = 'http://ca.test:8080';

/** A service on a fresh database of the given target, with its own KEK and data dir. */
export async function makeService(
  target: DbTarget,
  opts: { clock?: Clock; env?: Record<string, string> } = {},
): Promise<Service & { dispose(): Promise<void> }> {
  const db = await target.create();
  const dataDir = mkdtempSync(join(tmpdir(), 'mqttca-test-'));
  const config = loadConfig({
    MQTT_CA_KEK: randomBytes(32).toString('base64'),
    DATA_DIR: dataDir,
    PUBLIC_URL: TEST_PUBLIC_URL,
    LOG_LEVEL: 'silent',
    ...opts.env,
  });
  const svc = await buildService(config, { db, logger: pino({ level: 'silent' }), ...(opts.clock ? { clock: opts.clock } : {}) });
  return Object.assign(svc, {
    dispose: async () => {
      await svc.stop();
      await disposeDb(db);
    },
  });
}

/**
 * A bootstrapped service (BODY_LIMIT 64kb) with an API key for every role, and supertest on its
 * HTTP handler with response validation on: every response is checked against openapi.yaml.
 */
export async function makeApiService(
  target: DbTarget,
  opts: { clock?: Clock; env?: Record<string, string> } = {},
): Promise<{
  svc: Service & { dispose(): Promise<void> };
  api: ReturnType<typeof request>;
  keys: Record<Role, string>;
  issuingId: string;
}> {
  const svc = await makeService(target, { ...opts, env: { BODY_LIMIT: '64kb', ...opts.env } });
  const boot = await bootstrap(svc);
  const keys = { admin: boot.adminKey! } as Record<Role, string>;
  for (const role of ['operator', 'provisioner', 'auditor'] as const) {
    keys[role] = (await svc.apiKeys.create({ name: `${role} key`, role }, { actor: 'test' })).key;
  }
  return { svc, api: request(createHttpHandler(svc, { validateResponses: true })), keys, issuingId: boot.issuingId! };
}
