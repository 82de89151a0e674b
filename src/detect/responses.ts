import type { Clock } from '../shared/clock.js';
import type { RecordedEvent, SecurityEvents } from './security-events.js';
import { isEventRule, type DetectionRule, type EventRule } from '../shared/detection-rules.js';
import type { SourceBlocks, SourceGuard } from './source-blocks.js';
import { ResponseRunner, type ResponsePorts } from './response-runner.js';

export type { ResponsePorts } from './response-runner.js';

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
  private readonly rules: EventRule[];
  /** How actions run, shared with the bus detectors (one SourceBlocks, one set of ports). */
  readonly runner: ResponseRunner;

  constructor(
    rules: DetectionRule[],
    private readonly events: SecurityEvents,
    private readonly blocks: SourceBlocks,
    ports: ResponsePorts,
    private readonly clock: Clock,
    private readonly onError: (e: unknown) => void = () => undefined,
  ) {
    this.rules = rules.filter(isEventRule); // watch rules are counted by the bus detectors
    this.runner = new ResponseRunner(ports, blocks, onError);
    for (const r of this.rules) this.tallies.set(r.name, new Map());
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
  private count(rule: EventRule, key: string): boolean {
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

  private async fire(rule: EventRule, key: string, last: RecordedEvent): Promise<void> {
    const why = `${rule.threshold} × ${rule.on.join('/')} within ${rule.windowSeconds} s (rule ${rule.name})`;
    const responses = await this.runner.run(rule.actions, {
      rule,
      source: rule.per === 'source' ? key : undefined,
      identity: rule.per === 'subject' ? key : undefined,
      why,
      incident: {
        title: rule.per === 'source' ? `${rule.raise.kind} from ${key}` : `${rule.raise.kind}: ${key}`,
        evidence: `Last event ${last.id} (${last.kind}).`,
        devices: rule.per === 'subject' ? [key] : last.subject ? [last.subject] : [],
      },
    });
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
}

function prune(tallies: Map<string, Tally>, from: number, now: number): void {
  for (const [k, t] of tallies) if (t.quietUntil <= now && t.hits.every((h) => h <= from)) tallies.delete(k);
}
