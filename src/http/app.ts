import express, { type Express, type Request, type RequestHandler } from 'express';
import * as OpenApiValidator from 'express-openapi-validator';
import swaggerUi from 'swagger-ui-express';
import type { Logger } from 'pino';
import type { ApiKeyService } from '../access/api-keys.js';
import type { ConsoleSessions } from '../access/console-sessions.js';
import { consoleStatic } from './console-static.js';
import { consoleRoutes } from './routes/console.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { CaHierarchy } from '../ca/hierarchy.js';
import type { CertificateRegistry } from '../ca/certificates.js';
import type { OperatorIssuance } from '../enroll/operator-issuance.js';
import { allow, authenticate, type Principal } from './auth.js';
import { rateLimited } from './rate-limit.js';
import type { RateLimits } from '../detect/rate-limits.js';
import { loadApiSpec } from './openapi.js';
import { wellFormedText } from './well-formed-text.js';
import { errorHandler, sendProblem } from './problem.js';
import { assignRequestId, recordWhenFinished, sourceOf } from './request-context.js';
import type { Telemetry } from '../shared/telemetry.js';
import { apiKeyRoutes } from './routes/api-keys.js';
import { auditRoutes, type AuditVerify } from './routes/audit.js';
import { eventRoutes } from './routes/events.js';
import { revocationHealthRoutes } from './routes/revocation-health.js';
import { postureRoutes } from './routes/posture.js';
import { busWatchRoutes } from './routes/bus-watch.js';
import type { BusWatch } from '../detect/bus-watch.js';
import type { Posture } from '../detect/posture.js';
import type { EventFeed } from '../detect/event-feed.js';
import type { ApiKeyWatch } from '../detect/api-key-watch.js';
import { serverKeygenRoutes, tokenRoutes } from './routes/enrollment.js';
import { estRoutes } from './routes/est.js';
import type { Enrollment } from '../enroll/enrollment.js';
import type { ServerKeygen } from '../enroll/server-keygen.js';
import type { StagedCredentials } from '../rotate/staged-credentials.js';
import type { EnrollmentTokens } from '../enroll/tokens.js';
import type { SecurityEvents } from '../detect/security-events.js';
import { casRoutes } from './routes/cas.js';
import { certificateRoutes } from './routes/certificates.js';
import type { OcspCheck } from '../revoke/ocsp-check.js';
import type { Revocations } from '../revoke/revocation.js';
import type { DeviceRetirement } from '../revoke/device-retirement.js';
import { deviceRoutes } from './routes/devices.js';
import { busRoutes } from './routes/bus.js';
import type { BusPresenceReads } from '../detect/bus-presence-reads.js';
import { largeBodyParsers } from './large-body.js';
import type { DeviceInventory, DeviceView } from '../enroll/devices.js';
import type { RevocationHealthReport } from '../revoke/revocation-health.js';
import type { ServiceMetrics } from '../detect/metrics.js';
import type { Queue } from 'bullmq';
import type { RotationPolicies } from '../rotate/policies.js';
import type { Renewals } from '../rotate/renewals.js';
import type { JobRunner } from '../jobs/runner.js';
import { rotationRoutes } from './routes/rotation.js';
import { rolloverRoutes } from './routes/rollover.js';
import type { CaRollovers } from '../rotate/rollover.js';
import { adminOnly, DASHBOARD_PATH, queueDashboard } from './queue-dashboard.js';
import type { SessionKeys } from '../rotate/session-keys.js';
import { sessionKeyRoutes } from './routes/session-keys.js';
import { incidentRoutes } from './routes/incidents.js';
import type { Incidents } from '../respond/incidents.js';
import type { Approvals } from '../respond/approvals.js';
import type { BulkRevocationGate } from '../respond/gated-actions.js';
import { approvalRoutes } from './routes/approvals.js';
import type { Backups } from '../respond/backups.js';
import { backupRoutes } from './routes/backups.js';
import type { Idempotency } from '../enroll/idempotency.js';
import { idempotentRoutes } from './idempotent-routes.js';
import type { BusEventIngestion } from '../detect/bus-event-ingestion.js';
import { busEventRoutes } from './routes/bus-events.js';

