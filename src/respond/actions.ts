import { DEVICE_CREDENTIAL_ROLES, type ApiKeyService } from '../access/api-keys.js';
import type { BrokerConnectors, BrokerFanout } from '../broker/connector.js';
import type { ActorContext } from '../shared/actor.js';
import type { DeviceInventory } from '../enroll/devices.js';
import type { EnrollmentTokens } from '../enroll/tokens.js';
import { REVOCATION_REASONS, isRevocationReason, type RevocationReason } from '../revoke/reasons.js';
import type { Revocations } from '../revoke/revocation.js';
import type { SessionKeys } from '../rotate/session-keys.js';
import type { CaRollovers } from '../rotate/rollover.js';
import { DomainError, badRequest, conflict } from '../shared/errors.js';
import { serialFromBytes, type Serial } from '../shared/ids.js';
import type { IncidentKind } from '../shared/security-terms.js';
import type { Touched } from '../store/incident-store.js';
import type {
  ActionOutcome,
  ActionParams,
  ActionPlan,
  IncidentAction,
  IncidentActor,
  IncidentApproval,
  IncidentScope,
  TargetDevice,
} from './incidents.js';

/** The domain services the actions call; each audits its own changes. */
export interface ActionServices {
  revocations: Revocations;
  tokens: EnrollmentTokens;
  sessionKeys: SessionKeys;
  apiKeys: ApiKeyService;
  devices: DeviceInventory;
  brokers: BrokerConnectors;
  /** Certificates of these devices left valid beside a newer current one (what a reissue left behind). */
  replacedCertificates(deviceIds: string[]): Promise<Buffer[]>;
  /** CA-compromise recovery: the successor CA and the throttled waves that move the devices onto it. */
  rollovers: CaRollovers;
  /** Revocations that touch more certificates than this take a second person (BULK_REVOKE_APPROVAL_THRESHOLD; 0: never). */
  bulkApprovalThreshold: number;
}

/** Selector chunks for named devices: each one bulk revocation (one transaction, one statement). */
const CHUNK = 5_000;

/** The reason an incident's revocations carry unless the operator names another (RFC 5280 §5.3.1). */
const DEFAULT_REASON: Record<IncidentKind, RevocationReason> = {
  'device-compromise': 'keyCompromise',
  'lost-device': 'keyCompromise',
  'credential-leak': 'keyCompromise',
  'broker-compromise': 'keyCompromise',
  'ca-compromise': 'cACompromise',
};

const device = (id: string): Touched => ({ type: 'device', id });
const certificate = (s: Serial | Buffer): Touched => ({ type: 'certificate', id: typeof s === 'string' ? s : serialFromBytes(s) });

function chunks<T>(xs: T[], n = CHUNK): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

function reasonOf(scope: IncidentScope, params: ActionParams): RevocationReason {
  const reason = params.reason ?? DEFAULT_REASON[scope.incident.kind];
  if (!isRevocationReason(reason) || reason === 'certificateHold') {
    throw badRequest(
      `reason must be one of ${REVOCATION_REASONS.filter((r) => r !== 'certificateHold').join(', ')} (a hold is the suspend action)`,
    );
  }
  return reason;
}

function invalidityOf(params: ActionParams): Date | undefined {
  if (params.invalidityDate === undefined) return undefined;
  const d = new Date(params.invalidityDate);
  if (Number.isNaN(d.getTime())) throw badRequest('invalidityDate is not a date-time');
  return d;
}

/**
 * Revokes (or, dry, counts) every revocable certificate of the scope: its lots by lot, its other
 * devices by id in chunks. Each chunk is one bulk revocation with its own audit entries.
 */
async function revokeScope(
  s: ActionServices,
  scope: IncidentScope,
  reason: RevocationReason,
  invalidityDate: Date | undefined,
  dryRun: boolean,
  ctx: ActorContext,
): Promise<{ touched: Touched[]; count: number; alreadyRevoked: number; runs: string[] }> {
  const lots = new Set(scope.lots);
  const named = scope.devices.filter((d) => d.lot === null || !lots.has(d.lot)).map((d) => d.id);
  const selectors = [...scope.lots.map((lot) => ({ lot })), ...chunks(named).map((deviceIds) => ({ deviceIds }))];
  const touched: Touched[] = [];
  let count = 0;
  let alreadyRevoked = 0;
  const runs: string[] = [];
  for (const selector of selectors) {
    // A lot above one chunk is a run the incident shows (Incidents.get) while it goes on.
    const r = await s.revocations.revokeMany({ selector, reason, invalidityDate, dryRun, origin: `incident:${scope.incident.id}` }, ctx);
    count += r.revoked;
    alreadyRevoked += r.alreadyRevoked;
    touched.push(...r.serials.map(certificate));
    if (r.id) runs.push(r.id);
  }
  return { touched, count, alreadyRevoked, runs };
}

