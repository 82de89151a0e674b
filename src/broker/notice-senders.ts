import type { MqttPublisher } from './mqtt-publisher.js';
import type { SignedWebhook } from './webhook.js';

/** What a sender needs of a notice; the rest of it is the payload. */
export interface Notice {
  noticeId: string;
  deviceId: string;
}

export interface SendResult {
  delivered: string[];
  error?: string;
}

/** `mqtt-ca/devices/{deviceId}/renew` → the device's topic. Device ids hold no MQTT wildcards (+ # /). */
export const topicFor = (template: string, deviceId: string) => template.replaceAll('{deviceId}', deviceId);

/**
 * Renewal notices over MQTT, one QoS 1 message per device topic. Retained by default, so a device
 * that was offline finds its notice when it subscribes.
 */
export class MqttNoticeSender {
  readonly sink = 'mqtt' as const;
  constructor(
    private readonly publisher: MqttPublisher,
    private readonly topicTemplate: string,
    private readonly retain: boolean,
  ) {}

  async send(notices: Notice[]): Promise<SendResult> {
    const r = await this.publisher.publishAll(
      notices.map((n) => ({ topic: topicFor(this.topicTemplate, n.deviceId), payload: JSON.stringify(n), retain: this.retain })),
    );
    return { delivered: notices.filter((_, i) => r.ok[i]).map((n) => n.noticeId), ...(r.error ? { error: r.error } : {}) };
  }
}

/** Renewal notices to a signed webhook, one POST per batch: `{ "notices": [...] }`. */
export class WebhookNoticeSender {
  readonly sink = 'webhook' as const;
  constructor(private readonly webhook: SignedWebhook) {}

  async send(notices: Notice[]): Promise<SendResult> {
    try {
      await this.webhook.post('renewal-due', { notices });
      return { delivered: notices.map((n) => n.noticeId) };
    } catch (e) {
      return { delivered: [], error: e instanceof Error ? e.message : String(e) };
    }
  }
}
