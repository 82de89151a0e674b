import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { createListener, keepTlsContextFresh } from './http/listener.js';
import { pino, type Logger } from 'pino';
import { ApiKeyService } from './access/api-keys.js';
import { ConsoleSessions } from './access/console-sessions.js';
import { AuditLog } from './audit/audit-log.js';
import { AuditCheckpoints, startAuditAnchor } from './audit/audit-anchor.js';
import { auditLogLine } from './audit/log-lines.js';
import { safeErrorSerializer } from './shared/log-redaction.js';
import { CertificateRegistry } from './ca/certificates.js';
import { Revocations, type RevocationListener } from './revoke/revocation.js';
import { DeviceRetirement } from './revoke/device-retirement.js';
import { CrlPublisher } from './revoke/crl-publisher.js';
import { CrlStore } from './store/crl-store.js';
import { CrlWatch, type CrlStatus } from './revoke/crl-watch.js';
import { ServiceMetrics } from './detect/metrics.js';
import { RevocationHealthReport } from './revoke/revocation-health.js';
import { OcspResponder } from './revoke/ocsp-responder.js';
import { OcspCheck } from './revoke/ocsp-check.js';
import { OcspResponders } from './revoke/ocsp-responders.js';
import { OcspStore } from './store/ocsp-store.js';
import { followReplicaRevocations } from './revoke/ocsp-feed.js';
import { CaHierarchy } from './ca/hierarchy.js';
import { Issuance } from './ca/issuance.js';
import { bindKek, deriveKey, openStoreKek } from './ca/kek.js';
import { KeyVault } from './ca/key-vault.js';
import { PkiUrls } from './ca/urls.js';
import type { Config } from './config/config.js';
import { OperatorIssuance } from './enroll/operator-issuance.js';
import { DeviceInventory } from './enroll/devices.js';
import { DeviceStore } from './store/device-store.js';
import { Enrollment } from './enroll/enrollment.js';
import { Idempotency, inFlightLease } from './enroll/idempotency.js';
import { AbandonedAttempts } from './enroll/abandoned-attempts.js';
import type { DeviceDirectory } from './enroll/methods.js';
import { RenewalEnrollment } from './enroll/renewal-method.js';
import { DeviceCertificateAuthenticator } from './enroll/device-certificate-auth.js';
import { OperatorEnrollment } from './enroll/operator-method.js';
import { ServerKeygen } from './enroll/server-keygen.js';
import { TokenEnrollment } from './enroll/token-method.js';
import { EnrollmentTokens } from './enroll/tokens.js';
import { SourceBlocks } from './detect/source-blocks.js';
import { AutomaticResponses } from './detect/responses.js';
import { DetectionResponsePorts } from './detect/response-ports.js';
import { ApiKeyWatch } from './detect/api-key-watch.js';
import { EventFeed } from './detect/event-feed.js';
import { RevokedQueryWatch } from './detect/revoked-queries.js';
import { ApiKeyAddressStore } from './store/api-key-address-store.js';
import { RateLimits } from './detect/rate-limits.js';
import { rateLimiterFor } from './detect/rate-limit-redis.js';
import { Posture } from './detect/posture.js';
import { PostureStore } from './store/posture-store.js';
import { PresenceRecorder } from './detect/bus-presence.js';
import { BusPresenceReads } from './detect/bus-presence-reads.js';
import { BusPresenceStore } from './store/bus-presence-store.js';
import { measureStorageLayout } from './detect/storage-layout.js';
import { SecurityEvents, securityEventLogLine } from './detect/security-events.js';
import { DeviceEnrollmentStore } from './store/device-enrollment-store.js';
import { DeviceActivation } from './enroll/device-activation.js';
import { IdempotencyStore } from './store/idempotency-store.js';
import { ReplayStore } from './store/replay-store.js';
import { SecurityEventStore } from './store/security-event-store.js';
import { TokenStore } from './store/token-store.js';
import { createApp } from './http/app.js';
import { AuditChainVerifier } from './respond/audit-verification.js';
import { createEnrollHandler } from './http/enroll-handler.js';
import { createPkiHandler } from './http/pki/handler.js';
import { resolveClientAddress } from './http/request-context.js';
import { TrustedProxies } from './shared/trusted-proxies.js';
import { systemClock, type Clock } from './shared/clock.js';
import { ApiKeyStore } from './store/api-key-store.js';
import { ConsoleSessionStore } from './store/console-session-store.js';
import { AuditStore } from './store/audit-store.js';
import { CaStore } from './store/ca-store.js';
import { CertificateStore } from './store/certificate-store.js';
import { BulkRevocationStore } from './store/bulk-revocation-store.js';
import { connectionSettings, createDb, migrateLatest, pgliteDirUnder, pingDb, type Db } from './store/db.js';
import { KeyMaterialStore, SettingsStore } from './store/key-store.js';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { DEFAULT_RENEW_AT_FRACTION, RotationPolicies, type NoticeSink } from './rotate/policies.js';
import { RotationPolicyStore } from './store/rotation-policy-store.js';
import { Renewals, type NoticeSender } from './rotate/renewals.js';
import { RenewalStore } from './store/renewal-store.js';
import { ExpirySweeps } from './rotate/expiry.js';
import { ExpiryStore } from './store/expiry-store.js';
import { MqttPublisher } from './broker/mqtt-publisher.js';
import { MqttNoticeSender, WebhookNoticeSender } from './broker/notice-senders.js';
import { SignedWebhook } from './broker/webhook.js';
import type { JobRunner, JobsOverview, NewJob } from './jobs/runner.js';
import { LocalJobRunner } from './jobs/local-runner.js';
import { BullMqJobRunner } from './jobs/bullmq-runner.js';
import { queueDefinitions } from './jobs/queues.js';
import { scheduledTasks } from './jobs/scheduled.js';
import { CaRollovers } from './rotate/rollover.js';
import { RolloverStore } from './store/rollover-store.js';
import { SessionKeys } from './rotate/session-keys.js';
import { StagedCredentials } from './rotate/staged-credentials.js';
import { StagedCredentialStore } from './store/staged-credential-store.js';
import { CurrentDeviceAuth } from './rotate/device-auth.js';
import { SessionKeyStore } from './store/session-key-store.js';
import { INCIDENT_APPROVALS, Incidents, type IncidentApproval } from './respond/incidents.js';
import { incidentActions } from './respond/actions.js';
import { IncidentStore } from './store/incident-store.js';
import { BrokerConnectors, type BrokerConnector } from './broker/connector.js';
import { MosquittoDynsecConnector } from './broker/mosquitto-dynsec.js';
import { WebhookBrokerConnector } from './broker/webhook-connector.js';
import { RabbitMqConnector } from './broker/rabbitmq-connector.js';
import { NatsConnector } from './broker/nats-connector.js';
import { deviceUri } from './ca/profiles.js';
import { brokerConnectorSpec, ServiceIdentities, tlsServerSpec } from './rotate/service-identities.js';
import { readFileSync } from 'node:fs';
import { Approvals } from './respond/approvals.js';
import { ApprovalStore } from './store/approval-store.js';
import { BULK_REVOKE, BulkRevocationGate, bulkRevocationExecutor, CA_REVOKE, caRevocationExecutor } from './respond/gated-actions.js';
import { Backups } from './respond/backups.js';
import { ReservedIdentities } from './enroll/reserved-identities.js';
import { BackupStore } from './store/backup-store.js';
import { WebhookBusEventSource } from './broker/webhook-bus-source.js';
import { BusEventIngestion } from './detect/bus-event-ingestion.js';
import { BusWatch } from './detect/bus-watch.js';
import { BusDetectors } from './detect/bus-detectors.js';
import { describedWatchRules } from './detect/bus-posture.js';
import { isWatchRule } from './shared/detection-rules.js';
import { WatchGapBook } from './detect/bus-watch-gaps.js';
import { BusWatchGapStore } from './store/bus-watch-gap-store.js';
import type { BusEventSource } from './broker/bus-events.js';
import { MosquittoLogSource } from './broker/mosquitto-log-source.js';
import { MosquittoLogFileSource } from './broker/mosquitto-log-file-source.js';