function needConnectors(s: ActionServices): void {
  if (!s.brokers.configured)
    throw conflict(
      'no broker connector is configured (BROKER_MQTT_URL, BROKER_WEBHOOK_URL, BROKER_RABBITMQ_URL or BROKER_NATS_USERS_FILE)',
    );
}

/**
 * Calls every connector (one failing does not stop the others) and judges the step by what they
 * report: failed when one could not be reached or did not apply an effect, unconfirmed when one
 * applied but could not confirm it.
 */
async function onBrokers(
  s: ActionServices,
  clientIds: string[],
  call: (b: BrokerConnectors) => Promise<BrokerFanout>,
): Promise<ActionOutcome> {
  needConnectors(s);
  const fan = await call(s.brokers);
  const errors = fan.failures.map((f) => `${f.connector}: ${f.error.message}`);
  const notApplied = fan.results.flatMap((r) =>
    r.effects
      .filter((e) => !e.applied)
      .map((e) => `${r.connector}: ${e.clientId} ${e.action} not applied${e.detail ? ` (${e.detail})` : ''}`),
  );
  const unconfirmed = fan.results.some((r) => r.effects.some((e) => e.applied && !e.confirmed));
  const failures = [...errors, ...notApplied];
  return {
    status: failures.length ? 'failed' : unconfirmed ? 'unconfirmed' : 'succeeded',
    touched: clientIds.map((id) => ({ type: 'broker-client', id })),
    result: { connectors: [...fan.results, ...fan.failures.map((f) => ({ connector: f.connector, error: f.error.message }))] },
    ...(failures.length ? { error: failures.slice(0, 20).join('; ') } : {}),
  };
}

const clientIdsOf = (scope: IncidentScope) => scope.devices.map((d) => d.id);
const brokersOf = (scope: IncidentScope): TargetDevice[] => scope.devices.filter((d) => d.kind === 'broker');

/** Both outcomes of two sub-steps of one action: the worse status wins, the touched lists add up. */
function combine(a: ActionOutcome, b: ActionOutcome): ActionOutcome {
  const rank = { succeeded: 0, unconfirmed: 1, failed: 2 } as const;
  const error = [a.error, b.error].filter(Boolean).join('; ');
  return {
    status: rank[a.status] >= rank[b.status] ? a.status : b.status,
    touched: [...a.touched, ...b.touched],
    touchedCount: (a.touchedCount ?? a.touched.length) + (b.touchedCount ?? b.touched.length),
    result: { ...a.result, ...b.result },
    ...(error ? { error } : {}),
  };
}

function done(plan: ActionPlan): ActionOutcome {
  return { status: 'succeeded', ...plan };
}

// ---- Respond ----------------------------------------------------------------------------------

/** A revocation bigger than the threshold takes a second person, as a bulk revocation does. */
const bulkApproval =
  (s: ActionServices) =>
  (plan: ActionPlan): IncidentApproval | null =>
    s.bulkApprovalThreshold > 0 && (plan.touchedCount ?? plan.touched.length) > s.bulkApprovalThreshold ? 'incident.action' : null;

const revokeCertificates = (s: ActionServices): IncidentAction => ({
  name: 'revoke-certificates',
  params: ['devices', 'reason', 'invalidityDate'],
  approval: bulkApproval(s),
  async plan(scope, params) {
    const r = await revokeScope(s, scope, reasonOf(scope, params), invalidityOf(params), true, { actor: 'dry-run' });
    return {
      touched: r.touched,
      touchedCount: r.count,
      result: { reason: reasonOf(scope, params), revoked: r.count, alreadyRevoked: r.alreadyRevoked },
    };
  },
  async run(scope, params, ctx) {
    const reason = reasonOf(scope, params);
    const r = await revokeScope(s, scope, reason, invalidityOf(params), false, ctx);
    return done({
      touched: r.touched,
      touchedCount: r.count,
      result: { reason, revoked: r.count, alreadyRevoked: r.alreadyRevoked, ...(r.runs.length ? { revocations: r.runs } : {}) },
    });
  },
});

