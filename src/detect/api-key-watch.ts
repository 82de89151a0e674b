import type { Clock } from '../shared/clock.js';
import type { Db } from '../store/db.js';
import type { ApiKeyAddressStore } from '../store/api-key-address-store.js';
import type { SecurityEvents } from './security-events.js';
import type { SourceGuard } from './source-blocks.js';

/** Addresses remembered per process before the table is asked again; a bound, not a cache size to tune. */
const KNOWN_MAX = 50_000;

/**
 * What the API's authentication tells detection: a wrong key (`auth.failed`, counted against the
 * address by the failing-source rule) and a key used from an address it was never used from
 * before (`apikey.new-address`; its first address ever is only remembered).
 */
export class ApiKeyWatch {
  private readonly known = new Set<string>();

  constructor(
    private readonly db: Db,
    private readonly store: ApiKeyAddressStore,
    private readonly events: SecurityEvents,
    private readonly sources: SourceGuard,
    private readonly clock: Clock,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {}

  retryAfter(source: string): number {
    return this.sources.retryAfter(source);
  }

  async failed(source: string, requestId: string, keyId: string | undefined): Promise<void> {
    await this.events.record({
      kind: 'auth.failed',
      severity: 'warning',
      source,
      subject: keyId,
      requestId,
      details: { credential: 'api-key' },
    });
  }

  /** A key that authenticated. A failure to remember the address is reported, never the request's. */
  async used(keyId: string, source: string, requestId: string): Promise<void> {
    const pair = `${keyId}\0${source}`;
    if (this.known.has(pair)) return;
    try {
      const { added, others } = await this.store.remember(this.db, keyId, source, this.clock.now());
      if (this.known.size >= KNOWN_MAX) this.known.clear();
      this.known.add(pair);
      if (added && others > 0) {
        await this.events.record({
          kind: 'apikey.new-address',
          severity: 'warning',
          source,
          subject: keyId,
          requestId,
          details: { addressesBefore: others },
        });
      }
    } catch (e) {
      this.onError(e);
    }
  }
}
