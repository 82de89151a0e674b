import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Service } from './main.js';
import type { ActorContext } from './shared/actor.js';

export interface BootstrapResult {
  created: boolean;
  rootId?: string;
  issuingId?: string;
  ocspResponderSerial?: string;
  /** Only when a new admin key was generated: the plaintext, to show once. */
  adminKey?: string;
  adminKeyFile?: string;
}

const SYSTEM: ActorContext = { actor: 'system:bootstrap' };
const ROOT_NAME = 'mqtt-ca Root CA';
const ISSUING_NAME = 'mqtt-ca Issuing CA 1';

/**
 * First start: when the store has no CA, make a usable one — a P-384 root, a P-256 issuing CA
 * (the default issuer), its OCSP responder certificate — and an admin API key.
 */
export async function bootstrap(svc: Service): Promise<BootstrapResult> {
  const result: BootstrapResult = { created: false };
  // Each step checks whether it already happened, so a start interrupted half-way resumes cleanly.
  const cas = await svc.hierarchy.list();
  if (cas.length === 0 || !cas.some((c) => c.isDefaultIssuer)) {
    if (cas.some((c) => c.kind === 'root') && !cas.some((c) => c.name === ROOT_NAME)) return finishAdmin(svc, result);
    const root =
      cas.find((c) => c.name === ROOT_NAME && c.kind === 'root') ??
      (await svc.hierarchy.createRoot(
        { name: ROOT_NAME, subject: { commonName: ROOT_NAME, organization: 'mqtt-ca' }, keyAlgorithm: 'EC-P384', pathLen: 1 },
        SYSTEM,
      ));
    const issuing =
      cas.find((c) => c.name === ISSUING_NAME && c.parentId === root.id) ??
      (await svc.hierarchy.createIntermediate(
        {
          name: ISSUING_NAME,
          subject: { commonName: ISSUING_NAME, organization: 'mqtt-ca' },
          parentId: root.id,
          keyAlgorithm: 'EC-P256',
          pathLen: 0,
        },
        SYSTEM,
      ));
    await svc.hierarchy.setDefaultIssuer(issuing.id, SYSTEM);
    Object.assign(result, { created: true, rootId: root.id, issuingId: issuing.id });
  }
  // Every signing CA's delegated OCSP responder, so the first poll does not wait for one.
  const issuingId = (await svc.hierarchy.defaultIssuerId())!;
  const responders = await svc.ocspResponders.ensureAll();
  result.ocspResponderSerial = responders.find((r) => r.caId === issuingId)?.serial;
  return finishAdmin(svc, result);
}

async function finishAdmin(svc: Service, result: BootstrapResult): Promise<BootstrapResult> {
  if (svc.config.adminApiKey) {
    const k = await svc.apiKeys.ensureKey(svc.config.adminApiKey, 'admin', 'ADMIN_API_KEY', SYSTEM);
    if (k.revoked) svc.logger.warn({ keyId: k.id }, 'ADMIN_API_KEY was revoked and stays revoked: configure a different key');
  } else if (!(await svc.apiKeys.list()).some((k) => k.role === 'admin' && !k.revokedAt)) {
    const key = await svc.apiKeys.create({ name: 'initial admin', role: 'admin' }, SYSTEM);
    mkdirSync(svc.config.dataDir, { recursive: true, mode: 0o700 });
    const file = join(svc.config.dataDir, 'admin-api-key');
    writeFileSync(file, key.key + '\n', { mode: 0o600 });
    chmodSync(file, 0o600);
    result.adminKey = key.key;
    result.adminKeyFile = file;
  }
  return result;
}
