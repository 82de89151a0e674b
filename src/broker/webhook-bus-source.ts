import { DomainError } from '../shared/errors.js';
import {
  perBusEventKind,
  type BusEvent,
  type BusEventKind,
  type BusEventSource,
  type DropCounts,
  type Observability,
} from './bus-events.js';
import { mapWebhookEvent } from './webhook-bus-events.js';

/** What a broker's webhook reports: EMQX's rule engine (through `mqtt-ca bus-relay`), or the generic form (HiveMQ extensions, others). */
export type WebhookReports = 'emqx' | 'generic';

const EMQX_RULE = (topic: string) => `when a rule selects ${topic} and its HTTP action posts to the relay (docs/bus-watch.md)`;

/** What EMQX 5's rule engine reports (its $events topics, emqx_rule_events), as relayed by `mqtt-ca bus-relay`. */
export const EMQX_WEBHOOK_OBSERVES: Readonly<Record<BusEventKind, Observability>> = {
  connect: { observed: true, note: EMQX_RULE('$events/client_connected') },
  disconnect: {
    observed: true,
    note: `${EMQX_RULE('$events/client_disconnected')}; refused connections from $events/client_connack (reason_code not success)`,
  },
  'tls-failure': {
    observed: false,
    why: 'EMQX raises no rule event for a failed TLS handshake (it only logs it): a revoked, expired or foreign-CA certificate never reaches the rule engine',
  },
  subscribe: { observed: true, note: EMQX_RULE('$events/session_subscribed') },
  unsubscribe: { observed: true, note: EMQX_RULE('$events/session_unsubscribed') },
  'acl-denied': { observed: true, note: `${EMQX_RULE('$events/client_check_authz_complete')} (result deny)` },
  publish: { observed: true, note: `${EMQX_RULE('a message topic filter such as "#"')}: one post per message, costly on a busy bus` },
  undeliverable: { observed: true, note: `${EMQX_RULE('$events/message_dropped')} (reason no_subscribers)` },
};

/** The generic form carries every kind: the sender (a HiveMQ extension, a bridge) decides what it posts. */
export const GENERIC_WEBHOOK_OBSERVES: Readonly<Record<BusEventKind, Observability>> = perBusEventKind((k) => ({
  observed: true,
  note:
    k === 'tls-failure'
      ? 'as far as the sender posts it (a HiveMQ extension sees no failed TLS handshake)'
      : 'as far as the sender posts it',
}));

/** What one signed batch came to: events handed on, well-formed reports that are no bus event, and drops per reason. */
export interface WebhookBatchResult {
  accepted: number;
  ignored: number;
  dropped: DropCounts;
}

export interface WebhookBusEventSourceOptions {
  /** The broker's id (a key of BUS_EVENT_SECRETS), as in the events. */
  broker: string;
  /** Which `observes` this source declares; default `emqx`. Both event shapes are taken either way. */
  reports?: WebhookReports;
  /** The arrival time, for events that carry none. */
  now?: () => Date;
}

/**
 * One broker's events as its webhook posts them (POST /v1/bus-events, signed with that broker's
 * secret): push-based, the route hands each authenticated batch to receive(), which maps every
 * event (src/broker/webhook-bus-events.ts) and passes it to the watch in the batch's order. Until
 * start() (and after stop()) nobody watches: receive() refuses with Unavailable (503), so a relay
 * keeps the batch and retries instead of losing it.
 */
export class WebhookBusEventSource implements BusEventSource {
  readonly broker: string;
  readonly observes: Readonly<Record<BusEventKind, Observability>>;
  private onEvent: ((e: BusEvent) => void) | undefined;
  private readonly drops: DropCounts = {};
  private readonly now: () => Date;

  constructor(opts: WebhookBusEventSourceOptions) {
    this.broker = opts.broker;
    this.observes = (opts.reports ?? 'emqx') === 'emqx' ? EMQX_WEBHOOK_OBSERVES : GENERIC_WEBHOOK_OBSERVES;
    this.now = opts.now ?? (() => new Date());
  }

  /** Whether a watch is taking this broker's events. */
  get started(): boolean {
    return this.onEvent !== undefined;
  }

  async start(onEvent: (e: BusEvent) => void): Promise<void> {
    if (this.onEvent) throw new Error('already started');
    this.onEvent = onEvent;
  }

  async stop(): Promise<void> {
    this.onEvent = undefined;
  }

  dropped(): DropCounts {
    return { ...this.drops };
  }

  /**
   * Delivers events another serve process received and mapped (handed to the watching process);
   * counted as dropped (`watch-not-started`) while nobody watches.
   */
  deliver(events: readonly BusEvent[]): void {
    const onEvent = this.onEvent;
    if (!onEvent) return this.countDropped('watch-not-started', events.length);
    for (const e of events) onEvent(e);
  }

  /** Counts events lost on their way to the watch (a hand-off that could not be sent). */
  countDropped(reason: string, n: number): void {
    if (n > 0) this.drops[reason] = (this.drops[reason] ?? 0) + n;
  }

  /** Maps and delivers one batch's events (already authenticated as this broker's). Throws Unavailable when not started. */
  receive(events: readonly unknown[]): WebhookBatchResult {
    const deliver = this.onEvent;
    if (!deliver) throw new DomainError('Unavailable', `the bus watch is not taking events of broker ${this.broker} (not started)`);
    const now = this.now();
    const result: WebhookBatchResult = { accepted: 0, ignored: 0, dropped: {} };
    for (const raw of events) {
      const m = mapWebhookEvent(this.broker, raw, now);
      if ('event' in m) {
        deliver(m.event);
        result.accepted++;
      } else if ('ignored' in m) result.ignored++;
      else {
        result.dropped[m.dropped] = (result.dropped[m.dropped] ?? 0) + 1;
        this.drops[m.dropped] = (this.drops[m.dropped] ?? 0) + 1;
      }
    }
    return result;
  }
}