/** certificateHold on every certificate of the scope: the devices are suspended until re-admitted. */
const suspend = (s: ActionServices): IncidentAction => ({
  name: 'suspend',
  params: ['devices'],
  approval: bulkApproval(s),
  async plan(scope) {
    const r = await revokeScope(s, scope, 'certificateHold', undefined, true, { actor: 'dry-run' });
    return { touched: r.touched, touchedCount: r.count, result: { held: r.count, alreadyRevoked: r.alreadyRevoked } };
  },
  async run(scope, _params, ctx) {
    const r = await revokeScope(s, scope, 'certificateHold', undefined, false, ctx);
    return done({
      touched: r.touched,
      touchedCount: r.count,
      result: { held: r.count, alreadyRevoked: r.alreadyRevoked, ...(r.runs.length ? { revocations: r.runs } : {}) },
    });
  },
});

/** Enrollment tokens of the scope's devices and lots, their session keys, and named API keys. */
const revokeCredentials = (s: ActionServices): IncidentAction => {
  const wanted = (p: ActionParams) => ({
    tokens: p.enrollmentTokens ?? true,
    keys: p.sessionKeys ?? true,
    apiKeys: [...new Set(p.apiKeyIds ?? [])],
  });
  const tokenTargets = (scope: IncidentScope) => ({ deviceIds: clientIdsOf(scope), lots: scope.lots });
  const checkApiKeys = async (ids: string[], ctx: IncidentActor) => {
    if (ids.length === 0) return;
    const known = new Set((await s.apiKeys.list()).map((k) => k.id));
    const unknown = ids.filter((id) => !known.has(id));
    if (unknown.length) throw new DomainError('NotFound', `unknown API keys: ${unknown.join(', ')}`);
    // No key of a role above the actor's, and never the last active admin key: refused before anything runs.
    await s.apiKeys.checkRevocable(ids, ctx.role);
  };
  return {
    name: 'revoke-credentials',
    params: ['devices', 'enrollmentTokens', 'sessionKeys', 'apiKeyIds'],
    async plan(scope, params, ctx) {
      const w = wanted(params);
      if (!w.tokens && !w.keys && w.apiKeys.length === 0) throw badRequest('nothing to revoke: enrollmentTokens, sessionKeys or apiKeyIds');
      await checkApiKeys(w.apiKeys, ctx);
      const tokens = w.tokens ? await s.tokens.liveFor(tokenTargets(scope)) : [];
      const keys = w.keys ? await s.sessionKeys.keysOf(clientIdsOf(scope)) : { deviceKeys: [], channels: [] };
      return {
        touched: [
          ...tokens.map((t) => ({ type: 'enrollment-token', id: t.id })),
          ...keys.deviceKeys.map((k) => ({ type: 'session-key', id: k.id })),
          ...keys.channels.map((c) => ({ type: 'channel', id: c })),
          ...w.apiKeys.map((id) => ({ type: 'api-key', id })),
        ],
        result: {
          enrollmentTokens: tokens.length,
          deviceSessionKeys: keys.deviceKeys.length,
          channelsRekeyed: keys.channels,
          apiKeys: w.apiKeys.length,
        },
      };
    },
    async run(scope, params, ctx) {
      const w = wanted(params);
      const details = { incident: scope.incident.id };
      // API keys first: a refusal (a key above the actor, the last admin key) then leaves nothing half done.
      if (w.apiKeys.length) await s.apiKeys.revokeAll(w.apiKeys, ctx);
      const tokens = w.tokens ? await s.tokens.revokeFor(tokenTargets(scope), ctx, details) : [];
      const keys = w.keys ? await s.sessionKeys.revokeDeviceKeys(clientIdsOf(scope), ctx, details) : { deviceKeys: 0, channels: [] };
      return done({
        touched: [
          ...tokens.map((id) => ({ type: 'enrollment-token', id })),
          ...keys.channels.map((c) => ({ type: 'channel', id: c })),
          ...w.apiKeys.map((id) => ({ type: 'api-key', id })),
        ],
        result: {
          enrollmentTokens: tokens.length,
          deviceSessionKeys: keys.deviceKeys,
          channelsRekeyed: keys.channels,
          apiKeys: w.apiKeys.length,
        },
      });
    },
  };
};

