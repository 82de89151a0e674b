/**
 * `mqtt-ca bus-relay`: EMQX's HTTP action posts one unsigned event per request and cannot compute
 * the service's HMAC; the relay, on the broker's host, listens on loopback for those posts, batches
 * them (at most `maxBatch` events, `maxBatchBytes`, or `maxDelayMs` after the first), signs each
 * batch with the broker's secret and forwards it to POST /v1/bus-events. Its buffer is bounded: a
 * post that finds it full is refused (503) and its events counted as dropped. A batch the service
 * could not take (no answer, 5xx, 429) is sent again, signed anew, with a growing backoff; one it
 * refused (4xx) is dropped and counted, since sending it again would not change the answer.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { webhookSignature, WEBHOOK_HEADERS } from '../shared/webhook-signature.js';

export interface BusRelayOptions {
  /** The service's base URL (the batch goes to `${url}/v1/bus-events`). */
  url: string;
  /** The broker's id: a key of the service's BUS_EVENT_SECRETS. */
  broker: string;
  secret: string;
  /** Where to listen for the broker's posts; loopback by default. */
  host?: string;
  /** 0: a free port. */
  port?: number;
  maxBatch?: number;
  /** A batch's body stays under this (the service reads at most 1 MiB). */
  maxBatchBytes?: number;
  maxDelayMs?: number;
  /** Events held at most (waiting and being sent); beyond, posts are refused and counted. */
  maxBuffered?: number;
  /** The largest post taken from the broker (one event). */
  maxPostBytes?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** How long one forward may take. */
  timeoutMs?: number;
  /** Told of each failed forward (never thrown). */
  onError?: (message: string) => void;
}

export interface BusRelayStats {
  /** Events taken from the broker. */
  received: number;
  /** Events the service answered 202 for. */
  forwarded: number;
  /** Of those, what the service said: accepted, ignored and dropped per reason. */
  service: { accepted: number; ignored: number; dropped: Record<string, number> };
  /** Events the relay itself dropped, per reason (buffer-full, not-json, too-large, refused-<status>). */
  dropped: Record<string, number>;
  /** Events waiting or being sent. */
  buffered: number;
  /** Forwards that failed and were retried. */
  retries: number;
}

type Pending = { json: string; bytes: number };

export class BusRelay {
  private server: Server | undefined;
  private queue: Pending[] = [];
  private sending = false;
  private timer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private inFlight = 0;
  private readonly o: Required<Omit<BusRelayOptions, 'onError'>> & Pick<BusRelayOptions, 'onError'>;
  private readonly s: BusRelayStats = {
    received: 0,
    forwarded: 0,
    service: { accepted: 0, ignored: 0, dropped: {} },
    dropped: {},
    buffered: 0,
    retries: 0,
  };
  private idle: (() => void)[] = [];
  /** The last batch sent and its timestamp (see forward). */
  private last: { ts: number; body: string } | undefined;

  constructor(opts: BusRelayOptions) {
    this.o = {
      host: '127.0.0.1',
      port: 0,
      maxBatch: 500,
      maxBatchBytes: 900 * 1024,
      maxDelayMs: 200,
      maxBuffered: 20_000,
      maxPostBytes: 256 * 1024,
      retryInitialMs: 500,
      retryMaxMs: 30_000,
      timeoutMs: 10_000,
      ...opts,
      url: opts.url.replace(/\/+$/, ''),
    };
  }

  stats(): BusRelayStats {
    return {
      ...this.s,
      service: { ...this.s.service, dropped: { ...this.s.service.dropped } },
      dropped: { ...this.s.dropped },
      buffered: this.queue.length + this.inFlight,
    };
  }

