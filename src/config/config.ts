import { z } from 'zod';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { DEFAULT_RULES, rulesSchema, type DetectionRule } from '../shared/detection-rules.js';
import type { Limit, RateScope } from '../shared/rate-limit-settings.js';
import { parseCidr, type Cidr } from '../shared/trusted-proxies.js';

/** Thrown when the environment is wrong; the message names the variable. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v));

const port = z.coerce.number().int().min(0).max(65535);
/** Requests per second, optionally with the burst (`600`, `0.5/10`); 0: no limit. */
const rateSetting = z
  .string()
  .regex(/^\d{1,7}(\.\d{1,6})?(\/\d{1,7})?$/, 'requests per second, optionally /burst (e.g. 600 or 0.5/10); 0: no limit');

const schema = z.object({
  PORT: port.default(8080),
  TLS_PORT: optionalString.pipe(
    z
      .string()
      .regex(/^\d{1,5}$/, 'must be a port number')
      .transform(Number)
      .pipe(z.number().int().max(65535))
      .optional(),
  ),
  HOST: z.string().min(1).default('127.0.0.1'),
  HTTP_HEADERS_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(600).default(10),
  HTTP_REQUEST_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
  HTTP_KEEPALIVE_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(600).default(5),
  EST_BASIC_OVER_HTTP: z.enum(['true', 'false']).default('false'),
  PUBLIC_URL: optionalString.pipe(z.url({ protocol: /^https?$/ }).optional()),
  DATA_DIR: z.string().min(1).default('./data'),
  DATABASE_URL: optionalString.pipe(
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
      .optional(),
  ),
  REDIS_URL: optionalString.pipe(
    z
      .string()
      .regex(/^rediss?:\/\//, 'must be a redis:// URL')
      .optional(),
  ),
  ADMIN_API_KEY: optionalString.pipe(z.string().min(32, 'must be at least 32 characters').optional()),
  MQTT_CA_KEK: optionalString,
  MQTT_CA_KEK_FILE: optionalString,
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  BODY_LIMIT: z
    .string()
    .regex(/^\d+(b|kb|mb)$/i, 'must look like 64kb or 1mb')
    .default('256kb'),
  CRL_VALIDITY_HOURS: z.coerce
    .number()
    .int()
    .min(2)
    .max(24 * 31)
    .default(48),
  CRL_DELTA_MAX_ENTRIES: z.coerce.number().int().min(1).max(10_000_000).default(10_000),
  CRL_SHARDS: z.coerce.number().int().min(0).max(4096).default(0),
  OCSP_VALIDITY_HOURS: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 7)
    .default(24),
  OCSP_BROKER_VALIDITY_MINUTES: z.coerce
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 60)
    .default(60),
  OCSP_RESPONDER_DAYS: z.coerce.number().int().min(2).max(90).default(30),
  OCSP_MAX_AGE_SECONDS: z.coerce.number().int().min(0).max(86_400).default(60),
  OCSP_CACHE_ENTRIES: z.coerce.number().int().min(0).max(10_000_000).default(200_000),
  JOBS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9:_-]{1,64}$/, 'letters, digits, : _ - (at most 64)')
    .default('mqtt-ca'),
  JOBS_IN_SERVE: z.enum(['true', 'false']).default('true'),
  SERVE_PROCESSES: z
    .string()
    .regex(/^(auto|[1-9]\d{0,2})$/, 'auto, or a number of processes from 1 to 999')
    .default('auto'),
  JOB_LOCK_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
  RENEWAL_PLAN_SECONDS: z.coerce.number().int().min(1).max(86_400).default(60),
  RENEWAL_REDRIVE_SECONDS: z.coerce.number().int().min(1).max(86_400).default(600),
  ROLLOVER_TICK_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
  RENEWAL_MQTT_URL: optionalString.pipe(
    z
      .string()
      .regex(/^(mqtts?|wss?):\/\//, 'must be an mqtt://, mqtts://, ws:// or wss:// URL')
      .optional(),
  ),
  RENEWAL_MQTT_USERNAME: optionalString,
  RENEWAL_MQTT_PASSWORD: optionalString,
  RENEWAL_MQTT_CA_FILE: optionalString,
  RENEWAL_MQTT_CERT_FILE: optionalString,
  RENEWAL_MQTT_KEY_FILE: optionalString,
  RENEWAL_MQTT_RETAIN: z.enum(['true', 'false']).default('true'),
  RENEWAL_TOPIC: z
    .string()
    .default('mqtt-ca/devices/{deviceId}/renew')
    .refine(
      (t) => t.includes('{deviceId}') && !/[+#]/.test(t) && !t.startsWith('$'),
      'must contain {deviceId}, no wildcards, not start with $',
    ),
  RENEWAL_WEBHOOK_URL: optionalString.pipe(z.url({ protocol: /^https?$/ }).optional()),
  RENEWAL_WEBHOOK_SECRET: optionalString.pipe(z.string().min(32, 'must be at least 32 characters').optional()),
  BROKER_MQTT_URL: optionalString.pipe(
    z
      .string()
      .regex(/^mqtts?:\/\//, 'must be an mqtts:// (or, for a plain test broker, mqtt://) URL')
      .optional(),
  ),
  BROKER_MQTT_USERNAME: optionalString,
  BROKER_MQTT_PASSWORD: optionalString,
  BROKER_CA_FILE: optionalString,
  BROKER_CLIENT_CN: z
    .string()
    .regex(
      /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/,
      "lowercase letters, digits, - and . (it is also the certificate's DNS name)",
    )
    .max(64)
    .default('mqtt-ca-connector'),
  BROKER_DENY_ROLE: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,64}$/, 'letters, digits, . _ : - (at most 64)')
    .default('mqtt-ca-blocked'),
  BROKER_NOTIFY_TOPIC: z
    .string()
    .default('mqtt-ca/events')
    .refine(
      (t) => t.length > 0 && !/[+#]/.test(t) && !t.startsWith('$') && !t.endsWith('/'),
      'an MQTT topic: no wildcards, not starting with $ or ending with /',
    ),
  BROKER_TIMEOUT_SECONDS: z.coerce.number().int().min(1).max(300).default(10),
  BROKER_WEBHOOK_URL: optionalString.pipe(z.url({ protocol: /^https?$/ }).optional()),
  BROKER_WEBHOOK_SECRET: optionalString.pipe(z.string().min(32, 'must be at least 32 characters').optional()),
  // RabbitMQ's management API (the RabbitMQ connector): its URL, user (default BROKER_CLIENT_CN), password or a file holding it
  BROKER_RABBITMQ_URL: optionalString.pipe(z.url({ protocol: /^https?$/ }).optional()),
  BROKER_RABBITMQ_USERNAME: optionalString,
  BROKER_RABBITMQ_PASSWORD: optionalString,
  BROKER_RABBITMQ_PASSWORD_FILE: optionalString,
  BROKER_RABBITMQ_VHOST: z.string().min(1).default('/'),
  // The NATS connector: the users file it owns, how it reloads the server, where it confirms
  BROKER_NATS_USERS_FILE: optionalString,
  BROKER_NATS_BLOCK_FILE: optionalString,
  BROKER_NATS_PID_FILE: optionalString,
  BROKER_NATS_RELOAD_COMMAND: optionalString,
  BROKER_NATS_MONITOR_URL: optionalString.pipe(z.url({ protocol: /^https?$/ }).optional()),
  BROKER_NATS_SYNC_SECONDS: z.coerce.number().int().min(0).max(86_400).default(60),
  // Other brokers' events (POST /v1/bus-events): broker id -> secret, as JSON, or a file holding that JSON
  BUS_EVENT_SECRETS: optionalString,
  BUS_EVENT_SECRETS_FILE: optionalString,
  // The bus watch (docs/bus-watch.md)
  BUS_WATCH: optionalString.pipe(z.enum(['on', 'off']).optional()),
  BUS_WATCH_LOG_FILE: optionalString,
  BUS_WATCH_LOG_FILE_BROKER: z
    .string()
    .regex(/^[A-Za-z0-9._:-]{1,64}$/, 'letters, digits, . _ : - (at most 64)')
    .default('mosquitto'),
  SESSION_KEY_ROTATE_SECONDS: z.coerce.number().int().min(1).max(86_400).default(300),
  SESSION_KEY_PERIOD_HOURS: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 366)
    .default(24),
  SESSION_KEY_OVERLAP_HOURS: z.coerce
    .number()
    .int()
    .min(0)
    .max(24 * 365)
    .default(1),
  // Two-person rule
  APPROVAL_TTL_HOURS: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 30)
    .default(24),
  BULK_REVOKE_APPROVAL_THRESHOLD: z.coerce.number().int().min(0).max(100_000_000).default(1000),
  BULK_REVOKE_CHUNK_SIZE: z.coerce.number().int().min(1).max(100_000).default(20_000),
  // Backups
  BACKUP_DIR: optionalString,
  BACKUP_EVERY_HOURS: z.coerce
    .number()
    .min(0)
    .max(24 * 31)
    .default(0),
  DETECTION_RULES: optionalString,
  API_RATE_PER_SOURCE: rateSetting.default('600'),
  API_RATE_PER_KEY: rateSetting.default('300'),
  ENROLL_RATE_PER_SOURCE: rateSetting.default('5000'),
  PKI_MAX_IN_FLIGHT: z.coerce.number().int().min(0).max(1_000_000).default(1024),
  ENROLL_RECOVERY_SECONDS: z.coerce.number().int().min(1).max(86_400).default(120),
  // Idempotency-Key on the API's state-changing routes
  IDEMPOTENCY_KEY_TTL_HOURS: z.coerce
    .number()
    .int()
    .min(1)
    .max(24 * 30)
    .default(24),
  IDEMPOTENCY_LEASE_SECONDS: z.coerce.number().int().min(1).max(86_400).default(600),
  CONSOLE_SESSION_IDLE_MINUTES: z.coerce.number().int().min(1).max(1440).default(15),
  CONSOLE_SESSION_MAX_HOURS: z.coerce.number().int().min(1).max(168).default(8),
  BACKUP_KEEP: z.coerce.number().int().min(0).max(100_000).default(14),
  // The audit chain's head, anchored outside the database
  AUDIT_ANCHOR_FILE: optionalString,
  AUDIT_ANCHOR_BATCH_MS: z.coerce.number().int().min(0).max(60_000).default(200),
  // GET /v1/audit/verification walks the whole chain at least this often (0: on every request)
  AUDIT_FULL_VERIFY_MINUTES: z.coerce.number().int().min(0).max(10_080).default(60),
  // GET /v1/posture reuses its fleet-wide counts (scans of every device and certificate) for this long (0: counted for every report)
  POSTURE_FLEET_COUNTS_MAX_AGE_SECONDS: z.coerce.number().int().min(0).max(3_600).default(30),
  // Presence on the bus: pending updates are written this often (or at once when 5,000 identities wait)
  BUS_PRESENCE_FLUSH_MS: z.coerce.number().int().min(10).max(60_000).default(250),
  // ... and at most this many identities wait unwritten while the database is away (further ones are dropped, counted)
  BUS_PRESENCE_MAX_PENDING: z.coerce.number().int().min(1_000).max(10_000_000).default(200_000),
  TRUSTED_PROXIES: optionalString.pipe(
    z
      .string()
      .optional()
      .transform((v, ctx) => {
        const cidrs: Cidr[] = [];
        for (const entry of (v ?? '')
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean)) {
          const cidr = parseCidr(entry);
          if (cidr) cidrs.push(cidr);
          else
            ctx.addIssue({
              code: 'custom',
              message: `${entry} is no IPv4 or IPv6 address or CIDR (comma-separated, e.g. 10.0.0.0/8, 2001:db8::/32)`,
            });
        }
        return cidrs;
      }),
  ),
});

