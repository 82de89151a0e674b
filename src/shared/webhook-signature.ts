import { createHmac } from 'node:crypto';

/** The headers of a signed mqtt-ca webhook, in both directions (lower case, as Node gives them). */
export const WEBHOOK_HEADERS = {
  /** Unix seconds when the body was signed. */
  timestamp: 'x-mqttca-timestamp',
  /** `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`. */
  signature: 'x-mqttca-signature',
  /** Incoming bus events: which broker's secret signed the body (POST /v1/bus-events). */
  broker: 'x-mqttca-broker',
} as const;

/**
 * The signature a receiver recomputes: HMAC-SHA256(secret, `${timestamp}.${body}`), hex. The body
 * is taken as sent: a string as its UTF-8 bytes, or the exact bytes received.
 */
export function webhookSignature(secret: string, timestamp: string, body: string | Buffer): string {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
}