  /** Listens; resolves with the address the broker should post to. */
  async start(): Promise<{ url: string; port: number }> {
    if (this.server) throw new Error('already started');
    const server = createServer((req, res) => this.onPost(req, res));
    server.requestTimeout = 10_000;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.o.port, this.o.host, () => resolve());
    });
    const port = (server.address() as { port: number }).port;
    return { url: `http://${this.o.host.includes(':') ? `[${this.o.host}]` : this.o.host}:${port}`, port };
  }

  /** Resolves once everything buffered was forwarded or dropped (tests, and a graceful stop). */
  drained(): Promise<void> {
    if (this.queue.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  /** Stops listening; with `flush`, first tries what is buffered once more. */
  async stop(opts: { flush?: boolean } = {}): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
    if (opts.flush && this.queue.length) {
      clearTimeout(this.retryTimer);
      await this.flush();
    }
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.retryTimer);
  }

  private count(where: Record<string, number>, reason: string, n = 1): void {
    where[reason] = (where[reason] ?? 0) + n;
  }

  private answer(res: ServerResponse, status: number, body?: unknown): void {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) });
    res.end(text);
  }

  private onPost(req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== 'POST') return this.answer(res, 405, { error: 'POST the broker events here' });
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > this.o.maxPostBytes) tooLarge = true;
      else chunks.push(c);
    });
    req.on('error', () => undefined);
    req.on('end', () => {
      if (tooLarge) {
        this.count(this.s.dropped, 'too-large');
        return this.answer(res, 413, { error: `a post carries at most ${this.o.maxPostBytes} bytes` });
      }
      let value: unknown;
      try {
        value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks, size)));
      } catch {
        this.count(this.s.dropped, 'not-json');
        return this.answer(res, 400, { error: 'not UTF-8 JSON' });
      }
      // EMQX posts one event per request; an array is taken as several.
      const events = Array.isArray(value) ? value : [value];
      if (this.queue.length + this.inFlight + events.length > this.o.maxBuffered) {
        this.count(this.s.dropped, 'buffer-full', events.length);
        return this.answer(res, 503, { error: 'the relay buffer is full' });
      }
      for (const e of events) {
        const json = JSON.stringify(e);
        this.queue.push({ json, bytes: Buffer.byteLength(json) + 1 });
      }
      this.s.received += events.length;
      this.answer(res, 202, { buffered: events.length });
      this.schedule();
    });
  }

  /** Sends at once when a batch is full, else after maxDelayMs from now. */
  private schedule(): void {
    if (this.sending || this.stopped || this.retryTimer) return;
    if (this.queue.length >= this.o.maxBatch) {
      clearTimeout(this.timer);
      this.timer = undefined;
      void this.flush();
    } else if (!this.timer) this.timer = setTimeout(() => ((this.timer = undefined), void this.flush()), this.o.maxDelayMs);
  }

  /** The next batch: as many queued events as fit maxBatch and maxBatchBytes (always at least one). */
  private take(): Pending[] {
    let bytes = 20;
    let n = 0;
    while (n < this.queue.length && n < this.o.maxBatch) {
      const b = this.queue[n]!.bytes;
      if (n > 0 && bytes + b > this.o.maxBatchBytes) break;
      bytes += b;
      n++;
    }
    return this.queue.splice(0, n);
  }

  private async flush(delayMs = 0): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    let backoff = delayMs;
    try {
      while (this.queue.length) {
        const batch = this.take();
        this.inFlight = batch.length;
        const sent = await this.forward(batch);
        if (sent === 'retry') {
          // Put it back in front, and retry after a growing delay (stop() ends it).
          this.queue.unshift(...batch);
          this.inFlight = 0;
          this.s.retries++;
          backoff = Math.min(this.o.retryMaxMs, backoff ? backoff * 2 : this.o.retryInitialMs);
          if (this.stopped || !this.server) return;
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            void this.flush(backoff);
          }, backoff);
          return;
        }
        backoff = 0;
        this.inFlight = 0;
      }
    } finally {
      this.sending = false;
      if (this.queue.length === 0 && this.inFlight === 0) for (const r of this.idle.splice(0)) r();
      else if (!this.retryTimer) this.schedule();
    }
  }

  private async forward(batch: Pending[]): Promise<'done' | 'retry'> {
    const body = `{"events":[${batch.map((p) => p.json).join(',')}]}`;
    // The service takes a signature once: the same bytes again in the same second (a retry, or an
    // identical batch) would be a replay, so such a send is dated a second later (well within ±300 s).
    let ts = Math.floor(Date.now() / 1000);
    if (this.last && this.last.body === body && ts <= this.last.ts) ts = this.last.ts + 1;
    this.last = { ts, body };
    const timestamp = String(ts);
    let status: number;
    let text = '';
    try {
      const res = await fetch(`${this.o.url}/v1/bus-events`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          [WEBHOOK_HEADERS.broker]: this.o.broker,
          [WEBHOOK_HEADERS.timestamp]: timestamp,
          [WEBHOOK_HEADERS.signature]: `sha256=${webhookSignature(this.o.secret, timestamp, body)}`,
        },
        body,
        signal: AbortSignal.timeout(this.o.timeoutMs),
      });
      status = res.status;
      text = await res.text().catch(() => '');
    } catch (e) {
      this.o.onError?.(`forward to ${this.o.url} failed: ${e instanceof Error ? e.message : String(e)}; retrying`);
      return 'retry';
    }
    if (status === 202) {
      this.s.forwarded += batch.length;
      try {
        const a = JSON.parse(text) as { accepted?: number; ignored?: number; dropped?: Record<string, number> };
        this.s.service.accepted += a.accepted ?? 0;
        this.s.service.ignored += a.ignored ?? 0;
        for (const [k, n] of Object.entries(a.dropped ?? {})) this.count(this.s.service.dropped, k, n);
      } catch {
        /* the answer's counts are informative only */
      }
      return 'done';
    }
    if (status === 429 || status >= 500) {
      this.o.onError?.(`the service answered ${status}; retrying`);
      return 'retry';
    }
    this.count(this.s.dropped, `refused-${status}`, batch.length);
    this.o.onError?.(`the service refused a batch of ${batch.length} events with ${status}: ${text.slice(0, 300)}`);
    return 'done';
  }
}
