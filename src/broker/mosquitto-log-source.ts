import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { DomainError } from '../shared/errors.js';
import type { BusEvent, BusEventKind, BusEventSource, DropCounts, Observability } from './bus-events.js';
import type { TlsCredentials } from './mosquitto-dynsec.js';
import { MosquittoLogParser } from './mosquitto-log.js';

/** The log levels that carry bus events (connection notices, TLS errors, subscribe and unsubscribe). */
export const BUS_LOG_TOPICS = ['$SYS/broker/log/N', '$SYS/broker/log/E', '$SYS/broker/log/M/subscribe', '$SYS/broker/log/M/unsubscribe'];

/** What Mosquitto 2.0 reports on $SYS/broker/log (pinned by test/fixtures/mosquitto-2.0.11 and the e2e test). */
export const MOSQUITTO_SYS_LOG_OBSERVES: Readonly<Record<BusEventKind, Observability>> = {
  connect: { observed: true },
  disconnect: { observed: true },
  'tls-failure': {
    observed: true,
    note: 'Mosquitto logs "certificate verify failed" alike for revoked, expired and foreign-CA certificates, and no certificate name; the source address only when a single handshake was under way',
  },
  subscribe: { observed: true, note: 'granted subscriptions (log_type subscribe)' },
  unsubscribe: { observed: true, note: 'log_type unsubscribe' },
  'acl-denied': {
    observed: false,
    why: 'Mosquitto 2.0 logs denied publishes and subscribes only at debug level, which it never publishes on $SYS/broker/log',
  },
  publish: { observed: false, why: 'Mosquitto 2.0 logs publishes only at debug level, which it never publishes on $SYS/broker/log' },
  undeliverable: {
    observed: false,
    why: 'Mosquitto 2.0 logs no line for a publish that reaches no subscriber, at any level (its debug log lists the deliveries made, never a missing one)',
  },
};

export interface MosquittoLogSourceOptions {
  /** The broker's id in the events. */
  broker: string;
  url: string;
  clientId?: string;
  username?: string;
  password?: string;
  tls?: () => Promise<TlsCredentials>;
  timeoutMs?: number;
}

/**
 * A Mosquitto broker's events from its own log on $SYS/broker/log (`log_dest topic`), read by a
 * session of the connector's identity (its dynsec role may read $SYS/broker/log/#). mqtt.js
 * reconnects and subscribes again; a gap in the log is not yet reported (a later slice).
 */
export class MosquittoLogSource implements BusEventSource {
  readonly broker: string;
  readonly observes = MOSQUITTO_SYS_LOG_OBSERVES;
  private readonly parser: MosquittoLogParser;
  private client: MqttClient | undefined;

  constructor(private readonly o: MosquittoLogSourceOptions) {
    this.broker = o.broker;
    this.parser = new MosquittoLogParser({ broker: o.broker });
  }

  dropped(): DropCounts {
    return this.parser.dropped();
  }

  async start(onEvent: (e: BusEvent) => void): Promise<void> {
    if (this.client) throw new Error('already started');
    const creds = this.o.tls ? await this.o.tls() : undefined;
    const timeoutMs = this.o.timeoutMs ?? 10_000;
    const options: IClientOptions = {
      clientId: this.o.clientId ?? `mqtt-ca-buswatch-${randomBytes(6).toString('hex')}`,
      protocolVersion: 5,
      clean: true,
      reconnectPeriod: 1_000,
      connectTimeout: timeoutMs,
      ...(this.o.username ? { username: this.o.username } : {}),
      ...(this.o.password ? { password: this.o.password } : {}),
      ...(creds ? { key: creds.key, cert: creds.cert, ca: creds.ca } : {}),
    };
    const client = mqtt.connect(this.o.url, options);
    this.client = client;
    client.on('message', (topic, payload) => {
      for (const e of this.parser.message(topic, payload)) onEvent(e);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no CONNACK within ${timeoutMs} ms`)), timeoutMs + 500);
        client.once('connect', () => (clearTimeout(timer), resolve()));
        client.once('error', (e) => (clearTimeout(timer), reject(e)));
      });
      client.on('error', () => undefined);
      // mqtt.js rejects a subscription the broker refuses.
      await client.subscribeAsync(BUS_LOG_TOPICS, { qos: 0 });
    } catch (e) {
      await this.stop();
      throw new DomainError(
        'Unavailable',
        `cannot read the log of the broker at ${this.o.url} ($SYS/broker/log): ${e instanceof Error ? e.message : String(e)}`,
      );
    }
  }

  async stop(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    if (c) await c.endAsync(true);
  }
}
