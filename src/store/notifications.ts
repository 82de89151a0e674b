import pg from 'pg';

export interface NotificationFeed {
  close(): Promise<void>;
}

export interface FeedHandlers {
  onMessage(payload: string): void;
  /** false as soon as the connection is lost (messages may be missed from here); true once listening again. */
  onState(listening: boolean): void;
  onError?(e: unknown): void;
}

const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 10_000;

/**
 * LISTEN on one PostgreSQL channel over a connection of its own, reconnecting with backoff.
 * NOTIFY is delivered only to connected listeners, so a subscriber must treat every disconnected
 * moment as "anything may have changed": that is what onState(false) says.
 */
export function listenTo(connection: pg.ClientConfig, channel: string, handlers: FeedHandlers): NotificationFeed {
  let client: pg.Client | undefined;
  let closed = false;
  let retryMs = RETRY_MIN_MS;
  let timer: NodeJS.Timeout | undefined;
  const quoted = `"${channel.replace(/"/g, '""')}"`;

  const lost = (c: pg.Client, e?: unknown) => {
    if (client !== c) return;
    client = undefined;
    handlers.onState(false);
    if (e) handlers.onError?.(e);
    c.end().catch(() => undefined);
    if (!closed) {
      timer = setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  };

  async function connect(): Promise<void> {
    if (closed) return;
    const c = new pg.Client({ ...connection, application_name: 'mqtt-ca ocsp feed' });
    client = c;
    c.on('notification', (m) => {
      if (m.channel === channel) handlers.onMessage(m.payload ?? '');
    });
    c.on('error', (e) => lost(c, e));
    c.on('end', () => lost(c));
    try {
      await c.connect();
      await c.query(`LISTEN ${quoted}`);
      if (client !== c || closed) return;
      retryMs = RETRY_MIN_MS;
      handlers.onState(true);
    } catch (e) {
      lost(c, e);
    }
  }

  void connect();
  return {
    async close() {
      closed = true;
      clearTimeout(timer);
      const c = client;
      client = undefined;
      await c?.end().catch(() => undefined);
    },
  };
}