/** The environment variables the service reads and their defaults (for `mqtt-ca --help`), from the schema itself. */
export function settingNames(): { name: string; default: string | undefined }[] {
  const defaults = schema.parse({}) as Record<string, unknown>;
  return Object.keys(schema.shape).map((name) => ({ name, default: defaults[name] === undefined ? undefined : String(defaults[name]) }));
}

export interface Config {
  port: number;
  /** The TLS listener for EST and certificate-authenticated renewal; off when unset. */
  tlsPort: number | undefined;
  host: string;
  /** The timeouts every listener (HTTP and TLS) applies to its clients. */
  listeners: ListenerTimeouts;
  /** EST with HTTP Basic accepted over plain HTTP (a TLS-terminating proxy in front); else TLS only, as RFC 7030 requires. */
  estBasicOverHttp: boolean;
  publicUrl: string;
  dataDir: string;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  adminApiKey: string | undefined;
  kek: string | undefined;
  kekFile: string | undefined;
  logLevel: z.infer<typeof schema>['LOG_LEVEL'];
  /** BODY_LIMIT in bytes (kb and mb are 1024-based). */
  bodyLimitBytes: number;
  /** A CRL's nextUpdate - thisUpdate; it is replaced once less than three quarters of it is left. */
  crlValidityMs: number;
  /** A delta CRL listing more than this makes the full CRL be rebuilt at once rather than after the settle delay. */
  crlDeltaMaxEntries: number;
  /** Issuing CAs' CRL shards for new certificates; 0: one CRL per CA. */
  crlShards: number;
  /** An OCSP response's nextUpdate - thisUpdate (devices, and any profile without its own); pre-signed responses are re-signed at half of it. */
  ocspValidityMs: number;
  /** The same for certificates of the broker profile: short, so a stapling broker re-checks often. */
  ocspBrokerValidityMs: number;
  /** Lifetime of a delegated OCSP responder certificate. */
  ocspResponderDays: number;
  /** Cache-Control max-age of an OCSP GET answer (capped by its nextUpdate): how long an HTTP cache may keep a status. */
  ocspMaxAgeSeconds: number;
  /** Certificates whose OCSP state and responses the responder keeps in memory. */
  ocspCacheEntries: number;
  jobs: {
    /** Redis key prefix of the queues (BullMQ); instances sharing a Redis keep apart by it. */
    prefix: string;
    /** Whether `serve` also runs the job workers (else only `mqtt-ca worker` processes do). */
    inServe: boolean;
    /** How long a worker holds a job before another takes it over (a worker that died). */
    lockMs: number;
    renewalPlanEveryMs: number;
    /** A pending notice whose job has not run for this long is enqueued again (its job was lost with Redis). */
    renewalRedriveMs: number;
    /** How often the housekeeping task runs the waves of issuing-CA rollovers (each rollover keeps its own interval). */
    rolloverTickMs: number;
  };
  /** How many processes `serve` runs (node:cluster, sharing the port); 1 on the embedded store, which one process holds. */
  serveProcesses: number;
  renewalNotices: {
    mqtt?: {
      url: string;
      username?: string | undefined;
      password?: string | undefined;
      caFile?: string | undefined;
      certFile?: string | undefined;
      keyFile?: string | undefined;
      retain: boolean;
      topic: string;
    };
    webhook?: { url: string; secret: string };
  };
  /** Broker connectors (incident actions): Mosquitto dynamic security over MQTT, a signed webhook; each off when unset. */
  brokers: {
    mqtt?: { url: string; username?: string | undefined; password?: string | undefined; caFile?: string | undefined };
    webhook?: { url: string; secret: string };
    /** RabbitMQ's management API (BROKER_RABBITMQ_URL; the password from BROKER_RABBITMQ_PASSWORD or _PASSWORD_FILE). */
    rabbitmq?: { url: string; username: string; password: string; vhost: string };
    /** NATS 2.9: the users file (allowlist) the connector owns, its block list, the reload, the monitor; the periodic sync (0: off). */
    nats?: {
      usersFile: string;
      blockFile?: string | undefined;
      reload: { pidFile: string } | { command: string };
      monitorUrl: string;
      syncMs: number;
    };
    /** The CN of the service's own client certificate, its username on the broker. */
    clientCn: string;
    denyRole: string;
    notifyTopic: string;
    timeoutMs: number;
  };
  /**
   * The brokers that may post events to POST /v1/bus-events (BUS_EVENT_SECRETS or BUS_EVENT_SECRETS_FILE):
   * each one's id, the secret its batches are signed with, and what its webhook reports (the
   * `observes` of its source). Empty: the route answers 404.
   */
  busEventBrokers: BusEventBroker[];
  /**
   * The bus watch (BUS_WATCH, default on when BROKER_MQTT_URL or BUS_WATCH_LOG_FILE is set): the
   * Mosquitto connector's broker's $SYS log, and a Mosquitto log file (BUS_WATCH_LOG_FILE) for the
   * broker BUS_WATCH_LOG_FILE_BROKER.
   */
  busWatch: { enabled: boolean; logFile?: { path: string; broker: string } };
  /** How often housekeeping rotates the session keys that came due (well inside the shortest overlap). */
  sessionKeyRotateEveryMs: number;
  /** How long a session key version is current before the next one replaces it (the default policy; channels carry their own). */
  sessionKeyPeriodMs: number;
  /** How long a replaced session key version stays valid beside its successor (less than the period). */
  sessionKeyOverlapMs: number;
  approvals: {
    /** How long a proposal waits for its second person before it expires. */
    ttlMs: number;
    /** A bulk revocation that would revoke more than this many certificates takes approval; 0: never. */
    bulkRevokeThreshold: number;
    /** A bulk revocation larger than this runs in chunks of this many certificates, each its own transaction. */
    bulkRevokeChunkSize: number;
  };
  backups: {
    /** Where backups are written (BACKUP_DIR, default DATA_DIR/backups). */
    dir: string;
    /** How often the scheduled backup runs; 0: never (BACKUP_EVERY_HOURS). */
    everyMs: number;
    /** How many backup files made here are kept; older ones are deleted, their records stay; 0: all (BACKUP_KEEP). */
    keep: number;
  };
  audit: {
    /** The signed checkpoint of the audit chain's head, outside the database (AUDIT_ANCHOR_FILE, default DATA_DIR/audit-anchor). */
    anchorFile: string;
    /** Appends within this many ms share one checkpoint (AUDIT_ANCHOR_BATCH_MS): the window in which a deleted tail is not anchored yet. */
    anchorBatchMs: number;
    /**
     * GET /v1/audit/verification walks only the entries after the newest one this process found
     * intact, for this long after its last walk of the whole chain (AUDIT_FULL_VERIFY_MINUTES; 0: always the whole chain).
     */
    fullVerifyEveryMs: number;
  };
  /** GET /v1/posture reuses its fleet-wide counts this long (POSTURE_FLEET_COUNTS_MAX_AGE_SECONDS; 0: counted for every report; `?fresh=true` counts anew). */
  postureFleetCountsMaxAgeMs: number;
  /** Presence on the bus: pending updates written every `flushMs` (BUS_PRESENCE_FLUSH_MS); at most `maxPending` identities wait unwritten (BUS_PRESENCE_MAX_PENDING). */
  busPresence: { flushMs: number; maxPending: number };
  /** The detection rules and their automatic responses (DETECTION_RULES, a JSON array; default DEFAULT_RULES). */
  detectionRules: DetectionRule[];
  /** Requests per second and burst per scope (API_RATE_PER_SOURCE, API_RATE_PER_KEY, ENROLL_RATE_PER_SOURCE); undefined: no limit. Shared through Redis when REDIS_URL is set. */
  rateLimits: Record<RateScope, Limit | undefined>;
  /** OCSP answers and CRL/CA bodies being worked on at once; beyond, OCSP says tryLater and CRLs 503 (0: no bound). */
  pkiMaxInFlight: number;
  /** How long an enrollment may stay unfinished before a retry takes its process for dead and settles what it left (ENROLL_RECOVERY_SECONDS). */
  enrollRecoveryMs: number;
  /** Idempotency-Key on the API's state-changing routes: a key is forgotten this long after its request (IDEMPOTENCY_KEY_TTL_HOURS); a request unfinished after `leaseMs` is taken for dead and a repeat runs it (IDEMPOTENCY_LEASE_SECONDS). */
  idempotency: { ttlMs: number; leaseMs: number };
  /** Web console sessions: ended when unused this long (CONSOLE_SESSION_IDLE_MINUTES) and this long after sign-in (CONSOLE_SESSION_MAX_HOURS). */
  consoleSessions: { idleMs: number; absoluteMs: number };
  /** The proxies whose X-Forwarded-For names the client (TRUSTED_PROXIES); none: the peer is the client. */
  trustedProxies: Cidr[];
}

