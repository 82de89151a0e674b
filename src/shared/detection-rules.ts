import { z } from 'zod';
import { INCIDENT_KINDS, SEVERITIES } from './security-terms.js';
import { DISCONNECT_REASONS, TLS_FAILURES } from './bus-terms.js';

/** What event rules (`on: [...]`) may do. */
export const EVENT_RULE_ACTIONS = ['block-source', 'suspend-device', 'open-incident'] as const;
/** What watch rules (`watch: '<detector>'`) may do: also act on the client at the brokers. */
export const WATCH_RULE_ACTIONS = ['block-client', 'disconnect-client', 'suspend-device', 'open-incident', 'block-source'] as const;
export const RESPONSE_ACTIONS = ['block-source', 'suspend-device', 'open-incident', 'block-client', 'disconnect-client'] as const;
export type ResponseAction = (typeof RESPONSE_ACTIONS)[number];

const kind = z.string().regex(/^[a-z0-9.-]{1,64}$/, 'an event kind: lower-case letters, digits, . and -');
const name = z.string().regex(/^[a-z0-9-]{1,64}$/, 'lower-case letters, digits and -');
const severity = z.enum(SEVERITIES as [string, ...string[]]).transform((s) => s as (typeof SEVERITIES)[number]);
const incidentKind = z.enum(INCIDENT_KINDS as [string, ...string[]]).default('device-compromise');
const windowSeconds = z
  .number()
  .int()
  .min(1)
  .max(7 * 86_400);
const threshold = z.number().int().min(1).max(100_000);

/**
 * An event rule: `threshold` events of the `on` kinds for one source (client address) or one
 * subject (device, token, ...) within `windowSeconds` raise an event of their own and run the
 * rule's automatic responses. After firing, the key is not counted again for `cooldownSeconds`.
 */
export const eventRuleSchema = z
  .object({
    name,
    on: z.array(kind).min(1),
    per: z.enum(['source', 'subject']),
    threshold,
    windowSeconds,
    cooldownSeconds: z
      .number()
      .int()
      .min(0)
      .max(7 * 86_400)
      .default(0),
    raise: z.object({ kind, severity }),
    actions: z.array(z.enum(EVENT_RULE_ACTIONS)).default([]),
    /** The kind of incident open-incident opens. */
    incidentKind,
  })
  .strict()
  .refine((r) => !r.on.includes(r.raise.kind), { message: 'a rule may not count the kind it raises' })
  .refine((r) => !(r.actions.includes('block-source') && r.per !== 'source'), { message: 'block-source needs per: source' })
  .refine((r) => !(r.actions.includes('suspend-device') && r.per !== 'subject'), {
    message: 'suspend-device needs per: subject (the device)',
  });

export type EventRule = z.infer<typeof eventRuleSchema>;

/** The detectors of the bus watch (src/detect/bus-detectors.ts). */
export const WATCH_DETECTORS = [
  'connect-attempts',
  'abnormal-terminations',
  'tls-failures',
  'topic-scan',
  'undeliverable',
  'idle-connected',
  'silent',
  'revoked-certificate',
  'client-id-two-sources',
] as const;
export type WatchDetector = (typeof WATCH_DETECTORS)[number];

/** The ends abnormal-terminations counts unless its rule says otherwise. */
export const ABNORMAL_REASONS = ['keepalive-timeout', 'connection-lost', 'socket-error', 'protocol-error', 'malformed-packet'] as const;

/** What every watch rule has: what it raises and what it does about it. */
const watchCommon = {
  name,
  raise: z.object({
    kind: kind.refine((k) => k.startsWith('bus.'), { message: 'a watch rule raises a bus.<...> kind' }),
    severity,
  }),
  actions: z.array(z.enum(WATCH_RULE_ACTIONS)).default([]),
  incidentKind,
};