const brokerAction = (
  s: ActionServices,
  name: string,
  call: (b: BrokerConnectors, ids: string[], reason: string) => Promise<BrokerFanout>,
): IncidentAction => ({
  name,
  params: ['devices'],
  async plan(scope) {
    needConnectors(s);
    return {
      touched: clientIdsOf(scope).map((id) => ({ type: 'broker-client', id })),
      result: { connectors: s.brokers.list().map((c) => c.name) },
    };
  },
  async run(scope) {
    const ids = clientIdsOf(scope);
    return onBrokers(s, ids, (b) => call(b, ids, `incident ${scope.incident.id}`));
  },
});

/**
 * A compromised broker: its certificates revoked (keyCompromise: it can neither enroll nor renew
 * until re-admitted), its own client connections blocked on the other brokers, and its peers told.
 */
const quarantineBroker = (s: ActionServices): IncidentAction => ({
  name: 'quarantine-broker',
  params: ['devices', 'reason'],
  kinds: ['broker-compromise'],
  async plan(scope, params) {
    const brokers = brokersOf(scope);
    if (brokers.length === 0) throw badRequest('no broker among the targets');
    needConnectors(s);
    const r = await revokeScope(s, { ...scope, devices: brokers, lots: [] }, reasonOf(scope, params), undefined, true, {
      actor: 'dry-run',
    });
    return {
      touched: [...brokers.map((b) => device(b.id)), ...r.touched],
      result: { brokers: brokers.map((b) => b.id), certificates: r.count },
    };
  },
  async run(scope, params, ctx) {
    const brokers = brokersOf(scope);
    const ids = brokers.map((b) => b.id);
    const r = await revokeScope(s, { ...scope, devices: brokers, lots: [] }, reasonOf(scope, params), undefined, false, ctx);
    const revoked: ActionOutcome = {
      status: 'succeeded',
      touched: [...ids.map(device), ...r.touched],
      result: { brokers: ids, certificates: r.count },
    };
    const blocked = await onBrokers(s, ids, (b) => b.block(ids, `broker quarantined by incident ${scope.incident.id}`));
    const told: ActionOutcome[] = [];
    for (const id of ids) {
      told.push(
        await onBrokers(s, [], (b) => b.notify({ kind: 'broker-quarantined', subject: id, details: { incident: scope.incident.id } })),
      );
    }
    const notified = told.reduce(combine, { status: 'succeeded', touched: [] });
    return combine(combine(revoked, { ...blocked, result: { block: blocked.result } }), {
      ...notified,
      result: { notify: told.map((t) => t.result) },
    });
  },
});

// ---- Recover ----------------------------------------------------------------------------------

/** Lets devices in again: a revoked device back to registered (its tokens voided), a suspended one's hold released. */
const readmit = (s: ActionServices): IncidentAction => {
  const split = (scope: IncidentScope) => ({
    revoked: scope.devices.filter((d) => d.status === 'revoked'),
    suspended: scope.devices.filter((d) => d.status === 'suspended' && d.currentSerial),
  });
  return {
    name: 'readmit',
    params: ['devices'],
    async plan(scope) {
      const { revoked, suspended } = split(scope);
      return {
        touched: [...revoked, ...suspended].map((d) => device(d.id)),
        result: { readmitted: revoked.map((d) => d.id), released: suspended.map((d) => d.id) },
      };
    },
    async run(scope, _params, ctx) {
      const { revoked, suspended } = split(scope);
      for (const d of revoked) await s.devices.readmit(d.id, ctx);
      for (const d of suspended) await s.revocations.release(serialFromBytes(d.currentSerial!), ctx);
      return done({
        touched: [...revoked, ...suspended].map((d) => device(d.id)),
        result: { readmitted: revoked.map((d) => d.id), released: suspended.map((d) => d.id) },
      });
    },
  };
};

