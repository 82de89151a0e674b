import type { IncidentKind } from '../shared/security-terms.js';
import type { Clock } from '../shared/clock.js';
import type { RecordedEvent, SecurityEvents } from './security-events.js';
import type { DetectionRule, ResponseAction } from '../shared/detection-rules.js';
import type { SourceBlocks, SourceGuard } from './source-blocks.js';

/** What the automatic responses do beyond blocking a source; the composition root wires them to the services. */
export interface ResponsePorts {
  /** Puts the device's current certificate on hold (the device is suspended); null when it has none in use. */
  suspendDevice(deviceId: string): Promise<{ held: string | null }>;
  /** Opens an incident; `devices` are named only when they are in the inventory. */
  openIncident(input: { kind: IncidentKind; title: string; description: string; devices: string[] }): Promise<{ incidentId: string }>;
}

interface Tally {
  hits: number[];
  quietUntil: number;
}

/** The most keys one rule keeps counts for; beyond it, keys with nothing in their window are dropped. */
const MAX_KEYS = 100_000;

/**
 * The Detect function's automatic answers: counts committed security events per rule and key
 * (source or subject) in a sliding window and, at the threshold, raises the rule's event and runs
 * its responses (block the source, suspend the device, open an incident). A response that fails
 * is reported in the raised event; it never fails the request whose event tripped the rule.
 * Counts are per process, like the blocks they lead to.
 */
export class AutomaticResponses implements SourceGuard {
  private readonly tallies = new Map<string, Map<string, Tally>>();

  constructor(
    private readonly rules: DetectionRule[],
    private readonly events: SecurityEvents,
    private readonly blocks: SourceBlocks,
    private readonly ports: ResponsePorts,
    private readonly clock: Clock,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {
    for (const r of rules) this.tallies.set(r.name, new Map());
    events.listen((recorded) => this.observe(recorded));
  }

  retryAfter(source: string): number {
    return this.blocks.retryAfter(source);
  }

  /** A success from the source: its failures so far no longer count towards a block. */
  succeeded(source: string): void {
    for (const r of this.rules) if (r.actions.includes('block-source')) this.tallies.get(r.name)!.delete(source);
    this.blocks.succeeded(source);
  }

  private async observe(recorded: RecordedEvent[]): Promise<void> {
    for (const e of recorded) {
      if (e.details.rule !== undefined) continue; // raised by a rule: never counted, so rules cannot feed each other
      for (const rule of this.rules) {
        if (!rule.on.includes(e.kind)) continue;
        const key = rule.per === 'source' ? e.source : e.subject;
        if (key && this.count(rule, key)) await this.fire(rule, key, e);
      }
    }
  }

  /** Counts one event; true when it reaches the threshold. */
  private count(rule: DetectionRule, key: string): boolean {
    const now = this.clock.now().getTime();
    const tallies = this.tallies.get(rule.name)!;
    const t = tallies.get(key) ?? { hits: [], quietUntil: 0 };
    if (now < t.quietUntil) return false;
    const from = now - rule.windowSeconds * 1000;
    t.hits = t.hits.filter((h) => h > from);
    t.hits.push(now);
    tallies.set(key, t);
    if (tallies.size > MAX_KEYS) prune(tallies, from, now);
    if (t.hits.length < rule.threshold) return false;
    t.hits = [];
    t.quietUntil = now + rule.cooldownSeconds * 1000;
    return true;
  }

  private async fire(rule: DetectionRule, key: string, last: RecordedEvent): Promise<void> {
    const responses: Record<string, unknown> = {};
    for (const action of rule.actions) {
      try {
        responses[action] = await this.respond(action, rule, key, last);
      } catch (e) {
        this.onError(e);
        responses[action] = { error: e instanceof Error ? e.message : String(e) };
      }
    }
    const blocked = responses['block-source'] as { retryAfterSeconds?: number } | undefined;
    try {
      await this.events.record({
        kind: rule.raise.kind,
        severity: rule.raise.severity,
        source: rule.per === 'source' ? key : (last.source ?? undefined),
        subject: rule.per === 'subject' ? key : (last.subject ?? undefined),
        requestId: last.requestId ?? undefined,
        details: {
          rule: rule.name,
          count: rule.threshold,
          windowSeconds: rule.windowSeconds,
          of: rule.on,
          lastEventId: last.id,
          responses,
          ...(blocked?.retryAfterSeconds ? { retryAfterSeconds: blocked.retryAfterSeconds } : {}),
        },
      });
    } catch (e) {
      this.onError(e);
    }
  }

  private async respond(action: ResponseAction, rule: DetectionRule, key: string, last: RecordedEvent): Promise<Record<string, unknown>> {
    const why = `${rule.threshold} × ${rule.on.join('/')} within ${rule.windowSeconds} s (rule ${rule.name})`;
    switch (action) {
      case 'block-source':
        return { retryAfterSeconds: this.blocks.block(key) };
      case 'suspend-device':
        return this.ports.suspendDevice(key);
      case 'open-incident': {
        const title = rule.per === 'source' ? `${rule.raise.kind} from ${key}` : `${rule.raise.kind}: ${key}`;
        const devices = rule.per === 'subject' ? [key] : last.subject ? [last.subject] : [];
        return this.ports.openIncident({
          kind: rule.incidentKind as IncidentKind,
          title,
          description: `Opened by detection: ${why}. Last event ${last.id} (${last.kind}).`,
          devices,
        });
      }
    }
  }
}

function prune(tallies: Map<string, Tally>, from: number, now: number): void {
  for (const [k, t] of tallies) if (t.quietUntil <= now && t.hits.every((h) => h <= from)) tallies.delete(k);
}
