import { randomBytes, timingSafeEqual } from 'node:crypto';
import { DomainError } from '../shared/errors.js';
import { webhookSignature } from '../shared/webhook-signature.js';

/** How far a signed batch's timestamp may be from now, either way. */
export const BUS_EVENT_SKEW_SECONDS = 300;

export interface SignedBatchHeaders {
  /** X-MqttCa-Broker */
  broker: string | undefined;
  /** X-MqttCa-Timestamp: Unix seconds. */
  timestamp: string | undefined;
  /** X-MqttCa-Signature: `sha256=<64 hex>`. */
  signature: string | undefined;
}

/** Every refusal says the same: which of broker, signature or time was wrong is not told. */
const refused = () => new DomainError('Unauthenticated', 'the batch is not signed by a known broker within the time allowed');

/** The key compared against for an unknown broker, so that it costs what a known one does. */
const DUMMY_SECRET = randomBytes(32).toString('hex');

/**
 * Checks a batch's signature: the broker named is one of `secrets`, the timestamp is within
 * BUS_EVENT_SKEW_SECONDS of `now`, and the signature is HMAC-SHA256(secret, timestamp + "." + body),
 * compared in constant time. Returns the broker and the timestamp; throws Unauthenticated (401),
 * the same for each failure. A replay (the same signature again) is the caller's check.
 */
export function verifyBusEventSignature(
  secrets: ReadonlyMap<string, string>,
  h: SignedBatchHeaders,
  body: Buffer,
  now: Date,
): { broker: string; timestamp: number; signature: Buffer } {
  const presented = /^sha256=([0-9a-f]{64})$/i.exec(h.signature ?? '');
  const ts = /^\d{1,12}$/.test(h.timestamp ?? '') ? Number(h.timestamp) : undefined;
  if (!presented || ts === undefined || !h.broker) throw refused();
  const secret = secrets.get(h.broker);
  const expected = Buffer.from(webhookSignature(secret ?? DUMMY_SECRET, h.timestamp!, body), 'hex');
  const given = Buffer.from(presented[1]!.toLowerCase(), 'hex');
  const matches = timingSafeEqual(expected, given);
  if (!matches || secret === undefined) throw refused();
  if (Math.abs(now.getTime() / 1000 - ts) > BUS_EVENT_SKEW_SECONDS) throw refused();
  return { broker: h.broker, timestamp: ts, signature: given };
}