/**
 * A fresh one-use enrollment token per device, handed to the caller once (the timeline keeps
 * token ids only). A broker's token names the DNS names and IP addresses it may ask for.
 * A token is a device credential: a role that may not make them directly (operator) only
 * proposes the reissue; a provisioner or admin approves it and receives the tokens.
 */
const reissue = (s: ActionServices): IncidentAction => {
  const check = (scope: IncidentScope, params: ActionParams) => {
    const blocked = scope.devices.filter((d) => d.status === 'revoked' || d.status === 'suspended' || d.status === 'decommissioned');
    if (blocked.length)
      throw conflict(
        `re-admit first: ${blocked
          .slice(0, 20)
          .map((d) => `${d.id} is ${d.status}`)
          .join(', ')}`,
      );
    const brokers = brokersOf(scope);
    if (brokers.length && !(params.dnsNames?.length || params.ipAddresses?.length))
      throw badRequest('a broker is reissued with the dnsNames or ipAddresses its new certificate may carry');
    if (scope.devices.length === 0) throw badRequest('no devices to reissue to');
  };
  return {
    name: 'reissue',
    params: ['devices', 'expiresInSeconds', 'dnsNames', 'ipAddresses'],
    approval: (_plan, ctx) => (DEVICE_CREDENTIAL_ROLES.includes(ctx.role) ? null : 'incident.reissue'),
    async plan(scope, params) {
      check(scope, params);
      return { touched: scope.devices.map((d) => device(d.id)), result: { tokens: scope.devices.length } };
    },
    async run(scope, params, ctx) {
      const issued: { deviceId: string; tokenId: string; token: string; expiresAt: string }[] = [];
      for (const d of scope.devices) {
        const broker = d.kind === 'broker';
        const t = await s.tokens.create(
          {
            deviceId: d.id,
            maxUses: 1,
            name: `reissue for incident ${scope.incident.id}`,
            expiresInSeconds: params.expiresInSeconds,
            ...(broker ? { dnsNames: params.dnsNames, ipAddresses: params.ipAddresses } : {}),
          },
          ctx,
        );
        issued.push({ deviceId: d.id, tokenId: t.id, token: t.token, expiresAt: t.expiresAt });
      }
      return {
        status: 'succeeded',
        touched: issued.map((t) => ({ type: 'enrollment-token', id: t.tokenId })),
        result: { tokens: issued.map(({ deviceId, tokenId, expiresAt }) => ({ deviceId, tokenId, expiresAt })) },
        secrets: { tokens: issued },
      };
    },
  };
};

/** After a reissue: the old certificates still valid beside a device's newer one are revoked as superseded. */
const supersedeReplaced = (s: ActionServices): IncidentAction => {
  const replaced = (scope: IncidentScope) => s.replacedCertificates(clientIdsOf(scope));
  return {
    name: 'supersede-replaced',
    params: ['devices'],
    async plan(scope) {
      return { touched: (await replaced(scope)).map(certificate) };
    },
    async run(scope, _params, ctx) {
      const serials = await replaced(scope);
      let revoked = 0;
      for (const part of chunks(serials))
        revoked += (await s.revocations.revokeMany({ selector: { serials: part }, reason: 'superseded' }, ctx)).revoked;
      return done({ touched: serials.map(certificate), result: { revoked } });
    },
  };
};

/** A quarantined broker back in service: re-admitted, unblocked on the other brokers, its peers told. */
const restoreBroker = (s: ActionServices): IncidentAction => {
  const inner = readmit(s);
  return {
    name: 'restore-broker',
    params: ['devices'],
    kinds: ['broker-compromise'],
    async plan(scope, _params, ctx) {
      const brokers = brokersOf(scope);
      if (brokers.length === 0) throw badRequest('no broker among the targets');
      needConnectors(s);
      return inner.plan({ ...scope, devices: brokers, lots: [] }, {}, ctx);
    },
    async run(scope, _params, ctx) {
      const brokers = brokersOf(scope);
      const ids = brokers.map((b) => b.id);
      const back = await inner.run({ ...scope, devices: brokers, lots: [] }, {}, ctx);
      const unblocked = await onBrokers(s, ids, (b) => b.unblock(ids, `broker restored by incident ${scope.incident.id}`));
      const told: ActionOutcome[] = [];
      for (const id of ids)
        told.push(
          await onBrokers(s, [], (b) => b.notify({ kind: 'broker-restored', subject: id, details: { incident: scope.incident.id } })),
        );
      const notified = told.reduce(combine, { status: 'succeeded', touched: [] });
      return combine(combine(back, { ...unblocked, result: { unblock: unblocked.result } }), {
        ...notified,
        result: { notify: told.map((t) => t.result) },
      });
    },
  };
};

