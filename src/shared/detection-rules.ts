import { z } from 'zod';
import { INCIDENT_KINDS, SEVERITIES } from './security-terms.js';

export const RESPONSE_ACTIONS = ['block-source', 'suspend-device', 'open-incident'] as const;
export type ResponseAction = (typeof RESPONSE_ACTIONS)[number];

const kind = z.string().regex(/^[a-z0-9.-]{1,64}$/, 'an event kind: lower-case letters, digits, . and -');

/**
 * A detection rule: `threshold` events of the `on` kinds for one source (client address) or one
 * subject (device, token, ...) within `windowSeconds` raise an event of their own and run the
 * rule's automatic responses. After firing, the key is not counted again for `cooldownSeconds`.
 */
export const ruleSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9-]{1,64}$/, 'lower-case letters, digits and -'),
    on: z.array(kind).min(1),
    per: z.enum(['source', 'subject']),
    threshold: z.number().int().min(1).max(100_000),
    windowSeconds: z
      .number()
      .int()
      .min(1)
      .max(7 * 86_400),
    cooldownSeconds: z
      .number()
      .int()
      .min(0)
      .max(7 * 86_400)
      .default(0),
    raise: z.object({ kind, severity: z.enum(SEVERITIES as [string, ...string[]]).transform((s) => s as (typeof SEVERITIES)[number]) }),
    actions: z.array(z.enum(RESPONSE_ACTIONS)).default([]),
    /** The kind of incident open-incident opens. */
    incidentKind: z.enum(INCIDENT_KINDS as [string, ...string[]]).default('device-compromise'),
  })
  .strict()
  .refine((r) => !r.on.includes(r.raise.kind), { message: 'a rule may not count the kind it raises' })
  .refine((r) => !(r.actions.includes('block-source') && r.per !== 'source'), { message: 'block-source needs per: source' })
  .refine((r) => !(r.actions.includes('suspend-device') && r.per !== 'subject'), {
    message: 'suspend-device needs per: subject (the device)',
  });

export type DetectionRule = z.infer<typeof ruleSchema>;

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
]);
