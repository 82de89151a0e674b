import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';

export interface MqttPublisherOptions {
  url: string;
  clientId: string;
  username?: string | undefined;
  password?: string | undefined;
  /** PEM files for mqtts:// (the service's own client certificate, the broker's CA). */
  caFile?: string | undefined;
  certFile?: string | undefined;
  keyFile?: string | undefined;
  /** How long one publish may wait for its PUBACK. */
  timeoutMs: number;
}

export interface Publication {
  topic: string;
  payload: string;
  retain: boolean;
}

/**
 * The service's own connection to a broker: QoS 1 publishes, each confirmed by its PUBACK. It
 * connects on first use and reconnects on its own; a publish while the broker is away waits
 * (bounded by timeoutMs) rather than failing at once.
 */
export class MqttPublisher {
  private client: MqttClient | undefined;

  constructor(private readonly opts: MqttPublisherOptions) {}

  /** Publishes all; returns, in order, whether each was acknowledged (and the first error). */
  async publishAll(pubs: Publication[]): Promise<{ ok: boolean[]; error?: string }> {
    const client = this.connect();
    const results = await Promise.allSettled(pubs.map((p) => this.publishOne(client, p)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    return { ok: results.map((r) => r.status === 'fulfilled'), ...(failed ? { error: errorText(failed.reason) } : {}) };
  }

  async close(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    if (c) await c.endAsync(true).catch(() => undefined);
  }

  private publishOne(client: MqttClient, p: Publication): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no PUBACK from ${this.opts.url} within ${this.opts.timeoutMs} ms`)),
        this.opts.timeoutMs,
      );
      client.publish(p.topic, p.payload, { qos: 1, retain: p.retain }, (err) => {
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      });
    });
  }

  private connect(): MqttClient {
    if (this.client) return this.client;
    const o = this.opts;
    const options: IClientOptions = {
      clientId: o.clientId,
      clean: true,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      // Publishes made while disconnected are queued and sent on reconnect (bounded by timeoutMs above).
      queueQoSZero: false,
      ...(o.username ? { username: o.username } : {}),
      ...(o.password ? { password: o.password } : {}),
      ...(o.caFile ? { ca: readFileSync(o.caFile) } : {}),
      ...(o.certFile ? { cert: readFileSync(o.certFile) } : {}),
      ...(o.keyFile ? { key: readFileSync(o.keyFile) } : {}),
    };
    const client = mqtt.connect(o.url, options);
    client.on('error', () => undefined); // reconnects on its own; publishes report their own failures
    this.client = client;
    return client;
  }
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));
