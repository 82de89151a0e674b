import { createHash } from 'node:crypto';
import { DomainError } from '../shared/errors.js';
import type { Clock } from '../shared/clock.js';
import { BUS_EVENT_BODY_LIMIT_BYTES, parseBusEventBatch } from '../broker/webhook-bus-events.js';
import type { WebhookBatchResult, WebhookBusEventSource } from '../broker/webhook-bus-source.js';
import { BUS_EVENT_SKEW_SECONDS, verifyBusEventSignature, type SignedBatchHeaders } from './bus-event-auth.js';

/** One-time signatures (the replay guard, ReplayStore on the service's database). */
export interface BusEventReplayGuard {
  /** True when the digest was not seen before (and is now recorded until expiresAt). */
  useOnce(digest: Buffer, expiresAt: Date): Promise<boolean>;
  /** Forgets digests expired before `now`. */
  purge(now: Date): Promise<number>;
}

export interface BusEventIngestionOptions {
  /** Broker id → its secret (BUS_EVENT_SECRETS). */
  secrets: ReadonlyMap<string, string>;
  /** Broker id → its source: every broker with a secret has one. */
  sources: ReadonlyMap<string, WebhookBusEventSource>;
  replay: BusEventReplayGuard;
  clock: Clock;
  /** Told of a failed purge of the replay guard (never thrown to the request). */
  onError?: (e: unknown) => void;
}

/** The 202 answer: the broker's id and what became of the batch's events. */
export interface BusEventBatchAnswer extends WebhookBatchResult {
  broker: string;
}

const PURGE_EVERY_MS = 60_000;

/**
 * POST /v1/bus-events behind the HTTP edge: authenticates a signed batch (bus-event-auth.ts),
 * reads the envelope (400 / 413), refuses while that broker's source is not started (503, the
 * signature not spent), accepts the signature once (a replay within the time allowed is 401 like a
 * forgery) and hands the events to the broker's WebhookBusEventSource.
 */
export class BusEventIngestion {
  private nextPurge = 0;

  constructor(private readonly o: BusEventIngestionOptions) {
    for (const broker of o.secrets.keys())
      if (!o.sources.has(broker)) throw new Error(`bus events: broker ${broker} has a secret but no source`);
  }

  /** Whether any broker may post (BUS_EVENT_SECRETS set); the route answers 404 when not. */
  get enabled(): boolean {
    return this.o.secrets.size > 0;
  }

  /** The largest body the route reads. */
  get bodyLimitBytes(): number {
    return BUS_EVENT_BODY_LIMIT_BYTES;
  }

  async receive(headers: SignedBatchHeaders, body: Buffer): Promise<BusEventBatchAnswer> {
    const now = this.o.clock.now();
    const { broker, timestamp, signature } = verifyBusEventSignature(this.o.secrets, headers, body, now);
    const events = parseBusEventBatch(body);
    const source = this.o.sources.get(broker)!;
    // Refused before the signature is spent: the sender may send the same bytes again.
    if (!source.started) throw new DomainError('Unavailable', `the bus watch is not taking events of broker ${broker} (not started)`);
    // The signature covers the timestamp and the body: a copy of the request is the same digest.
    const digest = createHash('sha256').update('mqtt-ca bus-events\0').update(broker).update('\0').update(signature).digest();
    const expiresAt = new Date((timestamp + BUS_EVENT_SKEW_SECONDS + 1) * 1000);
    if (!(await this.o.replay.useOnce(digest, expiresAt)))
      throw new DomainError('Unauthenticated', 'the batch is not signed by a known broker within the time allowed');
    this.purgeNowAndThen(now);
    return { broker, ...source.receive(events) };
  }

  private purgeNowAndThen(now: Date): void {
    if (now.getTime() < this.nextPurge) return;
    this.nextPurge = now.getTime() + PURGE_EVERY_MS;
    this.o.replay.purge(now).catch((e: unknown) => this.o.onError?.(e));
  }
}
