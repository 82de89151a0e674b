// The Detect outcomes on the bus as the posture report judges them from the watch's figures: met
// only when a rule watches for it, the sources observe all it counts, every broker is watched now
// with no gap open and nine in ten active devices were seen; never met when something is not observed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { busOutcome } from '../../src/detect/posture.js';
import { busFigures, describedWatchRules, type BusFigures, type BusPostureSources } from '../../src/detect/bus-posture.js';
import { DEFAULT_RULES, isWatchRule } from '../../src/shared/detection-rules.js';

const now = new Date('2026-12-07T12:00:00Z');
const rule = (over: Partial<BusFigures['rules'][number]> = {}): BusFigures['rules'][number] => ({
  rule: 'bus-topic-scan',
  watch: 'topic-scan',
  raises: 'bus.topic-scan',
  observed: true,
  summary: 'bus-topic-scan: 20 distinct topics or 5 denials within 60 s per client → block-client, open-incident',
  ...over,
});
const figures = (over: Partial<BusFigures> = {}): BusFigures => ({
  brokers: [{ broker: 'mosquitto', watchedUntil: now.toISOString(), watchedNow: true }],
  coverage: { activeSeen24h: 95, active: 100, share: 0.95 },
  rules: [rule()],
  gaps24h: [],
  gapsComplete: true,
  lag24h: { count: 3, p50Seconds: 0.4, p99Seconds: 1.2 },
  ...over,
});
const events = [{ kind: 'bus.topic-scan', n: 2 }];

describe('the posture of the bus', () => {
  it('without a watch, or without a rule for it, is unmet and says it is not observed', () => {
    for (const [bus, why] of [
      [null, /no bus watch runs/],
      [figures({ brokers: [] }), /no bus watch runs/],
      [figures({ rules: [] }), /no DETECTION_RULES watch rule for topic-scan/],
    ] as const) {
      const o = busOutcome(bus, ['topic-scan'], events);
      assert.equal(o.status, 'unmet');
      assert.equal(o.observed, false);
      assert.match(o.evidence, /^not observed: /);
      assert.match(o.evidence, why);
    }
  });

  it('a rule whose input no source observes is unmet with the reason; a broker not watched now is unmet', () => {
    const unseen = busOutcome(
      figures({ rules: [rule({ observed: false, why: 'publish is not observed (debug level only)' })] }),
      ['topic-scan'],
      events,
    );
    assert.equal(unseen.status, 'unmet');
    assert.match(unseen.evidence, /^not observed: bus-topic-scan: publish is not observed \(debug level only\)/);
    const stale = busOutcome(
      figures({ brokers: [{ broker: 'mosquitto', watchedUntil: '2026-12-07T11:00:00.000Z', watchedNow: false }] }),
      ['topic-scan'],
      events,
    );
    assert.equal(stale.status, 'unmet');
    assert.match(stale.evidence, /^not observed: no broker is being watched now \(mosquitto last 2026-12-07T11:00:00.000Z\)/);
  });

  it('observed, watched now, no gap open and 95 % seen is met, with the rule, its events, coverage, gaps and lag as evidence', () => {
    const o = busOutcome(
      figures({
        gaps24h: [
          {
            broker: 'mosquitto',
            source: 'mosquitto-sys-log',
            from: '2026-12-07T03:00:00.000Z',
            to: '2026-12-07T03:05:00.000Z',
            why: 'broker-down',
          },
        ],
      }),
      ['topic-scan'],
      events,
    );
    assert.equal(o.status, 'met');
    assert.match(
      o.evidence,
      /^bus-topic-scan: 20 distinct topics or 5 denials within 60 s per client → block-client, open-incident; 2 raised in 24 h; 95\.0 % of active devices seen in 24 h on mosquitto/,
    );
    assert.match(o.evidence, /gaps in 24 h: mosquitto 2026-12-07T03:00:00.000Z–2026-12-07T03:05:00.000Z \(broker-down\)/);
    assert.match(o.evidence, /act to event p50 0.4 s, p99 1.2 s over 3 bus events/);
  });

  it('is partial with a gap open, a coverage under 90 %, a rule observing only part of its input, or a second broker not watched', () => {
    const cases: [string, BusFigures][] = [
      [
        'gap open',
        figures({
          gaps24h: [{ broker: 'mosquitto', source: 'mosquitto-log-file', from: now.toISOString(), to: null, why: 'file-missing' }],
        }),
      ],
      ['coverage', figures({ coverage: { activeSeen24h: 80, active: 100, share: 0.8 } })],
      ['part of its input', figures({ rules: [rule({ note: 'counts subscribe only: acl-denied is not observed' })] })],
      [
        'a broker not watched',
        figures({
          brokers: [
            { broker: 'mosquitto', watchedUntil: now.toISOString(), watchedNow: true },
            { broker: 'emqx-1', watchedUntil: null, watchedNow: false },
          ],
        }),
      ],
    ];
    for (const [what, bus] of cases) {
      const o = busOutcome(bus, ['topic-scan'], events);
      assert.equal(o.status, 'partial', what);
      assert.equal(o.observed, true, what);
    }
    assert.match(busOutcome(cases[2]![1], ['topic-scan'], events).evidence, /\(counts subscribe only: acl-denied is not observed\)/);
  });

  it('figures: the brokers watched within two minutes are watched now; coverage caps at 1; the default rules are described', async () => {
    const rules = DEFAULT_RULES.filter(isWatchRule);
    const src: BusPostureSources = {
      brokers: () => ['mosquitto', 'emqx-1'],
      watchedUntil: async () =>
        new Map([
          ['mosquitto', new Date(now.getTime() - 60_000)],
          ['emqx-1', new Date(now.getTime() - 5 * 60_000)],
        ]),
      gaps: async () => ({ gaps: [], complete: true }),
      rules: () =>
        describedWatchRules(
          rules,
          rules.map((r) => ({ rule: r.name, watch: r.watch, observed: true })),
        ),
      activeSeen: async () => 0,
      lag: async () => null,
    };
    const f = await busFigures(src, now, { active: 10, activeSeen: 12 });
    assert.deepEqual(
      f.brokers.map((b) => [b.broker, b.watchedNow]),
      [
        ['mosquitto', true],
        ['emqx-1', false],
      ],
    );
    assert.equal(f.coverage.share, 1);
    assert.equal(f.rules.length, rules.length);
    const scan = f.rules.find((r) => r.watch === 'topic-scan')!;
    assert.equal(scan.raises, 'bus.topic-scan');
    assert.match(scan.summary, /^bus-topic-scan: .* per client → block-client, open-incident$/);
  });
});
