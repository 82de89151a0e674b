// DEFAULT_RULES as a test sets them: every rule kept, some of their fields changed (tighter
// thresholds, shorter windows, a wrong value to be refused), named by rule.
import { DEFAULT_RULES, type DetectionRule } from '../../src/shared/detection-rules.js';

/** A rule's fields to change, by name. */
export type RuleChanges = Record<string, Record<string, unknown>>;

/** One default rule with some of its fields changed (unparsed: it may be made wrong on purpose). */
export function defaultRule(name: string, change: Record<string, unknown> = {}): Record<string, unknown> {
  const rule = DEFAULT_RULES.find((r) => r.name === name);
  if (!rule) throw new Error(`no default rule is named ${name}`);
  return { ...rule, ...change };
}

/** DEFAULT_RULES in their order, the named ones changed; a name that is no default rule is an error. */
export function defaultRulesWith(changes: RuleChanges): (DetectionRule | Record<string, unknown>)[] {
  for (const name of Object.keys(changes)) defaultRule(name);
  return DEFAULT_RULES.map((r) => (changes[r.name] ? defaultRule(r.name, changes[r.name]) : r));
}