/** The composition root: the only place that builds the database, keys, services and servers. */
export interface Service {
  config: Config;
  logger: Logger;
  clock: Clock;
  db: Db;
  settings: SettingsStore;
  audit: AuditLog;
  /** Signs and checks the checkpoints of the audit chain's head kept outside the database (the anchor file, the log stream, backups). */
  auditCheckpoints: AuditCheckpoints;
  /** GET /v1/audit/verification: the chain's verification, walking only new entries between whole walks. */
  auditVerifier: AuditChainVerifier;
  apiKeys: ApiKeyService;
  /** Web console sessions: an API key exchanged for a cookie and a CSRF token. */
  consoleSessions: ConsoleSessions;
  vault: KeyVault;
  hierarchy: CaHierarchy;
  issuance: Issuance;
  certificates: CertificateRegistry;
  operatorIssuance: OperatorIssuance;
  securityEvents: SecurityEvents;
  /** Security events as they are committed, for GET /v1/events/stream. */
  eventFeed: EventFeed;
  apiKeyWatch: ApiKeyWatch;
  /** The detection rules' counts and automatic responses (blocked sources, held devices, incidents). */
  responses: AutomaticResponses;
  /** Rate limits per address and API key (API) and per address (enrollment). */
  limits: RateLimits;
  /** The deployment against the MQTT cybersecurity framework: Current and Target Profile, gaps. */
  posture: Posture;
  tokens: EnrollmentTokens;
  enrollment: Enrollment;
  serverKeygen: ServerKeygen;
  devices: DeviceInventory;
  /**
   * Presence on the bus, written: a BusObserver for the bus watch (observe() coalesces, a flush every
   * BUS_PRESENCE_FLUSH_MS writes one statement). stop() flushes it.
   */
  presence: PresenceRecorder;
  /** Presence on the bus, read: GET /v1/devices/{id}, the device list's filters, GET /v1/bus/map, silent devices. */
  busPresence: BusPresenceReads;
  revocations: Revocations;
  crls: CrlPublisher;
  /** Replaces due CRLs and raises the stale-CRL alarm; serve runs its check every minute. */
  crlWatch: CrlWatch;
  metrics: ServiceMetrics;
  /** The revocation health page's report: CRLs per CA and partition, OCSP answers, revoke-to-visible latency. */
  revocationHealth: RevocationHealthReport;
  ocsp: OcspResponder;
  ocspResponders: OcspResponders;
  policies: RotationPolicies;
  renewals: Renewals;
  sweeps: ExpirySweeps;
  /** The job queues (BullMQ with REDIS_URL, else in-process); workers run once start() is called. */
  jobs: JobRunner;
  /** Per-device and per-channel session keys; the scheduler calls sessionKeys.rotateDue(). */
  sessionKeys: SessionKeys;
  /** Successors of server-generated keys, staged for pickup. */
  staged: StagedCredentials;
  /** Issuing-CA rollovers; the scheduler (rollover-waves) calls rollovers.tick(). */
  rollovers: CaRollovers;
  /** The broker connectors (BROKER_MQTT_URL, BROKER_WEBHOOK_URL); none connects before its first use. */
  brokers: BrokerConnectors;
  /**
   * Other brokers' event sources, one per broker id of BUS_EVENT_SECRETS (empty when unset): fed by
   * POST /v1/bus-events; the bus watch start()s them like any BusEventSource. Until one is started,
   * batches for its broker are answered 503 (the relay keeps and retries them).
   */
  busEventWebhooks: Map<string, WebhookBusEventSource>;
  /** POST /v1/bus-events: signature, replay guard, envelope; hands each batch to its broker's source. */
  busEventIngestion: BusEventIngestion;
  /** Incidents and their Respond/Recover actions. */
  incidents: Incidents;
  /** The two-person rule: register an executor per action, then propose/approve (the scheduler calls approvals.expireDue()). */
  approvals: Approvals;
  /** POST /v1/revocations: bulk revocations above BULK_REVOKE_APPROVAL_THRESHOLD become proposals. */
  bulkRevocations: BulkRevocationGate;
  /** Backups (BACKUP_DIR); the scheduler runs backups.create() every BACKUP_EVERY_HOURS, then prunes to BACKUP_KEEP. */
  backups: Backups;
  /** Idempotency-Key on the API's state-changing routes (src/http/idempotent-routes.ts), scoped by API key. */
  apiIdempotency: Idempotency;
  /** The service's own certificates (TLS listener, broker connector); renewed by the service-identity-renewal job. */
  identities: ServiceIdentities;
  /**
   * The bus watch (BUS_WATCH): its sources (the Mosquitto connector's $SYS log, BUS_WATCH_LOG_FILE)
   * are started by `busWatch.start()` (serve does, after it listens); observers (presence,
   * detectors) plug in with `busWatch.addObserver`. With BUS_WATCH off it has no sources.
   */
  busWatch: BusWatch;
  /** The bus watch's detectors (one of its observers, with presence): their stats(), settled(). */
  busDetectors: BusDetectors;
  /** Stops background connections (the OCSP change feed) and leaves the database open. */
  stop(): Promise<void>;
  /** stop(), then closes the database. */
  close(): Promise<void>;
}