export interface AppDeps {
  logger: Logger;
  bodyLimitBytes: number;
  /** Tests turn this on: every response is checked against openapi.yaml, and a mismatch is a 500. */
  validateResponses?: boolean;
  ready(): Promise<boolean>;
  apiKeys: ApiKeyService;
  /** Web console sessions: a session cookie stands in for the Bearer key (docs/console.md). */
  consoleSessions: ConsoleSessions;
  /** The built web console (dist/console by default), served at / and /console. */
  consoleDir?: string | undefined;
  audit: AuditLog;
  /**
   * GET /v1/audit/verification: the chain (the entries after the last one found intact, or with
   * `full` all of them), then its head against the checkpoints; `at` when it ran, `scope` what it walked.
   */
  verifyAudit: AuditVerify;
  hierarchy: CaHierarchy;
  certificates: CertificateRegistry;
  operatorIssuance: OperatorIssuance;
  enrollment: Enrollment;
  serverKeygen: ServerKeygen;
  staged: StagedCredentials;
  tokens: EnrollmentTokens;
  securityEvents: SecurityEvents;
  /** Live security events for GET /v1/events/stream. */
  eventFeed: EventFeed;
  /** Told of wrong API keys and of keys used from new addresses; says which addresses are blocked. */
  apiKeyWatch: ApiKeyWatch;
  /** Per address and per API key on /v1. */
  limits: RateLimits;
  posture: Posture;
  /** GET /v1/bus/watch. */
  busWatch: Pick<BusWatch, 'status'>;
  /** GET /v1/revocation-health. */
  revocationHealth: RevocationHealthReport;
  devices: DeviceInventory;
  /** Presence on the bus: a device's on GET /v1/devices/{id}, the network map on GET /v1/bus/map. */
  busPresence: BusPresenceReads;
  revocations: Revocations;
  deviceRetirement: DeviceRetirement<DeviceView>;
  /** GET /v1/certificates/{serial}/ocsp: the OCSP responder's answer, read back. */
  ocspCheck: OcspCheck;
  sessionKeys: SessionKeys;
  /** Served at GET /metrics; request latencies are reported to it. */
  metrics: ServiceMetrics;
  policies: RotationPolicies;
  renewals: Renewals;
  rollovers: CaRollovers;
  incidents: Incidents;
  /** The two-person rule's proposals, and the bulk revocation that needs one above its threshold. */
  approvals: Approvals;
  bulkRevocations: BulkRevocationGate;
  backups: Backups;
  /** Idempotency-Key on the state-changing routes operators, the console and the CLI use; keys live `ttlMs` (IDEMPOTENCY_KEY_TTL_HOURS). */
  apiIdempotency: { idempotency: Idempotency; ttlMs: number };
  jobs: JobRunner;
  /** POST /v1/bus-events: signed batches of other brokers' events (BUS_EVENT_SECRETS), handed to their WebhookBusEventSource. */
  busEvents: BusEventIngestion;
  /** BullMQ queues for the admin dashboard at /admin/queues (none with in-process jobs). */
  dashboardQueues?: Queue[] | undefined;
}

/** /v1 routes that authenticate with their own credentials (enrollment tokens, device certificates), not API keys. */
const OWN_AUTH_PATHS = new Set(['/enroll', '/renew', '/renew/staged', '/enroll/serverkeygen', '/session-keys']);

/** Console sign-in presents the API key in its body, not in a header. */
const isSignIn = (req: Request) => req.method === 'POST' && req.path === '/console/session';

const requestId: RequestHandler = (req, res, next) => {
  res.locals.requestId = assignRequestId(req, res);
  next();
};

/** The matched route's template (never the raw path, which would make a metric per serial); `unmatched` for a 404. */
const routeTemplate = (req: Request): string => (req.route ? `${req.baseUrl}${String((req.route as { path: string }).path)}` : 'unmatched');

const accessLog =
  (observers: { logger: Logger; telemetry: Telemetry }): RequestHandler =>
  (req, res, next) => {
    recordWhenFinished(observers, req, res, res.locals.requestId as string, () => routeTemplate(req));
    next();
  };

