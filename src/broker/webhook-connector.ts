import { DomainError, badRequest } from '../shared/errors.js';
import type { BrokerAction, BrokerConnector, BrokerEffect, BrokerEvent, BrokerResult } from './connector.js';
import type { SignedWebhook } from './webhook.js';

/**
 * The body of every POST (header `X-MqttCa-Event: broker.<action>`, signed like every mqtt-ca
 * webhook): `action`, the `clientIds` it concerns (empty for notify), the `reason`, and for
 * notify the `event`. The receiver (a bridge to EMQX's, HiveMQ's or VerneMQ's kick and ban APIs)
 * answers 2xx, optionally with JSON `{ "effects": [{ "clientId", "applied"?, "confirmed", "detail"? }] }`.
 */
export interface WebhookActionBody {
  action: BrokerAction;
  clientIds: string[];
  reason: string;
  event?: BrokerEvent;
}

interface ReplyEffect {
  clientId?: unknown;
  applied?: unknown;
  confirmed?: unknown;
  detail?: unknown;
}

/**
 * Broker actions as signed webhook calls. A 2xx means the receiver took the action; an effect is
 * confirmed only where the receiver's reply says so. No answer, or anything but 2xx, is
 * DomainError('Unavailable'), nothing claimed.
 */
export class WebhookBrokerConnector implements BrokerConnector {
  readonly name: string;

  constructor(
    private readonly webhook: SignedWebhook,
    opts: { name?: string } = {},
  ) {
    this.name = opts.name ?? 'webhook';
  }

  disconnect(clientIds: string[], reason: string): Promise<BrokerResult> {
    return this.act('disconnect', clientIds, reason);
  }

  block(clientIds: string[], reason: string): Promise<BrokerResult> {
    return this.act('block', clientIds, reason);
  }

  unblock(clientIds: string[], reason: string): Promise<BrokerResult> {
    return this.act('unblock', clientIds, reason);
  }

  async notify(event: BrokerEvent): Promise<BrokerResult> {
    if (!event.kind) throw badRequest('an event needs a kind');
    const reply = await this.post({ action: 'notify', clientIds: [], reason: event.kind, event });
    return { connector: this.name, effects: [this.effect('notify', event.subject, reply)] };
  }

  async close(): Promise<void> {}

  private async act(action: Exclude<BrokerAction, 'notify'>, clientIds: string[], reason: string): Promise<BrokerResult> {
    const ids = [...new Set(clientIds)];
    if (ids.some((id) => typeof id !== 'string' || id.length === 0)) throw badRequest('client ids must be non-empty strings');
    const reply = await this.post({ action, clientIds: ids, reason });
    return { connector: this.name, effects: ids.map((id) => this.effect(action, id, reply)) };
  }

  private async post(body: WebhookActionBody): Promise<ReplyEffect[] | undefined> {
    let reply: unknown;
    try {
      reply = await this.webhook.postForReply(`broker.${body.action}`, body);
    } catch (e) {
      const msg =
        e instanceof Error
          ? e.name === 'TimeoutError'
            ? 'no answer in time'
            : `${e.message}${e.cause instanceof Error ? ` (${e.cause.message})` : ''}`
          : String(e);
      throw new DomainError('Unavailable', `broker connector ${this.name}: ${msg}`, { connector: this.name, action: body.action });
    }
    const effects = (reply as { effects?: unknown } | undefined)?.effects;
    return Array.isArray(effects) ? (effects as ReplyEffect[]) : undefined;
  }

  private effect(action: BrokerAction, clientId: string, reply: ReplyEffect[] | undefined): BrokerEffect {
    const said = reply?.find((r) => r && r.clientId === clientId);
    if (!said)
      return {
        clientId,
        action,
        applied: true,
        confirmed: false,
        detail: 'the receiver accepted the call (2xx) but did not confirm the effect',
      };
    const applied = said.applied === undefined ? true : said.applied === true;
    const detail = typeof said.detail === 'string' ? said.detail.slice(0, 500) : undefined;
    return {
      clientId,
      action,
      applied,
      confirmed: applied && said.confirmed === true,
      ...(detail ? { detail } : said.confirmed === true ? {} : { detail: 'the receiver did not confirm the effect' }),
    };
  }
}
