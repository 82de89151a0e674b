// DETECTION_RULES with its two forms: the event rules of before parse as they did, and watch rules
// (the bus detectors) are checked with errors that name the field and the reason.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../src/config/config.js';
import { DEFAULT_RULES, isEventRule, isWatchRule, rulesSchema, WATCH_DETECTORS } from '../../src/shared/detection-rules.js';
import { defaultRule } from '../helpers/detection-rules.js';

/** The default rules as they were before the watch rules (a config written then). */
const OLD = [
  {
    name: 'failing-source',
    on: ['enrollment.refused', 'enrollment.token-invalid', 'enrollment.unknown-identity', 'auth.failed'],
    per: 'source',
    threshold: 10,
    windowSeconds: 60,
    raise: { kind: 'source.blocked', severity: 'warning' },
    actions: ['block-source'],
  },
  {
    name: 'token-guessing',
    on: ['enrollment.token-invalid'],
    per: 'source',
    threshold: 5,
    windowSeconds: 600,
    cooldownSeconds: 3600,
    raise: { kind: 'enrollment.token-guessing', severity: 'critical' },
    actions: ['open-incident'],
    incidentKind: 'credential-leak',
  },
  {
    name: 'failing-identity',
    on: ['enrollment.refused'],
    per: 'subject',
    threshold: 5,
    windowSeconds: 600,
    raise: { kind: 'identity.repeated-failures', severity: 'warning' },
    actions: ['suspend-device'],
  },
];

const scan = {
  name: 'scan',
  watch: 'topic-scan',
  per: 'client',
  distinctTopics: 20,
  windowSeconds: 60,
  raise: { kind: 'bus.topic-scan', severity: 'critical' },
  actions: ['block-client', 'open-incident'],
};

const errors = (value: unknown): string[] => {
  const r = rulesSchema.safeParse(value);
  assert.equal(r.success, false, 'parsed');
  return r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
};

describe('DETECTION_RULES: event rules and watch rules', () => {
  it('configs of before parse unchanged (defaults filled in as they were)', () => {
    const rules = rulesSchema.parse(OLD);
    assert.ok(rules.every(isEventRule));
    assert.deepEqual(
      rules.map((r) => [r.name, 'cooldownSeconds' in r ? r.cooldownSeconds : null, r.incidentKind]),
      [
        ['failing-source', 0, 'device-compromise'],
        ['token-guessing', 3600, 'credential-leak'],
        ['failing-identity', 0, 'device-compromise'],
      ],
    );
    assert.deepEqual(rulesSchema.parse([]), []);
  });

  it('the defaults hold a watch rule for every detector, and parse again as they are', () => {
    const watched = new Set(DEFAULT_RULES.filter(isWatchRule).map((r) => r.watch));
    assert.deepEqual([...watched].sort(), [...WATCH_DETECTORS].sort());
    assert.ok(DEFAULT_RULES.filter(isWatchRule).some((r) => r.watch === 'connect-attempts' && r.per === 'source'));
    assert.deepEqual(rulesSchema.parse(JSON.parse(JSON.stringify(DEFAULT_RULES))), DEFAULT_RULES);
    const abn = DEFAULT_RULES.find((r) => isWatchRule(r) && r.watch === 'abnormal-terminations');
    assert.deepEqual(abn && 'reasons' in abn ? abn.reasons : null, [
      'keepalive-timeout',
      'connection-lost',
      'socket-error',
      'protocol-error',
      'malformed-packet',
    ]);
  });

  it('a watch rule and an event rule side by side', () => {
    const rules = rulesSchema.parse([OLD[0], scan]);
    assert.deepEqual(
      rules.map((r) => [r.name, isWatchRule(r)]),
      [
        ['failing-source', false],
        ['scan', true],
      ],
    );
  });

  it('a wrong watch rule gives its field and its reason', () => {
    const cases: [unknown, RegExp][] = [
      [{ ...scan, watch: 'telepathy' }, /^0\.watch: watch must be one of connect-attempts, /],
      [{ ...scan, distinctTopics: undefined }, /^0\.distinctTopics: topic-scan needs distinctTopics, denials or both/],
      [{ ...scan, per: 'source' }, /^0\.per: /],
      [{ ...scan, raise: { kind: 'topic.scan', severity: 'critical' } }, /^0\.raise\.kind: a watch rule raises a bus\.<\.\.\.> kind/],
      [{ ...scan, actions: ['reboot'] }, /^0\.actions\.0: /],
      [{ ...scan, windowSeconds: 0 }, /^0\.windowSeconds: /],
      [{ ...scan, cooldownSeconds: 5 }, /^0: Unrecognized key: "cooldownSeconds"/],
      [{ ...scan, on: ['x'] }, /^0: Unrecognized key: "on"/],
      [defaultRule('bus-tls-failures', { actions: ['block-client'] }), /^0\.actions: block-client needs per: client or device/],
      [defaultRule('bus-reconnect-loop', { actions: ['block-source'] }), /^0\.actions: block-source needs per: source/],
      [defaultRule('bus-abnormal-terminations', { reasons: ['gremlins'] }), /^0\.reasons\.0: /],
      [defaultRule('bus-silent', { silentAfterSeconds: 5 }), /^0\.silentAfterSeconds: /],
      [defaultRule('bus-client-id-two-sources', { threshold: 1 }), /^0\.threshold: /],
    ];
    for (const [rule, reason] of cases) {
      const found = errors([rule]);
      assert.ok(
        found.some((e) => reason.test(e)),
        `${JSON.stringify(rule)}: ${found.join(' | ')}`,
      );
    }
    // an event rule still gets the event rule's own errors
    assert.deepEqual(errors([{ ...OLD[0], actions: ['block-client'] }]), [
      '0.actions.0: Invalid option: expected one of "block-source"|"suspend-device"|"open-incident"',
    ]);
    assert.deepEqual(errors([scan, scan]), [': rule names must be unique']);
  });

  it('through loadConfig: DETECTION_RULES.<n>.<field>: reason, and the start stops', () => {
    const base = { LOG_LEVEL: 'silent' };
    assert.throws(
      () => loadConfig({ ...base, DETECTION_RULES: JSON.stringify([{ ...scan, watch: 'telepathy' }]) }),
      /DETECTION_RULES\.0\.watch: watch must be one of/,
    );
    const config = loadConfig({ ...base, DETECTION_RULES: JSON.stringify([scan]) });
    assert.deepEqual(
      config.detectionRules.map((r) => r.name),
      ['scan'],
    );
  });
});