export interface BusEventBroker {
  id: string;
  secret: string;
  reports: 'emqx' | 'generic';
}

/** BUS_EVENT_SECRETS: `{ "<broker id>": "<secret>" }` or `{ "<broker id>": { "secret": "...", "reports": "emqx" | "generic" } }`. */
const BROKER_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const busEventSecret = z.string().min(32, 'must be at least 32 characters').max(1024, 'at most 1024 characters');
const busEventSecretsSchema = z
  .record(
    z.string().regex(BROKER_ID, 'a broker id: letters, digits, . _ : - (at most 64)'),
    z.union([busEventSecret, z.object({ secret: busEventSecret, reports: z.enum(['emqx', 'generic']).default('emqx') }).strict()], {
      error: 'a secret (at least 32 characters), or { "secret": "...", "reports": "emqx" | "generic" }',
    }),
  )
  .refine((m) => Object.keys(m).length > 0, 'name at least one broker (or leave it unset)');

/** The RabbitMQ management password, inline or from a file (its first line); never part of a message. */
function rabbitPassword(inline: string | undefined, file: string | undefined): string {
  if (inline && file)
    throw new ConfigError('invalid configuration:\n  BROKER_RABBITMQ_PASSWORD and BROKER_RABBITMQ_PASSWORD_FILE: set one, not both');
  if (inline) return inline;
  if (!file)
    throw new ConfigError('invalid configuration:\n  BROKER_RABBITMQ_URL: needs BROKER_RABBITMQ_PASSWORD or BROKER_RABBITMQ_PASSWORD_FILE');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(
      `invalid configuration:\n  BROKER_RABBITMQ_PASSWORD_FILE: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  const password = text.split(/\r?\n/)[0]!;
  if (!password) throw new ConfigError(`invalid configuration:\n  BROKER_RABBITMQ_PASSWORD_FILE: ${file} is empty`);
  return password;
}

function busEventBrokers(inline: string | undefined, file: string | undefined): BusEventBroker[] {
  if (inline && file) throw new ConfigError('invalid configuration:\n  BUS_EVENT_SECRETS and BUS_EVENT_SECRETS_FILE: set one, not both');
  const name = file ? 'BUS_EVENT_SECRETS_FILE' : 'BUS_EVENT_SECRETS';
  let json = inline;
  if (file) {
    try {
      json = readFileSync(file, 'utf8');
    } catch (e) {
      throw new ConfigError(
        `invalid configuration:\n  BUS_EVENT_SECRETS_FILE: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
      );
    }
  }
  if (json === undefined) return [];
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    throw new ConfigError(`invalid configuration:\n  ${name}: not JSON (an object of broker id -> secret)`);
  }
  const badId =
    value && typeof value === 'object' && !Array.isArray(value) ? Object.keys(value).find((k) => !BROKER_ID.test(k)) : undefined;
  if (badId !== undefined)
    throw new ConfigError(
      `invalid configuration:\n  ${name}: ${JSON.stringify(badId.slice(0, 64))} is not a broker id (letters, digits, . _ : -, at most 64)`,
    );
  const parsed = busEventSecretsSchema.safeParse(value);
  if (!parsed.success) {
    // The secrets stay out of the message: only where and what is wrong.
    const lines = parsed.error.issues.map((i) => `${name}${i.path.length ? `.${i.path.join('.')}` : ''}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  return Object.entries(parsed.data).map(([id, v]) =>
    typeof v === 'string' ? { id, secret: v, reports: 'emqx' as const } : { id, secret: v.secret, reports: v.reports },
  );
}

export interface ListenerTimeouts {
  /** A client must have sent its whole request header within this (the TLS handshake too, on the TLS listener). */
  headersMs: number;
  /** ... and its whole request within this. */
  requestMs: number;
  /** An idle kept-alive connection is closed after this. */
  keepAliveMs: number;
}

function byteSize(limit: string): number {
  const [, n, unit] = /^(\d+)(b|kb|mb)$/i.exec(limit)!;
  return Number(n) * { b: 1, kb: 1024, mb: 1024 * 1024 }[unit!.toLowerCase() as 'b' | 'kb' | 'mb'];
}

/** Reads and validates the environment once; everything inside trusts the typed result. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const e = parsed.data;
  if (e.MQTT_CA_KEK && e.MQTT_CA_KEK_FILE) {
    throw new ConfigError('invalid configuration:\n  MQTT_CA_KEK and MQTT_CA_KEK_FILE: set one, not both');
  }
  if (e.OCSP_RESPONDER_DAYS * 24 < 4 * e.OCSP_VALIDITY_HOURS) {
    throw new ConfigError(
      'invalid configuration:\n  OCSP_RESPONDER_DAYS: a responder certificate must outlive four OCSP responses (OCSP_VALIDITY_HOURS)',
    );
  }
  if (e.OCSP_RESPONDER_DAYS * 24 * 60 < 4 * e.OCSP_BROKER_VALIDITY_MINUTES) {
    throw new ConfigError(
      'invalid configuration:\n  OCSP_RESPONDER_DAYS: a responder certificate must outlive four OCSP responses (OCSP_BROKER_VALIDITY_MINUTES)',
    );
  }
  if (e.RENEWAL_WEBHOOK_URL && !e.RENEWAL_WEBHOOK_SECRET) {
    throw new ConfigError(
      'invalid configuration:\n  RENEWAL_WEBHOOK_SECRET: required with RENEWAL_WEBHOOK_URL (the receiver checks the signature with it)',
    );
  }
  if (Boolean(e.RENEWAL_MQTT_CERT_FILE) !== Boolean(e.RENEWAL_MQTT_KEY_FILE)) {
    throw new ConfigError('invalid configuration:\n  RENEWAL_MQTT_CERT_FILE and RENEWAL_MQTT_KEY_FILE: set both or neither');
  }
  if (e.BROKER_NATS_USERS_FILE) {
    if (!e.BROKER_NATS_MONITOR_URL)
      throw new ConfigError(
        'invalid configuration:\n  BROKER_NATS_MONITOR_URL: required with BROKER_NATS_USERS_FILE (the connector confirms there)',
      );
    if (Boolean(e.BROKER_NATS_PID_FILE) === Boolean(e.BROKER_NATS_RELOAD_COMMAND))
      throw new ConfigError(
        'invalid configuration:\n  BROKER_NATS_PID_FILE or BROKER_NATS_RELOAD_COMMAND: exactly one, with BROKER_NATS_USERS_FILE (how the server is reloaded)',
      );
  } else if (e.BROKER_NATS_PID_FILE || e.BROKER_NATS_RELOAD_COMMAND || e.BROKER_NATS_MONITOR_URL || e.BROKER_NATS_BLOCK_FILE) {
    throw new ConfigError('invalid configuration:\n  BROKER_NATS_USERS_FILE: required with the other BROKER_NATS_ settings');
  }
  if (e.BROKER_WEBHOOK_URL && !e.BROKER_WEBHOOK_SECRET) {
    throw new ConfigError(
      'invalid configuration:\n  BROKER_WEBHOOK_SECRET: required with BROKER_WEBHOOK_URL (the receiver checks the signature with it)',
    );
  }
  if (e.BROKER_MQTT_URL?.startsWith('mqtt://') && !(e.BROKER_MQTT_USERNAME && e.BROKER_MQTT_PASSWORD)) {
    throw new ConfigError(
      "invalid configuration:\n  BROKER_MQTT_URL: a plain mqtt:// broker needs BROKER_MQTT_USERNAME and BROKER_MQTT_PASSWORD (or use mqtts:// with the service's client certificate)",
    );
  }
  if (Boolean(e.BROKER_MQTT_USERNAME) !== Boolean(e.BROKER_MQTT_PASSWORD)) {
    throw new ConfigError('invalid configuration:\n  BROKER_MQTT_USERNAME and BROKER_MQTT_PASSWORD: set both or neither');
  }
  if (!e.BROKER_RABBITMQ_URL && (e.BROKER_RABBITMQ_USERNAME || e.BROKER_RABBITMQ_PASSWORD || e.BROKER_RABBITMQ_PASSWORD_FILE)) {
    throw new ConfigError('invalid configuration:\n  BROKER_RABBITMQ_URL: required with BROKER_RABBITMQ_USERNAME or its password');
  }
  if (!e.BROKER_MQTT_URL && (e.BROKER_MQTT_USERNAME || e.BROKER_CA_FILE)) {
    throw new ConfigError('invalid configuration:\n  BROKER_MQTT_URL: required with BROKER_MQTT_USERNAME or BROKER_CA_FILE');
  }
  if (e.SESSION_KEY_OVERLAP_HOURS >= e.SESSION_KEY_PERIOD_HOURS) {
    throw new ConfigError('invalid configuration:\n  SESSION_KEY_OVERLAP_HOURS: the overlap must be shorter than SESSION_KEY_PERIOD_HOURS');
  }
  if (e.HTTP_HEADERS_TIMEOUT_SECONDS > e.HTTP_REQUEST_TIMEOUT_SECONDS) {
    throw new ConfigError(
      'invalid configuration:\n  HTTP_HEADERS_TIMEOUT_SECONDS: must not exceed HTTP_REQUEST_TIMEOUT_SECONDS (the header is part of the request)',
    );
  }
  if (!e.DATABASE_URL && e.SERVE_PROCESSES !== 'auto' && e.SERVE_PROCESSES !== '1') {
    throw new ConfigError(
      'invalid configuration:\n  SERVE_PROCESSES: the embedded store (no DATABASE_URL) is opened by one process only; use PostgreSQL for more',
    );
  }
  if (e.BUS_WATCH === 'on' && !e.BROKER_MQTT_URL && !e.BUS_WATCH_LOG_FILE) {
    throw new ConfigError('invalid configuration:\n  BUS_WATCH: on needs something to watch (BROKER_MQTT_URL or BUS_WATCH_LOG_FILE)');
  }
  const publicUrl = (e.PUBLIC_URL ?? `http://${e.HOST === '0.0.0.0' ? '127.0.0.1' : e.HOST}:${e.PORT}`).replace(/\/+$/, '');
  return {
    port: e.PORT,
    tlsPort: e.TLS_PORT,
    host: e.HOST,
    listeners: {
      headersMs: e.HTTP_HEADERS_TIMEOUT_SECONDS * 1000,
      requestMs: e.HTTP_REQUEST_TIMEOUT_SECONDS * 1000,
      keepAliveMs: e.HTTP_KEEPALIVE_TIMEOUT_SECONDS * 1000,
    },
    estBasicOverHttp: e.EST_BASIC_OVER_HTTP === 'true',
    publicUrl,
    dataDir: resolve(e.DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    adminApiKey: e.ADMIN_API_KEY,
    kek: e.MQTT_CA_KEK,
    kekFile: e.MQTT_CA_KEK_FILE,
    logLevel: e.LOG_LEVEL,
    bodyLimitBytes: byteSize(e.BODY_LIMIT),
    crlValidityMs: e.CRL_VALIDITY_HOURS * 3_600_000,
    crlDeltaMaxEntries: e.CRL_DELTA_MAX_ENTRIES,
    crlShards: e.CRL_SHARDS,
    ocspValidityMs: e.OCSP_VALIDITY_HOURS * 3_600_000,
    ocspBrokerValidityMs: e.OCSP_BROKER_VALIDITY_MINUTES * 60_000,
    ocspResponderDays: e.OCSP_RESPONDER_DAYS,
    ocspMaxAgeSeconds: e.OCSP_MAX_AGE_SECONDS,
    ocspCacheEntries: e.OCSP_CACHE_ENTRIES,
    jobs: {
      prefix: e.JOBS_PREFIX,
      inServe: e.JOBS_IN_SERVE === 'true',
      lockMs: e.JOB_LOCK_SECONDS * 1000,
      renewalPlanEveryMs: e.RENEWAL_PLAN_SECONDS * 1000,
      renewalRedriveMs: e.RENEWAL_REDRIVE_SECONDS * 1000,
      rolloverTickMs: e.ROLLOVER_TICK_SECONDS * 1000,
    },
    serveProcesses: e.SERVE_PROCESSES === 'auto' ? (e.DATABASE_URL ? availableParallelism() : 1) : Number(e.SERVE_PROCESSES),
    renewalNotices: {
      ...(e.RENEWAL_MQTT_URL
        ? {
            mqtt: {
              url: e.RENEWAL_MQTT_URL,
              username: e.RENEWAL_MQTT_USERNAME,
              password: e.RENEWAL_MQTT_PASSWORD,
              caFile: e.RENEWAL_MQTT_CA_FILE,
              certFile: e.RENEWAL_MQTT_CERT_FILE,
              keyFile: e.RENEWAL_MQTT_KEY_FILE,
              retain: e.RENEWAL_MQTT_RETAIN === 'true',
              topic: e.RENEWAL_TOPIC,
            },
          }
        : {}),
      ...(e.RENEWAL_WEBHOOK_URL ? { webhook: { url: e.RENEWAL_WEBHOOK_URL, secret: e.RENEWAL_WEBHOOK_SECRET! } } : {}),
    },
    brokers: {
      ...(e.BROKER_MQTT_URL
        ? { mqtt: { url: e.BROKER_MQTT_URL, username: e.BROKER_MQTT_USERNAME, password: e.BROKER_MQTT_PASSWORD, caFile: e.BROKER_CA_FILE } }
        : {}),
      ...(e.BROKER_WEBHOOK_URL ? { webhook: { url: e.BROKER_WEBHOOK_URL, secret: e.BROKER_WEBHOOK_SECRET! } } : {}),
      ...(e.BROKER_RABBITMQ_URL
        ? {
            rabbitmq: {
              url: e.BROKER_RABBITMQ_URL,
              username: e.BROKER_RABBITMQ_USERNAME ?? e.BROKER_CLIENT_CN,
              password: rabbitPassword(e.BROKER_RABBITMQ_PASSWORD, e.BROKER_RABBITMQ_PASSWORD_FILE),
              vhost: e.BROKER_RABBITMQ_VHOST,
            },
          }
        : {}),
      ...(e.BROKER_NATS_USERS_FILE
        ? {
            nats: {
              usersFile: resolve(e.BROKER_NATS_USERS_FILE),
              blockFile: e.BROKER_NATS_BLOCK_FILE ? resolve(e.BROKER_NATS_BLOCK_FILE) : undefined,
              reload: e.BROKER_NATS_PID_FILE ? { pidFile: resolve(e.BROKER_NATS_PID_FILE) } : { command: e.BROKER_NATS_RELOAD_COMMAND! },
              monitorUrl: e.BROKER_NATS_MONITOR_URL!,
              syncMs: e.BROKER_NATS_SYNC_SECONDS * 1000,
            },
          }
        : {}),
      clientCn: e.BROKER_CLIENT_CN,
      denyRole: e.BROKER_DENY_ROLE,
      notifyTopic: e.BROKER_NOTIFY_TOPIC,
      timeoutMs: e.BROKER_TIMEOUT_SECONDS * 1000,
    },
    busEventBrokers: busEventBrokers(e.BUS_EVENT_SECRETS, e.BUS_EVENT_SECRETS_FILE),
    busWatch: {
      enabled:
        e.BUS_WATCH === undefined
          ? Boolean(e.BROKER_MQTT_URL || e.BUS_WATCH_LOG_FILE || e.BUS_EVENT_SECRETS || e.BUS_EVENT_SECRETS_FILE)
          : e.BUS_WATCH === 'on',
      ...(e.BUS_WATCH_LOG_FILE ? { logFile: { path: resolve(e.BUS_WATCH_LOG_FILE), broker: e.BUS_WATCH_LOG_FILE_BROKER } } : {}),
    },
    sessionKeyRotateEveryMs: e.SESSION_KEY_ROTATE_SECONDS * 1000,
    sessionKeyPeriodMs: e.SESSION_KEY_PERIOD_HOURS * 3_600_000,
    sessionKeyOverlapMs: e.SESSION_KEY_OVERLAP_HOURS * 3_600_000,
    approvals: {
      ttlMs: e.APPROVAL_TTL_HOURS * 3_600_000,
      bulkRevokeThreshold: e.BULK_REVOKE_APPROVAL_THRESHOLD,
      bulkRevokeChunkSize: e.BULK_REVOKE_CHUNK_SIZE,
    },
    backups: {
      dir: resolve(e.BACKUP_DIR ?? join(e.DATA_DIR, 'backups')),
      everyMs: Math.round(e.BACKUP_EVERY_HOURS * 3_600_000),
      keep: e.BACKUP_KEEP,
    },
    audit: {
      anchorFile: resolve(e.AUDIT_ANCHOR_FILE ?? join(e.DATA_DIR, 'audit-anchor')),
      anchorBatchMs: e.AUDIT_ANCHOR_BATCH_MS,
      fullVerifyEveryMs: e.AUDIT_FULL_VERIFY_MINUTES * 60_000,
    },
    postureFleetCountsMaxAgeMs: e.POSTURE_FLEET_COUNTS_MAX_AGE_SECONDS * 1000,
    busPresence: { flushMs: e.BUS_PRESENCE_FLUSH_MS, maxPending: e.BUS_PRESENCE_MAX_PENDING },
    detectionRules: e.DETECTION_RULES === undefined ? DEFAULT_RULES : detectionRules(e.DETECTION_RULES),
    rateLimits: {
      'api-source': rate(e.API_RATE_PER_SOURCE),
      'api-key': rate(e.API_RATE_PER_KEY),
      'enroll-source': rate(e.ENROLL_RATE_PER_SOURCE),
    },
    pkiMaxInFlight: e.PKI_MAX_IN_FLIGHT,
    enrollRecoveryMs: e.ENROLL_RECOVERY_SECONDS * 1000,
    idempotency: { ttlMs: e.IDEMPOTENCY_KEY_TTL_HOURS * 3_600_000, leaseMs: e.IDEMPOTENCY_LEASE_SECONDS * 1000 },
    consoleSessions: { idleMs: e.CONSOLE_SESSION_IDLE_MINUTES * 60_000, absoluteMs: e.CONSOLE_SESSION_MAX_HOURS * 3_600_000 },
    trustedProxies: e.TRUSTED_PROXIES,
  };
}

/** `rate[/burst]`; the burst is two seconds' worth unless given. */
function rate(setting: string): Limit | undefined {
  const [r, b] = setting.split('/');
  const perSecond = Number(r);
  if (perSecond === 0) return undefined;
  return { perSecond, burst: b === undefined ? Math.max(1, Math.round(2 * perSecond)) : Math.max(1, Number(b)) };
}

function detectionRules(json: string): DetectionRule[] {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    throw new ConfigError('invalid configuration:\n  DETECTION_RULES: not JSON (a JSON array of rules)');
  }
  const parsed = rulesSchema.safeParse(value);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `DETECTION_RULES.${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  return parsed.data;
}
