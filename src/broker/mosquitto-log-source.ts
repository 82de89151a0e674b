import { randomBytes } from 'node:crypto';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { DomainError } from '../shared/errors.js';
import type { BusEvent, BusEventSource, DropCounts, SourceStatus } from './bus-events.js';
import type { TlsCredentials } from './mosquitto-dynsec.js';
import { MOSQUITTO_TLS_FAILURE_NOTE, MosquittoLogParser, mosquittoLogObserves } from './mosquitto-log.js';

/** The log levels that carry bus events (connection notices, TLS errors, subscribe and unsubscribe). */
export const BUS_LOG_TOPICS = ['$SYS/broker/log/N', '$SYS/broker/log/E', '$SYS/broker/log/M/subscribe', '$SYS/broker/log/M/unsubscribe'];

/** What Mosquitto 2.0 reports on $SYS/broker/log (pinned by test/fixtures/mosquitto-2.0.11 and the e2e test). */
export const MOSQUITTO_SYS_LOG_OBSERVES = mosquittoLogObserves({
  'tls-failure': {
    observed: true,
    note: `${MOSQUITTO_TLS_FAILURE_NOTE}; the source address only when a single handshake was under way`,
  },
  'acl-denied': {
    observed: false,
    why: 'Mosquitto 2.0 logs denied publishes and subscribes only at debug level, which it never publishes on $SYS/broker/log',
  },
  publish: { observed: false, why: 'Mosquitto 2.0 logs publishes only at debug level, which it never publishes on $SYS/broker/log' },
});

/** MQTT 5 DISCONNECT reason "Server shutting down". */
const SERVER_SHUTTING_DOWN = 0x8b;

export interface MosquittoLogSourceOptions {
  /** The broker's id in the events. */
  broker: string;
  url: string;
  clientId?: string;
  username?: string | undefined;
  password?: string | undefined;
  /** The connector's certificate and the broker's CA, read again for every connection (a renewed certificate is used from the next). */
  tls?: (() => Promise<TlsCredentials>) | undefined;
  timeoutMs?: number;
  /** Reconnection backoff after the session dropped: from minMs, doubling, up to maxMs. */
  reconnect?: { minMs: number; maxMs: number };
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

/**
 * A Mosquitto broker's events from its own log on $SYS/broker/log (`log_dest topic`), read by a
 * session of the connector's identity (its dynsec role may read $SYS/broker/log/#). When the
 * session drops, the source says so (down: `broker-down` when the broker said it was shutting down
 * or refuses connections, else `session-dropped`), connects again with backoff — with the
 * connector's credentials read anew, so a certificate the renewal job replaced is used —
 * subscribes again and says it is up, its sessions unknown. What the broker logged meanwhile is lost:
 * the watch records the gap.
 */
export class MosquittoLogSource implements BusEventSource {
  readonly broker: string;
  readonly kind = 'mosquitto-sys-log';
  readonly observes = MOSQUITTO_SYS_LOG_OBSERVES;
  private readonly parser: MosquittoLogParser;
  private readonly listeners = new Set<(s: SourceStatus) => void>();
  private client: MqttClient | undefined;
  private onEvent: ((e: BusEvent) => void) | undefined;
  private running = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  /** Connections made (the first and each reconnection). */
  connections = 0;

  constructor(private readonly o: MosquittoLogSourceOptions) {
    this.broker = o.broker;
    this.parser = new MosquittoLogParser({ broker: o.broker });
  }

  dropped(): DropCounts {
    return this.parser.dropped();
  }