const watchRules = [
  z.strictObject({
    ...watchCommon,
    watch: z.literal('connect-attempts'),
    per: z.enum(['client', 'device', 'source']),
    threshold,
    windowSeconds,
  }),
  z.strictObject({
    ...watchCommon,
    watch: z.literal('abnormal-terminations'),
    per: z.enum(['device', 'client', 'source']),
    threshold,
    windowSeconds,
    reasons: z
      .array(z.enum(DISCONNECT_REASONS))
      .min(1)
      .default([...ABNORMAL_REASONS]),
  }),
  z.strictObject({
    ...watchCommon,
    watch: z.literal('tls-failures'),
    per: z.literal('source'),
    threshold,
    windowSeconds,
    failures: z
      .array(z.enum(TLS_FAILURES))
      .min(1)
      .default([...TLS_FAILURES]),
  }),
  z
    .strictObject({
      ...watchCommon,
      watch: z.literal('topic-scan'),
      per: z.enum(['client', 'device']),
      /** Distinct topics (subscribed, denied, published) in the window. */
      distinctTopics: z.number().int().min(2).max(10_000).optional(),
      /** ACL denials in the window. */
      denials: z.number().int().min(1).max(10_000).optional(),
      windowSeconds,
    })
    .refine((r) => r.distinctTopics !== undefined || r.denials !== undefined, {
      message: 'topic-scan needs distinctTopics, denials or both',
      path: ['distinctTopics'],
    }),
  z.strictObject({
    ...watchCommon,
    watch: z.literal('undeliverable'),
    per: z.enum(['client', 'device']),
    threshold,
    windowSeconds,
  }),
  z.strictObject({
    ...watchCommon,
    watch: z.literal('idle-connected'),
    per: z.enum(['client', 'device']),
    /** Connected this long without a publish or a subscribe. */
    idleSeconds: z
      .number()
      .int()
      .min(10)
      .max(30 * 86_400),
  }),
  z.strictObject({
    ...watchCommon,
    watch: z.literal('silent'),
    per: z.literal('device'),
    /** Not seen on any watched broker for this long. */
    silentAfterSeconds: z
      .number()
      .int()
      .min(60)
      .max(365 * 86_400),
    /** Only the devices of this lot. */
    lot: z.string().min(1).max(200).optional(),
    /** Only the devices of this certificate profile (device: client devices, broker: brokers). */
    profile: z.enum(['device', 'broker']).optional(),
    /** The most devices one sweep reports. */
    limit: z.number().int().min(1).max(10_000).default(1000),
  }),
  z.strictObject({
    ...watchCommon,
    watch: z.literal('revoked-certificate'),
    per: z.literal('device'),
    /** An episode ends when no such connect was seen for this long. */
    windowSeconds: windowSeconds.default(3600),
  }),
  z.strictObject({
    ...watchCommon,
    watch: z.literal('client-id-two-sources'),
    per: z.literal('client'),
    /** Distinct hosts within the window. */
    threshold: z.number().int().min(2).max(100).default(2),
    windowSeconds,
  }),
] as const;

const PER_CLIENT_ACTIONS = ['block-client', 'disconnect-client', 'suspend-device'] as const;

/**
 * A watch rule: counted by the bus detectors on the broker's events (not on recorded security
 * events), firing once per episode: a key fires at its threshold, then stays quiet until
 * `windowSeconds` pass with no hit, then re-arms.
 */
export const watchRuleSchema = z
  .discriminatedUnion('watch', watchRules, { error: () => `watch must be one of ${WATCH_DETECTORS.join(', ')}` })
  .superRefine((r, ctx) => {
    for (const a of PER_CLIENT_ACTIONS)
      if (r.actions.includes(a) && r.per !== 'client' && r.per !== 'device')
        ctx.addIssue({ code: 'custom', path: ['actions'], message: `${a} needs per: client or device` });
    if (r.actions.includes('block-source') && r.per !== 'source')
      ctx.addIssue({ code: 'custom', path: ['actions'], message: 'block-source needs per: source' });
  });

export type WatchRule = z.infer<typeof watchRuleSchema>;
export type DetectionRule = EventRule | WatchRule;

export const isWatchRule = (r: DetectionRule): r is WatchRule => 'watch' in r;
export const isEventRule = (r: DetectionRule): r is EventRule => !('watch' in r);

/** Either form: a rule with `watch` is a watch rule, any other an event rule (so each gets its own errors). */
export const ruleSchema = z.unknown().transform((value, ctx): DetectionRule => {
  const watch = value !== null && typeof value === 'object' && 'watch' in value;
  const parsed = watch ? watchRuleSchema.safeParse(value) : eventRuleSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  for (const issue of parsed.error.issues) ctx.addIssue({ ...issue, code: 'custom', message: issue.message, path: issue.path } as never);
  return z.NEVER;
});

export const rulesSchema = z
  .array(ruleSchema)
  .max(100)
  .refine((rules) => new Set(rules.map((r) => r.name)).size === rules.length, { message: 'rule names must be unique' });