export function createApp(d: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');
  app.use(requestId, accessLog({ logger: d.logger, telemetry: d.metrics }));

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    if (await d.ready()) res.json({ status: 'ok', database: 'ok' });
    else sendProblem(res, { status: 503, title: 'Service unavailable', detail: 'the database does not answer' });
  });

  const spec = loadApiSpec();
  app.get('/openapi.json', (_req, res) => {
    res.json(spec);
  });
  app.use('/docs', swaggerUi.serve, swaggerUi.setup(spec));

  app.use(consoleStatic(d.consoleDir));

  if (d.dashboardQueues) app.use(DASHBOARD_PATH, adminOnly(d.apiKeys), queueDashboard(d.dashboardQueues));

  // Rate limits per address first, before a key is even looked at; per key once it is known. Enrollment keeps its own limit (Enrollment).
  app.use(
    '/v1',
    rateLimited(d.limits, 'api-source', (req) => sourceOf(req)),
  );
  // Signed by a broker's secret, not an API key; the HMAC covers the raw body, read here before the global parsers.
  app.use(busEventRoutes(d.busEvents, { logger: d.logger, validateResponses: d.validateResponses }));
  const apiKeyAuth = authenticate(d.apiKeys, d.apiKeyWatch, d.consoleSessions);
  // Device manifests (JSON or CSV) and bulk revocations by serial exceed BODY_LIMIT: their routes read their bodies first, after auth and role check.
  app.use(largeBodyParsers(apiKeyAuth, '/v1/devices/import', ['provisioner'], { csv: true }));
  app.use(largeBodyParsers(apiKeyAuth, '/v1/revocations', ['operator']));
  app.use(express.json({ limit: d.bodyLimitBytes, type: ['application/json', 'application/*+json'] }));
  app.use(express.raw({ limit: d.bodyLimitBytes, type: ['application/pkcs10'] }));
  const keyLimit = rateLimited(d.limits, 'api-key', (_req, res) => (res.locals.principal as Principal).keyId);
  app.use('/v1', (req, res, next) =>
    OWN_AUTH_PATHS.has(req.path) || isSignIn(req)
      ? next()
      : apiKeyAuth(req, res, (e?: unknown) => (e ? next(e) : keyLimit(req, res, next))),
  );
  app.use(
    OpenApiValidator.middleware({
      apiSpec: structuredClone(spec) as never,
      validateRequests: { allowUnknownQueryParameters: false },
      validateResponses: d.validateResponses ?? false,
      validateSecurity: false, // authenticate() above does it, with roles
      ignorePaths: /^\/(pki|docs|healthz|readyz|openapi|admin|console|\.well-known)/,
    }),
  );
  app.use(wellFormedText);
  // Before the routes it guards: a repeated request with the same Idempotency-Key is answered here and never reaches them.
  app.use(idempotentRoutes(d.apiIdempotency.idempotency, { ttlMs: d.apiIdempotency.ttlMs }));

  app.use(serverKeygenRoutes(d.serverKeygen, d.staged));
  app.use(estRoutes(d.enrollment, d.serverKeygen, d.hierarchy));
  app.use(casRoutes(d.hierarchy));
  app.use(certificateRoutes(d.certificates, d.operatorIssuance, d.revocations, d.bulkRevocations, d.ocspCheck));
  app.use(apiKeyRoutes(d.apiKeys));
  app.use(consoleRoutes(d.consoleSessions, d.apiKeyWatch));
  app.use(auditRoutes(d.audit, d.verifyAudit));
  app.use(eventRoutes(d.securityEvents, d.eventFeed));
  app.use(postureRoutes(d.posture));
  app.use(busWatchRoutes(d.busWatch));
  app.use(revocationHealthRoutes(d.revocationHealth));
  app.use(tokenRoutes(d.tokens));
  app.use(deviceRoutes(d.devices, d.deviceRetirement, d.busPresence));
  app.use(busRoutes(d.busPresence));
  app.use(rotationRoutes(d.policies, d.renewals, d.jobs));
  app.use(rolloverRoutes(d.rollovers));
  app.use(sessionKeyRoutes(d.sessionKeys));
  app.use(incidentRoutes(d.incidents));
  app.use(approvalRoutes(d.approvals));
  app.use(backupRoutes(d.backups));
  app.get('/metrics', apiKeyAuth, allow('operator', 'auditor'), async (_req, res) => {
    res.type(d.metrics.registry.contentType).send(await d.metrics.registry.metrics());
  });

  app.use((_req, res) => sendProblem(res, { status: 404, title: 'Not found', detail: 'no such resource' }));
  app.use(errorHandler(d.logger));
  return app;
}