  onStatus(listener: (s: SourceStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async start(onEvent: (e: BusEvent) => void): Promise<void> {
    if (this.running) throw new Error('already started');
    this.running = true;
    this.onEvent = onEvent;
    try {
      this.attach(await this.connect());
    } catch (e) {
      this.running = false;
      throw new DomainError('Unavailable', `cannot read the log of the broker at ${this.o.url} ($SYS/broker/log): ${errorText(e)}`);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const c = this.client;
    this.client = undefined;
    if (c) await c.endAsync(true);
  }

  private emit(s: SourceStatus): void {
    for (const l of [...this.listeners]) {
      try {
        l(s);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /** One connection: credentials read now, CONNACK, the log topics subscribed (mqtt.js rejects a refused subscription). */
  private async connect(): Promise<MqttClient> {
    const creds = this.o.tls ? await this.o.tls() : undefined;
    const timeoutMs = this.o.timeoutMs ?? 10_000;
    const options: IClientOptions = {
      clientId: this.o.clientId ?? `mqtt-ca-buswatch-${randomBytes(6).toString('hex')}`,
      protocolVersion: 5,
      clean: true,
      reconnectPeriod: 0, // reconnected here, with the credentials read anew
      connectTimeout: timeoutMs,
      ...(this.o.username ? { username: this.o.username } : {}),
      ...(this.o.password ? { password: this.o.password } : {}),
      ...(creds ? { key: creds.key, cert: creds.cert, ca: creds.ca } : {}),
    };
    const client = mqtt.connect(this.o.url, options);
    client.on('message', (topic, payload) => {
      if (this.client !== client && this.client !== undefined) return;
      const events = this.parser.message(topic, payload);
      for (const e of events) this.onEvent?.(e);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no CONNACK within ${timeoutMs} ms`)), timeoutMs + 500);
        client.once('connect', () => (clearTimeout(timer), resolve()));
        client.once('error', (e) => (clearTimeout(timer), reject(e)));
        client.once('close', () => (clearTimeout(timer), reject(new Error('the broker closed the connection'))));
      });
      client.on('error', () => undefined);
      await client.subscribeAsync(BUS_LOG_TOPICS, { qos: 0 });
      this.connections++;
      return client;
    } catch (e) {
      client.removeAllListeners('message');
      client.on('error', () => undefined);
      client.end(true);
      throw e;
    }
  }

  private attach(client: MqttClient): void {
    this.client = client;
    let shuttingDown = false;
    let lastError: string | undefined;
    client.on('disconnect', (packet) => {
      if (packet.reasonCode === SERVER_SHUTTING_DOWN) shuttingDown = true;
    });
    client.on('error', (e) => (lastError = errorText(e)));
    client.once('close', () => {
      if (this.client !== client || !this.running) return;
      this.client = undefined;
      client.end(true);
      this.emit(
        shuttingDown
          ? { up: false, why: 'broker-down', detail: 'the broker said it was shutting down' }
          : { up: false, why: 'session-dropped', detail: lastError ?? 'the connection to the broker closed' },
      );
      this.failures = 0;
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    const r = this.o.reconnect ?? { minMs: 500, maxMs: 30_000 };
    const delay = Math.min(r.maxMs, r.minMs * 2 ** Math.min(this.failures, 20));
    this.reconnectTimer = setTimeout(() => void this.reconnect(), delay);
    this.reconnectTimer.unref();
  }

  private async reconnect(): Promise<void> {
    this.reconnectTimer = undefined;
    if (!this.running) return;
    let client: MqttClient;
    try {
      client = await this.connect();
    } catch (e) {
      if (!this.running) return;
      this.failures++;
      const text = errorText(e);
      const refused = (e as { code?: string }).code === 'ECONNREFUSED' || /ECONNREFUSED/.test(text);
      this.emit(
        refused
          ? { up: false, why: 'broker-down', detail: `the broker refuses connections: ${text}` }
          : { up: false, why: 'session-dropped', detail: text },
      );
      this.scheduleReconnect();
      return;
    }
    if (!this.running) {
      await client.endAsync(true);
      return;
    }
    this.parser.forgetSessions();
    this.attach(client);
    this.emit({ up: true, sessionsReset: true });
  }
}
