import { DomainError } from '../shared/errors.js';

export type BrokerAction = 'disconnect' | 'block' | 'unblock' | 'notify';

/**
 * What one connector did to one client. `applied`: the broker accepted the change. `confirmed`:
 * the connector saw the effect itself (read back the client's roles, saw the broker end its
 * sessions, or the receiver said so); false with a `detail` when it could not tell. Never a guess.
 */
export interface BrokerEffect {
  clientId: string;
  action: BrokerAction;
  applied: boolean;
  confirmed: boolean;
  detail?: string;
  /** Sessions the broker ended for this client (their MQTT client ids), when it said so. */
  sessionsEnded?: string[];
}

export interface BrokerResult {
  connector: string;
  effects: BrokerEffect[];
}

export interface BrokerEvent {
  kind: string;
  subject: string;
  details?: Record<string, unknown>;
}

/**
 * One broker (or broker fleet) that mqtt-ca can act on. Client ids here are the broker's
 * identities of the devices: with Mosquitto's use_identity_as_username, the certificate CN, which
 * is the device id. An unreachable broker or a refused command throws DomainError('Unavailable'):
 * the caller records the failure and may retry (every action is idempotent).
 */
export interface BrokerConnector {
  readonly name: string;
  /** Ends the clients' current sessions; no lasting effect. */
  disconnect(clientIds: string[], reason: string): Promise<BrokerResult>;
  /** Denies the clients every publish and subscribe (a deny role), then kicks them; confirms both. Idempotent. */
  block(clientIds: string[], reason: string): Promise<BrokerResult>;
  /** Lifts block() (restores the client's previous roles). Idempotent. */
  unblock(clientIds: string[], reason: string): Promise<BrokerResult>;
  /** Tells the broker fleet something (e.g. a broker quarantined, for its peers): an MQTT publish or a webhook event. */
  notify(event: BrokerEvent): Promise<BrokerResult>;
  close(): Promise<void>;
}

/** The outcome of calling every connector: the results of those that answered, the failures of the others. */
export interface BrokerFanout {
  results: BrokerResult[];
  failures: { connector: string; error: DomainError }[];
}

/** Every configured connector; the incident actions call all of them. */
export class BrokerConnectors {
  private readonly connectors: BrokerConnector[];

  constructor(list: BrokerConnector[]) {
    const names = new Set<string>();
    for (const c of list) {
      if (names.has(c.name)) throw new Error(`two broker connectors are named ${c.name}`);
      names.add(c.name);
    }
    this.connectors = [...list];
  }

  list(): BrokerConnector[] {
    return [...this.connectors];
  }

  get(name: string): BrokerConnector | undefined {
    return this.connectors.find((c) => c.name === name);
  }

  /** Whether any connector is configured. */
  get configured(): boolean {
    return this.connectors.length > 0;
  }

  disconnect(clientIds: string[], reason: string): Promise<BrokerFanout> {
    return this.all((c) => c.disconnect(clientIds, reason));
  }

  block(clientIds: string[], reason: string): Promise<BrokerFanout> {
    return this.all((c) => c.block(clientIds, reason));
  }

  unblock(clientIds: string[], reason: string): Promise<BrokerFanout> {
    return this.all((c) => c.unblock(clientIds, reason));
  }

  notify(event: BrokerEvent): Promise<BrokerFanout> {
    return this.all((c) => c.notify(event));
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.connectors.map((c) => c.close()));
  }

  /** Calls each connector; one failing does not stop the others, and its failure is reported, not swallowed. */
  private async all(fn: (c: BrokerConnector) => Promise<BrokerResult>): Promise<BrokerFanout> {
    const settled = await Promise.allSettled(this.connectors.map((c) => fn(c)));
    const out: BrokerFanout = { results: [], failures: [] };
    settled.forEach((s, i) => {
      const connector = this.connectors[i]!.name;
      if (s.status === 'fulfilled') out.results.push(s.value);
      else out.failures.push({ connector, error: asUnavailable(connector, s.reason) });
    });
    return out;
  }
}

/** A connector's failure as a DomainError (its own if it threw one). */
export function asUnavailable(connector: string, e: unknown): DomainError {
  if (e instanceof DomainError) return e;
  return new DomainError('Unavailable', `broker connector ${connector}: ${e instanceof Error ? e.message : String(e)}`, { connector });
}