/** The failures that count against a client address. */
const SOURCE_FAILURES = ['enrollment.refused', 'enrollment.token-invalid', 'enrollment.unknown-identity', 'auth.failed'];

/** What runs unless DETECTION_RULES says otherwise. */
export const DEFAULT_RULES: DetectionRule[] = rulesSchema.parse([
  {
    // Enrollment and the API refuse the address for a time (10 s, doubling while it keeps failing).
    name: 'failing-source',
    on: SOURCE_FAILURES,
    per: 'source',
    threshold: 10,
    windowSeconds: 60,
    raise: { kind: 'source.blocked', severity: 'warning' },
    actions: ['block-source'],
  },
  {
    // Tokens that do not exist, from one address: someone is guessing.
    name: 'token-guessing',
    on: ['enrollment.token-invalid'],
    per: 'source',
    threshold: 5,
    windowSeconds: 600,
    cooldownSeconds: 3600,
    raise: { kind: 'enrollment.token-guessing', severity: 'critical' },
    actions: ['open-incident'],
    incidentKind: 'credential-leak',
  },
  {
    // A device's own credential keeps asking for what it may not have (other names, CA rights,
    // renewal past its grace): the device is held (certificateHold) until an operator looks.
    name: 'failing-identity',
    on: ['enrollment.refused'],
    per: 'subject',
    threshold: 5,
    windowSeconds: 600,
    cooldownSeconds: 600,
    raise: { kind: 'identity.repeated-failures', severity: 'warning' },
    actions: ['suspend-device'],
  },
  // The bus watch (issue 26): counted on the brokers' events.
  {
    // One client id connecting again and again: a reconnect loop (a crash loop, a fight over the id, a stolen key).
    name: 'bus-reconnect-loop',
    watch: 'connect-attempts',
    per: 'client',
    threshold: 20,
    windowSeconds: 60,
    raise: { kind: 'bus.reconnect-loop', severity: 'warning' },
  },
  {
    // Many connects from one address (a gateway carries many devices: set high).
    name: 'bus-connect-flood',
    watch: 'connect-attempts',
    per: 'source',
    threshold: 200,
    windowSeconds: 60,
    raise: { kind: 'bus.connect-flood', severity: 'warning' },
  },
  {
    name: 'bus-abnormal-terminations',
    watch: 'abnormal-terminations',
    per: 'device',
    threshold: 5,
    windowSeconds: 600,
    raise: { kind: 'bus.abnormal-terminations', severity: 'warning' },
  },
  {
    // Revoked, expired and foreign-CA certificates, and none at all, from one address.
    name: 'bus-tls-failures',
    watch: 'tls-failures',
    per: 'source',
    threshold: 10,
    windowSeconds: 300,
    raise: { kind: 'bus.tls-failures', severity: 'warning' },
  },
  {
    // A client trying many topics, or refused again and again: blocked at the brokers, and an incident.
    name: 'bus-topic-scan',
    watch: 'topic-scan',
    per: 'client',
    distinctTopics: 50,
    denials: 10,
    windowSeconds: 60,
    raise: { kind: 'bus.topic-scan', severity: 'critical' },
    actions: ['block-client', 'open-incident'],
  },
  {
    name: 'bus-undeliverable',
    watch: 'undeliverable',
    per: 'client',
    threshold: 100,
    windowSeconds: 60,
    raise: { kind: 'bus.undeliverable', severity: 'warning' },
  },
  {
    name: 'bus-idle-connected',
    watch: 'idle-connected',
    per: 'client',
    idleSeconds: 3600,
    raise: { kind: 'bus.idle-connected', severity: 'info' },
  },
  {
    name: 'bus-silent',
    watch: 'silent',
    per: 'device',
    silentAfterSeconds: 86_400,
    raise: { kind: 'bus.silent', severity: 'warning' },
  },
  {
    // The broker let in a device that is revoked, suspended or decommissioned, or a superseded
    // certificate: its CRL is behind. Blocked at the brokers, and an incident.
    name: 'bus-revoked-certificate',
    watch: 'revoked-certificate',
    per: 'device',
    windowSeconds: 3600,
    raise: { kind: 'bus.revoked-certificate', severity: 'critical' },
    actions: ['block-client', 'open-incident'],
  },
  {
    name: 'bus-client-id-two-sources',
    watch: 'client-id-two-sources',
    per: 'client',
    threshold: 2,
    windowSeconds: 300,
    raise: { kind: 'bus.client-id-two-sources', severity: 'warning' },
  },
]);