/** New channel keys now (the old ones revoked at once): the named channels, else every channel of the scope's devices. */
const rotateChannelKeys = (s: ActionServices): IncidentAction => {
  const channels = async (scope: IncidentScope, params: ActionParams) => {
    const names = params.channels?.length
      ? [...new Set(params.channels)].sort()
      : (await s.sessionKeys.keysOf(clientIdsOf(scope))).channels;
    for (const n of names) await s.sessionKeys.getChannel(n); // NotFound for an unknown one
    if (names.length === 0) throw badRequest('no channels: name them (channels) or target their members');
    return names;
  };
  return {
    name: 'rotate-channel-keys',
    params: ['devices', 'channels'],
    async plan(scope, params) {
      return { touched: (await channels(scope, params)).map((c) => ({ type: 'channel', id: c })) };
    },
    async run(scope, params, ctx) {
      const names = await channels(scope, params);
      const keys = [];
      for (const n of names) keys.push(await s.sessionKeys.rotateChannel(n, { immediate: true }, ctx));
      return done({
        touched: names.map((c) => ({ type: 'channel', id: c })),
        result: { versions: keys.map((k) => ({ channel: k.owner, version: k.version })) },
      });
    },
  };
};

/**
 * CA-compromise recovery (two admins): a successor CA under the same parent becomes the default
 * issuer, the compromised CA is revoked (cACompromise) on its parent's CRL and OCSP and signs
 * nothing more, and its devices are moved onto the successor in throttled waves of renewal
 * notices (the rollover, whose progress the incident shows). A device renews with its current
 * certificate, which must match the one recorded here byte for byte: certificates forged with
 * the stolen key are refused.
 */
const recoverCa = (s: ActionServices): IncidentAction => {
  const caOf = (scope: IncidentScope) => {
    if (!scope.caId) throw badRequest('the incident names no CA');
    return scope.caId;
  };
  const waves = (p: ActionParams) => ({ waveSize: p.waveSize ?? 500, waveIntervalSeconds: p.waveIntervalSeconds ?? 300 });
  return {
    name: 'recover-ca',
    params: ['waveSize', 'waveIntervalSeconds'],
    kinds: ['ca-compromise'],
    approval: () => 'incident.ca-recovery',
    async plan(scope) {
      const caId = caOf(scope);
      const affected = await s.revocations.revokeMany({ selector: { caId }, reason: 'cACompromise', dryRun: true }, { actor: 'dry-run' });
      return {
        touched: [{ type: 'ca', id: caId }, ...affected.serials.map(certificate)],
        touchedCount: 1 + affected.revoked,
        result: { ca: caId, validCertificates: affected.revoked },
      };
    },
    async run(scope, params, ctx) {
      const caId = caOf(scope);
      const { rollover, successor } = await s.rollovers.start(caId, waves(params), ctx);
      const revoked = await s.revocations.revokeCa(caId, { reason: 'cACompromise' }, ctx);
      return done({
        touched: [
          { type: 'ca', id: caId },
          { type: 'ca', id: successor.id },
        ],
        result: {
          ca: caId,
          successor: successor.id,
          rollover: rollover.id,
          revokedSerial: serialFromBytes(revoked.certificate.serial),
          ...waves(params),
        },
      });
    },
  };
};

/** Every Respond and Recover action, in the order an operator usually needs them. */
export function incidentActions(s: ActionServices): IncidentAction[] {
  return [
    revokeCertificates(s),
    suspend(s),
    revokeCredentials(s),
    brokerAction(s, 'disconnect', (b, ids, why) => b.disconnect(ids, why)),
    brokerAction(s, 'block', (b, ids, why) => b.block(ids, why)),
    quarantineBroker(s),
    readmit(s),
    brokerAction(s, 'unblock', (b, ids, why) => b.unblock(ids, why)),
    reissue(s),
    supersedeReplaced(s),
    restoreBroker(s),
    rotateChannelKeys(s),
    recoverCa(s),
  ];
}
