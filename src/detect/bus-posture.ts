// The framework's Detect subcategories on the bus, measured from the bus watch: which detectors run
// with which thresholds and whether the running sources observe what they count, the share of the
// active fleet the watch saw, the times it could not see (gaps), what it raised and how fast.
import type { WatchDetector, WatchRule } from '../shared/detection-rules.js';
import type { RuleObservability } from './bus-detectors.js';
import type { WatchGap } from './bus-watch-gaps.js';

/** A broker counts as watched now when its watch recorded it within this (the watch records every 30 s). */
export const WATCHED_NOW_MS = 2 * 60_000;

/** What the figures are read from: the watch's books in the database, the detectors' rules, presence. */
export interface BusPostureSources {
  /** The brokers the watch is configured for (empty: no watch). */
  brokers(): string[];
  /** Per broker, until when a watching process last recorded it watched (shared by every process). */
  watchedUntil(brokers: string[]): Promise<Map<string, Date>>;
  gaps(since: Date): Promise<{ gaps: WatchGap[]; complete: boolean }>;
  /** Per watch rule, whether the configured sources observe what it counts, the kind it raises and a summary. */
  rules(): (RuleObservability & { raises: string; summary: string })[];
  /** Active devices seen on any watched broker since `since`. */
  activeSeen(since: Date): Promise<number>;
  /** From the broker's time of the act that crossed a threshold to its event, over the bus events since `since`. */
  lag(since: Date): Promise<{ count: number; p50Seconds: number; p99Seconds: number } | null>;
}

export interface BusFigures {
  brokers: { broker: string; watchedUntil: string | null; watchedNow: boolean }[];
  /** Active devices seen on a watched broker in the last 24 h, of the active devices. */
  coverage: { activeSeen24h: number; active: number; share: number | null };
  rules: { rule: string; watch: WatchDetector; raises: string; observed: boolean; why?: string; note?: string; summary: string }[];
  /** Gaps open or ended in the last 24 h; `complete` false when only this process's could be read. */
  gaps24h: { broker: string; source: string; from: string; to: string | null; why: string }[];
  gapsComplete: boolean;
  lag24h: { count: number; p50Seconds: number; p99Seconds: number } | null;
}

export const DAY = 24 * 3600_000;

/** The figures at `now`; the coverage's counts come with the fleet's (they scan the fleet, and are reused as long). */
export async function busFigures(
  src: BusPostureSources,
  now: Date,
  { active, activeSeen }: { active: number; activeSeen: number },
): Promise<BusFigures> {
  const brokers = src.brokers();
  const since = new Date(now.getTime() - DAY);
  const [marks, gaps, lag] = await Promise.all([
    brokers.length ? src.watchedUntil(brokers) : Promise.resolve(new Map<string, Date>()),
    brokers.length ? src.gaps(since) : Promise.resolve({ gaps: [], complete: true }),
    src.lag(since),
  ]);
  return {
    brokers: brokers.map((broker) => {
      const until = marks.get(broker);
      return {
        broker,
        watchedUntil: until?.toISOString() ?? null,
        watchedNow: until !== undefined && now.getTime() - until.getTime() <= WATCHED_NOW_MS,
      };
    }),
    coverage: { activeSeen24h: activeSeen, active, share: active === 0 ? null : Math.min(1, activeSeen / active) },
    rules: src.rules().map((r) => ({
      rule: r.rule,
      watch: r.watch,
      raises: r.raises,
      observed: r.observed,
      ...(r.observed ? (r.note ? { note: r.note } : {}) : { why: r.why }),
      summary: r.summary,
    })),
    gaps24h: gaps.gaps.map((g) => ({
      broker: g.broker,
      source: g.source,
      from: g.from.toISOString(),
      to: g.to?.toISOString() ?? null,
      why: g.why,
    })),
    gapsComplete: gaps.complete,
    lag24h: lag,
  };
}

/** The watch rules with what the detectors say of their observation: the kind each raises and a summary. */
export function describedWatchRules(
  rules: readonly WatchRule[],
  observability: readonly RuleObservability[],
): (RuleObservability & { raises: string; summary: string })[] {
  return observability.flatMap((o) => {
    const rule = rules.find((r) => r.name === o.rule);
    return rule ? [{ ...o, raises: rule.raise.kind, summary: watchRuleSummary(rule) }] : [];
  });
}

/** A watch rule in a few words: what it counts, its threshold and window, what it does. */
export function watchRuleSummary(r: WatchRule): string {
  const per = `per ${r.per}`;
  const within = 'windowSeconds' in r ? ` within ${r.windowSeconds} s` : '';
  const what = (() => {
    switch (r.watch) {
      case 'topic-scan':
        return [r.distinctTopics && `${r.distinctTopics} distinct topics`, r.denials && `${r.denials} denials`]
          .filter(Boolean)
          .join(' or ');
      case 'idle-connected':
        return `connected ${r.idleSeconds} s without a publish`;
      case 'silent':
        return `not seen for ${r.silentAfterSeconds} s${r.lot ? ` (lot ${r.lot})` : ''}${r.profile ? ` (${r.profile}s)` : ''}`;
      case 'revoked-certificate':
        return 'a connect with a revoked, suspended or superseded certificate';
      case 'client-id-two-sources':
        return `one client id from ${r.threshold} hosts`;
      default:
        return `${r.threshold} × ${r.watch}`;
    }
  })();
  const acts = r.actions.length ? ` → ${r.actions.join(', ')}` : '';
  return `${r.name}: ${what}${within} ${per}${acts}`;
}