/**
 * The service's log stream (JSON lines on stdout, or `destination`): request lines, errors, and
 * every audit entry, security event and audit checkpoint (`kind`), secrets redacted.
 */
export function createLogger(level: Config['logLevel'], destination?: NodeJS.WritableStream): Logger {
  const options = {
    level,
    base: { service: 'mqtt-ca' },
    // Errors lose the values bound to their SQL (a token's hash) and secret-named fields.
    serializers: { err: safeErrorSerializer },
    redact: {
      paths: [
        'authorization',
        'headers.authorization',
        'req.headers.authorization',
        'headers.cookie',
        'req.headers.cookie',
        'key',
        'token',
        'password',
        'secret',
        'apiKey',
        'adminKey',
        'kek',
        '*.key',
        '*.token',
        '*.password',
        '*.secret',
        '*.apiKey',
        '*.adminKey',
        '*.kek',
      ],
      censor: '[redacted]',
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * Builds the service in dependency order, top to bottom: the store and its KEK, the audit log, the
 * authority (hierarchy, issuance), detection's event log and limits, registration's parts,
 * revocation (CRL, OCSP), the two-person rule and incidents, detection's responses, enrollment,
 * rotation and the job queues. The rules live in their rooms; this only wires them. Two
 * references point forward, each read only once the service runs: the metrics read the CRL watch
 * and the job runner at scrape time, and the jobs enqueue through the runner built from them.
 */
export async function buildService(config: Config, opts: { logger?: Logger; clock?: Clock; db?: Db } = {}): Promise<Service> {
  const logger = opts.logger ?? createLogger(config.logLevel);
  const clock = opts.clock ?? systemClock;
  const db =
    opts.db ?? createDb({ databaseUrl: config.databaseUrl, pgliteDir: config.databaseUrl ? undefined : pgliteDirUnder(config.dataDir) });
  try {
    // The store, its key-encryption key and the audit log.
    await migrateLatest(db);
    const settings = new SettingsStore();
    const keys = new KeyMaterialStore();

    const { kek, origin, bound } = await openStoreKek(db, config, settings, keys, (path) =>
      logger.warn({ path }, 'created a new key-encryption key (KEK); back it up: without it the CA keys cannot be opened'),
    );
    const audit = new AuditLog(new AuditStore(db), deriveKey(kek, 'audit chain'), clock);
    const auditCheckpoints = new AuditCheckpoints(deriveKey(kek, 'audit anchor'));
    const anchor = await startAuditAnchor(
      auditCheckpoints,
      { head: () => audit.head(db), hashAt: (seq) => audit.hashAt(db, seq) },
      { path: config.audit.anchorFile, batchMs: config.audit.anchorBatchMs, clock, logger },
    );
    // Every audit entry goes to the log stream and moves the anchor on.
    audit.onCommitted((rows) => {
      if (logger.isLevelEnabled('info')) for (const r of rows) logger.info(auditLogLine(r), 'audit');
      const last = rows[rows.length - 1];
      if (last) anchor.committed({ seq: last.seq, hash: last.hash });
    });
    if (!bound) await bindKek(db, settings, audit, kek);

    // The authority, and the service's own certificates.
    const apiKeys = new ApiKeyService(db, new ApiKeyStore(), audit, clock);
    const consoleSessions = new ConsoleSessions(db, new ConsoleSessionStore(), apiKeys, audit, clock, config.consoleSessions);
    const vault = new KeyVault(kek, keys, clock);
    const urls = new PkiUrls(config.publicUrl);
    const certificateStore = new CertificateStore();
    const hierarchy = new CaHierarchy(db, new CaStore(), certificateStore, settings, vault, audit, urls, clock);
    await hierarchy.checkKeys();
    const deviceStore = new DeviceEnrollmentStore();
    const devices: DeviceDirectory = { deviceFacts: (ex, id) => deviceStore.facts(ex, id) };
    // Read at scrape time only, once the service is built.
    const metrics: ServiceMetrics = new ServiceMetrics({
      clock,
      crls: (): readonly CrlStatus[] => crlWatch.status(),
      jobs: (): Promise<JobsOverview> => jobs.overview({ limit: 1 }),
    });
    const issuance = new Issuance(db, hierarchy, certificateStore, audit, urls, clock, {
      telemetry: metrics,
      listener: new DeviceActivation(deviceStore, clock),
      crlShards: config.crlShards,
    });
    const certificates = new CertificateRegistry(db, certificateStore);
    const brokerCaFile = config.brokers.mqtt?.caFile;
    const identities = new ServiceIdentities(
      { db, settings, vault, issuance, certificates, hierarchy, audit, clock },
      {
        'tls-server': tlsServerSpec(config.publicUrl),
        'broker-connector': brokerConnectorSpec(
          config.brokers.clientCn,
          brokerCaFile ? () => [readFileSync(brokerCaFile, 'utf8')] : undefined,
        ),
      },
    );
    // Detection's event log and the rate limits.
    const securityEvents = new SecurityEvents(db, new SecurityEventStore(), audit, clock, metrics);
    securityEvents.listen((events) => {
      for (const e of events)
        logger[e.severity === 'critical' ? 'error' : e.severity === 'warning' ? 'warn' : 'info'](securityEventLogLine(e), 'security event');
    });
    const onDetectError = (e: unknown) => logger.error({ err: e }, 'detection error');
    const rateLimiter = rateLimiterFor(config.redisUrl, config.jobs.prefix, (e, message) => logger.warn({ err: e }, message));
    const limits = new RateLimits(rateLimiter.limiter, config.rateLimits, metrics);
    // Registration's parts: tokens, device certificates, rotation policies, rollovers, the inventory.
    const abandoned = new AbandonedAttempts(db, certificateStore, issuance, clock, config.enrollRecoveryMs);
    // The service's own names (connector, TLS host, OCSP responders): no device, token or request may take one.
    const reserved = ReservedIdentities.of({ brokerClientCn: config.brokers.clientCn, publicUrl: config.publicUrl });
    const tokens = new EnrollmentTokens(db, new TokenStore(), devices, audit, clock, { abandoned, reserved });
    const deviceCertificates = new DeviceCertificateAuthenticator(db, certificateStore, new ReplayStore(), clock);
    const notices = config.renewalNotices;
    const sinks: NoticeSink[] = [...(notices.mqtt ? (['mqtt'] as const) : []), ...(notices.webhook ? (['webhook'] as const) : [])];
    const policies = new RotationPolicies(db, new RotationPolicyStore(), audit, clock, {
      sessionKeyPeriodHours: config.sessionKeyPeriodMs / 3_600_000,
      sessionKeyOverlapHours: config.sessionKeyOverlapMs / 3_600_000,
      sinks,
    });
    // Renewal batches of one delivery job: the same for planned notices and rollover waves.
    const noticeBatchSize = 500;
    const rollovers = new CaRollovers(db, new RolloverStore(), hierarchy, audit, clock, { sinks, batchSize: noticeBatchSize });
    const graceDays = async (profile: string, lot: string | null) => (await policies.effective(profile, lot)).graceDays;
    const deviceInventory = new DeviceInventory(db, new DeviceStore(), audit, clock, securityEvents, new TokenStore(), reserved);
    // Presence on the bus: written in batches from the bus watch's events, read by the API and the detectors.
    const busPresenceStore = new BusPresenceStore();
    const presence = new PresenceRecorder(db, busPresenceStore, {
      flushMs: config.busPresence.flushMs,
      maxPending: config.busPresence.maxPending,
      clock,
      onError: (e) => logger.warn({ err: e }, 'bus presence not written; retrying'),
    });
    const busPresence = new BusPresenceReads(db, busPresenceStore, clock);
    // Revocation: CRLs, OCSP, and what follows a revocation (session keys).
    const crlRefreshBeforeMs = (config.crlValidityMs * 3) / 4;
    const crls = new CrlPublisher(
      db,
      new CrlStore(),
      hierarchy,
      urls,
      audit,
      clock,
      {
        validityMs: config.crlValidityMs,
        refreshBeforeMs: crlRefreshBeforeMs,
        deltaMaxEntries: config.crlDeltaMaxEntries,
        shards: config.crlShards,
      },
      (err, caId) => logger.error({ err, caId }, 'full CRL rebuild failed; the previous CRL is served'),
    );
    // Stale: due and not replaced (a warning); critical once less than a quarter of its validity is left.
    const crlWatch = new CrlWatch(crls, securityEvents, clock, {
      refreshBeforeMs: crlRefreshBeforeMs,
      criticalBeforeMs: config.crlValidityMs / 4,
    });
    const ocspResponders = new OcspResponders(db, hierarchy, settings, vault, issuance, certificateStore, audit, clock, {
      lifetimeDays: config.ocspResponderDays,
      responseValidityMs: Math.max(config.ocspValidityMs, config.ocspBrokerValidityMs),
    });
    const revokedQueries = new RevokedQueryWatch(
      securityEvents,
      async (serial) => {
        const row = await certificateStore.get(db, serial);
        return row && { deviceId: row.deviceId, reason: row.revocationReason };
      },
      onDetectError,
    );
    const feedConnection = connectionSettings(db);
    const replicas = feedConnection !== undefined;
    const ocsp = new OcspResponder(
      db,
      new OcspStore(),
      hierarchy,
      ocspResponders,
      clock,
      {
        validityMs: config.ocspValidityMs,
        validityByProfile: { broker: config.ocspBrokerValidityMs },
        cacheEntries: config.ocspCacheEntries,
        notifyReplicas: replicas,
      },
      (e) => logger.error({ err: e }, 'OCSP responder error'),
      metrics,
      (serials, requester) => revokedQueries.queried(serials, requester),
    );
    const feed = feedConnection ? followReplicaRevocations(ocsp, feedConnection, logger) : undefined;
    const sessionKeyStore = new SessionKeyStore();
    const sessionKeyPeriod = { periodMs: config.sessionKeyPeriodMs, overlapMs: config.sessionKeyOverlapMs };
    const sessionKeys = new SessionKeys(
      db,
      sessionKeyStore,
      kek,
      new CurrentDeviceAuth(db, deviceCertificates, sessionKeyStore, clock),
      audit,
      clock,
      policies, // per profile, overridable per lot
      sessionKeyPeriod,
    );
    // Session keys follow inside the revoking transaction: a revoked member's channels are re-keyed with it.
    // The bus detectors act through revocations, so they are built later; they hear of changes through this.
    const standings: RevocationListener & { detectors?: BusDetectors } = {
      onRevocationChanged: async () => standings.detectors?.forgetStandings(),
    };
    // Brokers that check no revocation themselves (NATS 2.9) keep an allowlist: a revocation rewrites it at once.
    const brokerAllowlists: RevocationListener = {
      onRevocationChanged: async () => {
        for (const c of brokers.list()) if (c instanceof NatsConnector) await c.onRevocationChanged();
      },
    };
    const revocations = new Revocations(
      db,
      certificateStore,
      deviceInventory,
      audit,
      clock,
      [ocsp, crls, sessionKeys, standings, brokerAllowlists],
      hierarchy,
      metrics,
      {
        store: new BulkRevocationStore(),
        chunkSize: config.approvals.bulkRevokeChunkSize,
        leaseMs: config.jobs.lockMs,
        owner: `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`,
      },
    );

    // Two-person rule: the dangerous actions run only once a second person approved them.
    const approvals = new Approvals(db, new ApprovalStore(), audit, clock, {
      ttlMs: config.approvals.ttlMs,
      lineage: apiKeys,
      onInternalError: (e, id) => logger.error({ err: e, approval: id }, 'approved action failed'),
    });
    approvals.register(CA_REVOKE, caRevocationExecutor(revocations, hierarchy));
    approvals.register(BULK_REVOKE, bulkRevocationExecutor(revocations));
    const bulkRevocations = new BulkRevocationGate(revocations, approvals, clock, config.approvals.bulkRevokeThreshold);

    // Incidents and their actions (through the broker connectors).
    const brokers = new BrokerConnectors(
      brokerConnectors(config, identities, {
        identity: deviceUri,
        activeDevices: () => certificateStore.activeDeviceIds(db, clock.now()),
        onError: (e) => logger.error({ err: e }, 'NATS connector'),
      }),
    );
    // Other brokers' events, posted signed to POST /v1/bus-events (the replay guard is the one signed renewals use).
    const busEventWebhooks = new Map(
      config.busEventBrokers.map((b) => [b.id, new WebhookBusEventSource({ broker: b.id, reports: b.reports, now: () => clock.now() })]),
    );
    const replayStore = new ReplayStore();
    const busEventIngestion = new BusEventIngestion({
      secrets: new Map(config.busEventBrokers.map((b) => [b.id, b.secret])),
      sources: busEventWebhooks,
      replay: { useOnce: (digest, expiresAt) => replayStore.useOnce(db, digest, expiresAt), purge: (now) => replayStore.purge(db, now) },
      clock,
      onError: onDetectError,
    });
    const incidentStore = new IncidentStore();
    const incidents = new Incidents(
      db,
      incidentStore,
      {
        devices: (ids) => incidentStore.devices(db, ids),
        devicesInLots: (lots) => incidentStore.devicesInLots(db, lots),
        existingLots: (lots) => incidentStore.existingLots(db, lots),
        caExists: async (id) => (await hierarchy.list()).some((c) => c.id === id),
      },
      audit,
      clock,
      incidentActions({
        revocations,
        tokens,
        sessionKeys,
        apiKeys,
        devices: deviceInventory,
        brokers,
        rollovers,
        replacedCertificates: (ids) => incidentStore.replacedCertificates(db, ids, clock.now()),
        bulkApprovalThreshold: config.approvals.bulkRevokeThreshold,
      }),
      approvals,
      rollovers,
      { ofIncident: (id) => revocations.bulkRunsOf(`incident:${id}`) },
    );
    for (const approval of Object.keys(INCIDENT_APPROVALS) as IncidentApproval[])
      approvals.register(approval, incidents.executor(approval));
    // Detection's automatic responses: block a source, hold a device (never a broker), open an incident.
    const responsePorts = new DetectionResponsePorts({
      device: (id) => deviceInventory.get(id),
      knownDevices: (ids) => incidentStore.devices(db, ids),
      hold: (serial, input, ctx) => revocations.revoke(serial, input, ctx),
      openIncident: (input, ctx) => incidents.open(input, ctx),
      reserved: (name) => reserved.isReserved(name),
      brokers,
    });
    const responses = new AutomaticResponses(
      config.detectionRules,
      securityEvents,
      new SourceBlocks(clock),
      responsePorts,
      clock,
      onDetectError,
    );
    const apiKeyWatch = new ApiKeyWatch(db, new ApiKeyAddressStore(), securityEvents, responses, clock, onDetectError);
    const eventFeed = new EventFeed(securityEvents, 1000, onDetectError);
    // Idempotency-Keys: enrollment's (leased like its abandoned attempts) and the API's (IDEMPOTENCY_LEASE_SECONDS).
    const idempotencyStore = new IdempotencyStore();
    const apiIdempotency = new Idempotency(db, idempotencyStore, clock, inFlightLease(clock, config.idempotency.leaseMs));
    // Enrollment: the methods, behind the rate limits and the blocked sources.
    const enrollment = new Enrollment(
      [
        new TokenEnrollment('token', tokens),
        new TokenEnrollment('est-basic', tokens, { basicOverHttp: config.estBasicOverHttp }),
        new RenewalEnrollment('mtls-renewal', db, deviceCertificates, devices, clock, graceDays),
        new RenewalEnrollment('signed-renewal', db, deviceCertificates, devices, clock, graceDays),
        new RenewalEnrollment('staged-renewal', db, deviceCertificates, devices, clock, graceDays),
        new OperatorEnrollment(db, devices),
      ],
      issuance,
      hierarchy,
      new Idempotency(db, idempotencyStore, clock, abandoned),
      securityEvents,
      responses, // sources the failing-source rule blocked are refused at once
      limits,
      abandoned,
      reserved,
      rollovers, // renewals of a rolled-over CA's certificates are issued by its successor
    );
    const stagedStore = new StagedCredentialStore();
    const serverKeygen = new ServerKeygen(enrollment, (serial) => stagedStore.markServerKey(db, serial));
    const staged = new StagedCredentials(
      db,
      stagedStore,
      certificateStore,
      enrollment,
      hierarchy,
      kek,
      deviceCertificates,
      audit,
      clock,
      async (profile, deviceId) => graceDays(profile, (await devices.deviceFacts(db, deviceId))?.lot ?? null),
    );
    const operatorIssuance = new OperatorIssuance(enrollment);

    // Rotation (renewal notices), sweeps, backups, and the job queues that run them.
    const workerId = `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    const publisher = notices.mqtt
      ? new MqttPublisher({ ...notices.mqtt, clientId: `mqtt-ca-notices-${randomBytes(6).toString('hex')}`, timeoutMs: 15_000 })
      : undefined;
    const senders: NoticeSender[] = [
      ...(publisher ? [new MqttNoticeSender(publisher, notices.mqtt!.topic, notices.mqtt!.retain)] : []),
      ...(notices.webhook ? [new WebhookNoticeSender(new SignedWebhook({ ...notices.webhook, timeoutMs: 10_000 }))] : []),
    ];
    const renewalStore = new RenewalStore();
    const renewals = new Renewals(
      db,
      renewalStore,
      policies,
      audit,
      clock,
      senders,
      {
        batchSize: noticeBatchSize,
        leaseMs: config.jobs.lockMs,
        redriveAfterMs: config.jobs.renewalRedriveMs,
        workerId,
        renewUrl: `${config.publicUrl}/v1/renew`,
        estUrl: `${config.publicUrl}/.well-known/est/simplereenroll`,
        pickupUrl: `${config.publicUrl}/v1/renew/staged`,
      },
      staged,
    );
    const sweeps = new ExpirySweeps(db, new ExpiryStore(), audit, securityEvents, clock);
    const backups = new Backups(db, new BackupStore(), kek, audit, clock, {
      dir: config.backups.dir,
      keep: config.backups.keep,
      checkpoints: auditCheckpoints,
    });
    // enqueue is called only once jobs exists, by a running job.
    const enqueue = (queue: string, js: NewJob[]) => jobs.enqueue(queue, js);
    const defs = queueDefinitions(
      {
        logger,
        issuance,
        crlWatch,
        crls,
        ocsp,
        ocspResponders,
        renewals,
        sweeps,
        identities,
        extra: scheduledTasks({ sessionKeys, approvals, rollovers, backups, revocations, apiIdempotency }, enqueue, {
          sessionKeyRotateEveryMs: config.sessionKeyRotateEveryMs,
          rolloverTickMs: config.jobs.rolloverTickMs,
          bulkRevocationLeaseMs: config.jobs.lockMs,
          backupEveryMs: config.backups.everyMs,
          idempotencyKeyTtlMs: config.idempotency.ttlMs,
        }),
      },
      enqueue,
      {
        renewalPlanEveryMs: config.jobs.renewalPlanEveryMs,
        ocspShortestValidityMs: Math.min(config.ocspValidityMs, config.ocspBrokerValidityMs),
      },
    );
    const onJobError = (where: string, e: unknown) => logger.warn({ err: e, where }, 'job error');
    const jobs: JobRunner = config.redisUrl
      ? new BullMqJobRunner(defs, {
          redisUrl: config.redisUrl,
          prefix: config.jobs.prefix,
          lockMs: config.jobs.lockMs,
          onError: onJobError,
        })
      : new LocalJobRunner(defs, (queue, job, e) => onJobError(`${queue}:${job.name}`, e));
    // The CSF posture report, which reads the rest.
    // The bus watch: the Mosquitto log file first (it sees more, in one order), then the connector's $SYS log,
    // then the brokers that post their events; presence and the detectors observe what it sees.
    const busSources = busWatchSources(config, brokers, identities, [...busEventWebhooks.values()]);
    const busDetectors = new BusDetectors(
      config.detectionRules,
      securityEvents,
      responses.runner,
      {
        deviceStanding: async (ids) => {
          const found = new Map((await incidentStore.devices(db, ids)).map((d) => [d.id, d]));
          return ids.map((id) => {
            const d = found.get(id);
            return d && { status: d.status, currentSerial: d.currentSerial?.toString('hex') ?? null };
          });
        },
        silentDevices: (q) => busPresence.silent(q),
      },
      clock,
      { sources: () => busSources.map((s) => s.observes), own: (id) => reserved.isReserved(id), onError: onDetectError },
    );
    standings.detectors = busDetectors;
    const busWatch = new BusWatch({
      sources: busSources,
      observers: [presence, busDetectors],
      gaps: new WatchGapBook(db, new BusWatchGapStore(), clock, {
        process: workerId,
        onError: (e) => logger.warn({ err: e }, 'bus watch: gaps are kept in memory until the database is back'),
      }),
      clock,
      onError: (e, where) => logger.warn({ err: e, where }, 'bus watch error'),
    });
    const postureStore = new PostureStore();
    const posture = new Posture(db, postureStore, settings, audit, clock, {
      cas: async () =>
        (await hierarchy.list()).map((c) => ({
          id: c.id,
          kind: c.kind,
          status: c.status,
          keyAlgorithm: c.keyAlgorithm,
          notAfter: c.notAfter,
        })),
      crls: () => crlWatch.status().map((c) => ({ caId: c.caId, stale: c.stale })),
      pastRenewalPoint: (now) => renewalStore.pastRenewalPoint(db, now, DEFAULT_RENEW_AT_FRACTION),
      revocationVisible: () => metrics.revocationVisibleSummary(),
      ocspStatusAnswers: () => metrics.ocspStatusAnswers(),
      storage: () =>
        measureStorageLayout({
          storeDir: config.databaseUrl ? null : pgliteDirUnder(config.dataDir),
          dataDir: config.dataDir,
          backupDir: config.backups.dir,
          kekFile: config.kek ? null : origin,
        }),
      rules: config.detectionRules,
      rateLimitScopes: Object.entries(config.rateLimits)
        .filter(([, l]) => l)
        .map(([scope]) => scope),
      brokerConnectors: brokers.list().map((c) => c.name),
      renewalNoticeSinks: sinks,
      backupEveryMs: config.backups.everyMs,
      fleetCountsMaxAgeMs: config.postureFleetCountsMaxAgeMs,
      bus: {
        brokers: () => busWatch.brokers(),
        watchedUntil: (brokers) => busWatch.watchedUntil(brokers),
        gaps: (since) => busWatch.gaps(since),
        rules: () =>
          describedWatchRules(config.detectionRules.filter(isWatchRule), busDetectors.observability(busSources.map((s) => s.observes))),
        activeSeen: (since) => busPresenceStore.activeSeen(db, since),
        lag: (since) => postureStore.busLag(db, since),
      },
    });
    const revocationHealth = new RevocationHealthReport({
      clock,
      cas: async () => (await hierarchy.list()).map((c) => ({ id: c.id, name: c.name })),
      published: () => crls.published(),
      isStale: (crl, now) => crlWatch.isStale(crl, now),
      since: metrics.startedAt,
      ocspAnswers: () => metrics.ocspAnswers(),
      visibleSummary: () => metrics.revocationVisibleSummary(),
      visibleHistogram: () => metrics.revocationVisibleHistogram(),
    });
    const stop = async () => {
      await busWatch.stop();
      await presence.stop().catch((e: unknown) => logger.warn({ err: e }, 'bus presence not written at stop'));
      await brokers.close();
      await jobs.close();
      await crls.close();
      await publisher?.close();
      await feed?.close();
      eventFeed.close();
      rateLimiter.close();
      await anchor.flush();
    };
    const auditVerifier = new AuditChainVerifier(
      { db, audit, checkpoints: auditCheckpoints, anchorFile: config.audit.anchorFile, backups },
      clock,
      config.audit.fullVerifyEveryMs,
    );
    const service: Service = {
      config,
      logger,
      clock,
      db,
      settings,
      audit,
      auditCheckpoints,
      auditVerifier,
      apiKeys,
      consoleSessions,
      vault,
      hierarchy,
      issuance,
      certificates,
      operatorIssuance,
      securityEvents,
      eventFeed,
      apiKeyWatch,
      responses,
      limits,
      posture,
      tokens,
      enrollment,
      serverKeygen,
      devices: deviceInventory,
      presence,
      busPresence,
      revocations,
      crls,
      crlWatch,
      metrics,
      revocationHealth,
      ocsp,
      ocspResponders,
      sessionKeys,
      staged,
      policies,
      renewals,
      sweeps,
      jobs,
      rollovers,
      brokers,
      busEventWebhooks,
      busEventIngestion,
      incidents,
      approvals,
      bulkRevocations,
      backups,
      apiIdempotency,
      identities,
      busWatch,
      busDetectors,
      stop,
      close: async () => {
        await stop();
        await db.destroy();
      },
    };
    return service;
  } catch (e) {
    if (!opts.db) await db.destroy(); // a database handed in belongs to the caller
    throw e;
  }
}

/** The configured broker connectors (Mosquitto, a webhook, RabbitMQ's management API, NATS's users file); the Mosquitto one logs in with the service's own client certificate (mqtts://). */
function brokerConnectors(
  config: Config,
  identities: Pick<ServiceIdentities, 'ensure'>,
  nats: { identity: (deviceId: string) => string; activeDevices: () => Promise<string[]>; onError: (e: unknown) => void },
): BrokerConnector[] {
  const b = config.brokers;
  return [
    ...(b.mqtt
      ? [
          new MosquittoDynsecConnector({
            url: b.mqtt.url,
            username: b.mqtt.username,
            password: b.mqtt.password,
            ...(b.mqtt.url.startsWith('mqtts://') ? { tls: () => identities.ensure('broker-connector') } : {}),
            denyRole: b.denyRole,
            notifyTopic: b.notifyTopic,
            timeoutMs: b.timeoutMs,
          }),
        ]
      : []),
    ...(b.webhook ? [new WebhookBrokerConnector(new SignedWebhook({ ...b.webhook, timeoutMs: b.timeoutMs }))] : []),
    ...(b.rabbitmq ? [new RabbitMqConnector({ ...b.rabbitmq, notifyTopic: b.notifyTopic, timeoutMs: b.timeoutMs })] : []),
    ...(b.nats ? [new NatsConnector({ ...b.nats, ...nats, timeoutMs: b.timeoutMs })] : []),
  ];
}

/** The bus watch's sources (none with BUS_WATCH off): the log file's, then the Mosquitto connector's $SYS log with its identity. */
function busWatchSources(
  config: Config,
  brokers: BrokerConnectors,
  identities: Pick<ServiceIdentities, 'ensure'>,
  webhooks: BusEventSource[],
): BusEventSource[] {
  if (!config.busWatch.enabled) return [];
  const sources: BusEventSource[] = [];
  const file = config.busWatch.logFile;
  if (file) sources.push(new MosquittoLogFileSource({ broker: file.broker, path: file.path }));
  const mqtt = config.brokers.mqtt;
  const connector = brokers.list().find((c) => c instanceof MosquittoDynsecConnector);
  if (mqtt && connector)
    sources.push(
      new MosquittoLogSource({
        broker: connector.name,
        url: mqtt.url,
        username: mqtt.username,
        password: mqtt.password,
        ...(mqtt.url.startsWith('mqtts://') ? { tls: () => identities.ensure('broker-connector') } : {}),
        timeoutMs: config.brokers.timeoutMs,
      }),
    );
  return [...sources, ...webhooks];
}

export function createHttpHandler(svc: Service, opts: { validateResponses?: boolean } = {}) {
  const app = createApp({
    logger: svc.logger,
    bodyLimitBytes: svc.config.bodyLimitBytes,
    validateResponses: opts.validateResponses,
    ready: () => pingDb(svc.db),
    apiKeys: svc.apiKeys,
    consoleSessions: svc.consoleSessions,
    audit: svc.audit,
    verifyAudit: (opts) => svc.auditVerifier.verify(opts),
    hierarchy: svc.hierarchy,
    certificates: svc.certificates,
    operatorIssuance: svc.operatorIssuance,
    enrollment: svc.enrollment,
    serverKeygen: svc.serverKeygen,
    staged: svc.staged,
    tokens: svc.tokens,
    securityEvents: svc.securityEvents,
    eventFeed: svc.eventFeed,
    apiKeyWatch: svc.apiKeyWatch,
    limits: svc.limits,
    posture: svc.posture,
    busWatch: svc.busWatch,
    devices: svc.devices,
    busPresence: svc.busPresence,
    revocations: svc.revocations,
    deviceRetirement: new DeviceRetirement(svc.revocations, svc.devices),
    ocspCheck: new OcspCheck(svc.ocsp),
    sessionKeys: svc.sessionKeys,
    metrics: svc.metrics,
    revocationHealth: svc.revocationHealth,
    policies: svc.policies,
    renewals: svc.renewals,
    rollovers: svc.rollovers,
    incidents: svc.incidents,
    approvals: svc.approvals,
    bulkRevocations: svc.bulkRevocations,
    backups: svc.backups,
    apiIdempotency: { idempotency: svc.apiIdempotency, ttlMs: svc.config.idempotency.ttlMs },
    jobs: svc.jobs,
    busEvents: svc.busEventIngestion,
    dashboardQueues: svc.jobs instanceof BullMqJobRunner ? svc.jobs.bullQueues() : undefined,
  });
  const pki = createPkiHandler(
    {
      caCertificateDer: (id) => svc.hierarchy.certificateDer(id),
      currentCrl: (id, shard) => svc.crls.current(id, shard),
      currentDeltaCrl: (id, shard) => svc.crls.currentDelta(id, shard),
      allCrls: () => svc.crls.all(),
      crlDer: (crl) => svc.crls.der(crl),
      ocsp: (request, requester) => svc.ocsp.respond(request, requester),
    },
    {
      ocspMaxAgeSeconds: svc.config.ocspMaxAgeSeconds,
      clock: svc.clock,
      maxInFlight: svc.config.pkiMaxInFlight,
      onRefused: () => svc.metrics.rateLimited('pki'),
    },
  );
  const enroll = createEnrollHandler({
    enrollment: svc.enrollment,
    logger: svc.logger,
    telemetry: svc.metrics,
    bodyLimitBytes: svc.config.bodyLimitBytes,
    validateResponses: opts.validateResponses,
  });
  const proxies = new TrustedProxies(svc.config.trustedProxies);
  return (req: IncomingMessage, res: ServerResponse) => {
    resolveClientAddress(req, proxies);
    if (!pki(req, res) && !enroll(req, res)) app(req as Parameters<typeof app>[0], res as Parameters<typeof app>[1]);
  };
}

/**
 * The TLS listener (TLS_PORT): the same handler, with the service's own certificate, asking
 * every client for a certificate without requiring one — EST and renewal check it themselves.
 * The certificate (and the CA list) in use is looked at again every `refreshMs` and at once when
 * this process issued a new one, and swapped in with setSecureContext: no restart, and the
 * connections already open keep theirs.
 */
export async function listenTls(svc: Service, port: number, opts: { refreshMs?: number } = {}): Promise<HttpsServer> {
  const id = await svc.identities.ensure('tls-server');
  const server = createListener(createHttpHandler(svc), svc.config.listeners, {
    key: id.key,
    cert: id.cert,
    ca: id.ca,
    requestCert: true,
    rejectUnauthorized: false,
  });
  keepTlsContextFresh(
    server,
    id,
    {
      current: () => svc.identities.current('tls-server'),
      onIssued: (l) =>
        svc.identities.onIssued((name) => {
          if (name === 'tls-server') l();
        }),
    },
    { refreshMs: opts.refreshMs ?? 60_000, logger: svc.logger },
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, svc.config.host, () => resolve());
  });
  return server;
}

export async function listen(svc: Service): Promise<Server> {
  const server = createListener(createHttpHandler(svc), svc.config.listeners);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(svc.config.port, svc.config.host, () => resolve());
  });
  return server;
}
