import { webhookSignature } from '../shared/webhook-signature.js';

export { webhookSignature };

export interface WebhookOptions {
  url: string;
  /** The HMAC-SHA256 key the receiver checks the signature with. */
  secret: string;
  timeoutMs: number;
}

/**
 * A signed webhook: POSTs JSON with `X-MqttCa-Timestamp` (Unix seconds) and `X-MqttCa-Signature:
 * sha256=<hex>` over the timestamp and the exact body, so a receiver can refuse forgeries and
 * replays (a stale timestamp). Any answer but 2xx is a failure.
 */
export class SignedWebhook {
  constructor(private readonly opts: WebhookOptions) {}

  async post(event: string, payload: unknown): Promise<void> {
    await this.send(event, payload, false);
  }

  /** Like post(), and returns the receiver's answer when it is JSON (else undefined). */
  async postForReply(event: string, payload: unknown): Promise<unknown> {
    return this.send(event, payload, true);
  }

  private async send(event: string, payload: unknown, wantReply: boolean): Promise<unknown> {
    const body = JSON.stringify(payload);
    const timestamp = String(Math.floor(Date.now() / 1000));
    const res = await fetch(this.opts.url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-mqttca-event': event,
        'x-mqttca-timestamp': timestamp,
        'x-mqttca-signature': `sha256=${webhookSignature(this.opts.secret, timestamp, body)}`,
      },
      body,
      signal: AbortSignal.timeout(this.opts.timeoutMs),
    });
    const text = await res.text().catch(() => '');
    if (!res.ok) throw new Error(`webhook ${this.opts.url} answered ${res.status}`);
    if (!wantReply || !/json/i.test(res.headers.get('content-type') ?? '')) return undefined;
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return undefined;
    }
  }
}
