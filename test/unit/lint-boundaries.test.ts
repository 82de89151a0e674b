/**
 * The import boundaries of eslint.config.js (docs/architecture.md, Layout) hold: each snippet below
 * is linted as if it were a file at `path`, and must give a no-restricted-imports error (refused)
 * or none (allowed). Both lists exist so that the test fails if a rule goes missing and if one
 * grows too wide.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { ESLint } from 'eslint';

const root = fileURLToPath(new URL('../..', import.meta.url));
const eslint = new ESLint({ cwd: root });

async function restrictions(path: string, specifier: string, typeOnly = false): Promise<string[]> {
  const code = typeOnly
    ? `import type { T } from '${specifier}';\nexport type { T };\n`
    : `import * as m from '${specifier}';\nexport { m };\n`;
  const [result] = await eslint.lintText(code, { filePath: join(root, path) });
  assert.ok(result, `no lint result for ${path}`);
  const fatal = result.messages.filter((m) => m.fatal || m.ruleId === null);
  assert.deepEqual(fatal, [], `${path} was not linted`);
  // The console's block uses typescript-eslint's version of the rule (it tells type imports apart).
  return result.messages
    .filter((m) => m.ruleId === 'no-restricted-imports' || m.ruleId === '@typescript-eslint/no-restricted-imports')
    .map((m) => m.message);
}

/** [file, import specifier, what the message must mention] */
const REFUSED: Array<[string, string, RegExp]> = [
  // the gaps issue #24 closed
  ['src/ca/fake.ts', '../detect/telemetry.js', /src\/ca may import only/],
  ['src/config/fake.ts', '../detect/rules.js', /src\/config may import only src\/shared/],
  ['src/detect/fake.ts', '../http/app.js', /src\/detect may import only/],
  ['src/detect/fake.ts', '../respond/incidents.js', /src\/detect may import only/],
  ['src/detect/fake.ts', '../main.js', /src\/detect may import only/],
  ['src/detect/fake.ts', 'express', /Express/],
  ['src/http/fake.ts', '../broker/connector.js', /src\/http may not import src\/broker/],
  ['src/http/routes/fake.ts', '../../main.js', /src\/http may not import/],
  ['src/http/routes/fake.ts', '../../broker-identity.js', /src\/http may not import/],
  ['src/jobs/fake.ts', '../http/app.js', /src\/jobs may import only/],
  ['src/jobs/fake.ts', '../store/db.js', /src\/jobs may import only/],
  ['src/jobs/fake.ts', '../broker/connector.js', /src\/jobs may import only/],
  ['src/jobs/fake.ts', '../config/config.js', /src\/jobs may import only/],
  ['src/jobs/fake.ts', 'express', /Express/],
  // @peculiar/x509 outside src/ca/x509
  ['src/ca/fake.ts', '@peculiar/x509', /src\/ca\/x509 only/],
  ['src/enroll/fake.ts', '@peculiar/x509', /src\/ca\/x509 only/],
  ['src/http/fake.ts', '@peculiar/x509', /src\/ca\/x509 only/],
  ['src/main-fake.ts', '@peculiar/x509', /src\/ca\/x509 only/],
  ['migrations/fake.ts', '@peculiar/x509', /src\/ca\/x509 only/],
  // the rest of the table
  ['src/shared/fake.ts', '../ca/keys.js', /src\/shared imports nothing/],
  ['src/shared/fake.ts', '../detect/telemetry.js', /src\/shared imports nothing/],
  ['src/ca/fake.ts', '../enroll/methods.js', /src\/ca may import only/],
  ['src/ca/x509/fake.ts', '../../enroll/methods.js', /src\/ca may import only/],
  ['src/ca/x509/fake.ts', '../../detect/telemetry.js', /src\/ca may import only/],
  ['src/store/fake.ts', '../ca/hierarchy.js', /src\/store may import only/],
  ['src/store/fake.ts', '../audit/audit-log.js', /src\/store may import only/],
  ['src/audit/fake.ts', '../ca/issuance.js', /src\/audit may import only/],
  ['src/access/fake.ts', '../enroll/devices.js', /src\/access may import only/],
  ['src/enroll/fake.ts', '../http/app.js', /src\/enroll may import only/],
  ['src/enroll/fake.ts', '../rotate/renewals.js', /src\/enroll may import only/],
  ['src/enroll/est/fake.ts', '../../cli.js', /src\/enroll may import only/],
  ['src/enroll/fake.ts', 'express', /Express/],
  ['src/revoke/fake.ts', '../detect/telemetry.js', /src\/revoke may import only/],
  ['src/revoke/fake.ts', 'express/lib/router.js', /Express/],
  ['src/rotate/fake.ts', '../respond/incidents.js', /src\/rotate may import only/],
  ['src/respond/fake.ts', '../jobs/runner.js', /src\/respond may import only/],
  ['src/respond/fake.ts', '../detect/responses.js', /src\/respond may import only/],
  ['src/broker/fake.ts', '../store/db.js', /src\/broker may import only/],
  ['src/cli/fake.ts', '../store/db.js', /src\/cli \(the daily-work commands\) may import only/],
  ['src/cli/commands/fake.ts', '../../enroll/devices.js', /src\/cli \(the daily-work commands\) may import only/],
  ['src/cli/commands/fake.ts', '../../main.js', /src\/cli \(the daily-work commands\) may import only/],
  ['src/cli/fake.ts', 'express', /Express/],
  ['src/enroll/fake.ts', '../cli/api-client.js', /src\/enroll may import only/],
  ['migrations/fake.ts', '../src/shared/ids.js', /Migrations may not import from src/],
  // the console: the API only, and of src/ the API's shapes by type alone
  ['console/src/fake.ts', '../../src/shared/clock.js', /The console uses the API/],
  ['console/src/pages/fake.tsx', '../../../src/enroll/devices.js', /The console uses the API/],
  ['console/src/fake.ts', '../../src/shared/api-views.js', /only types from src\/shared\/api-views.ts/],
  ['console/src/fake.ts', 'node:fs', /runs in the browser/],
];

/** One allowed import per folder at least. */
const ALLOWED: Array<[string, string]> = [
  ['src/shared/fake.ts', './errors.js'],
  ['src/shared/fake.ts', 'zod'],
  ['src/config/fake.ts', '../shared/detection-rules.js'],
  ['src/ca/fake.ts', '../shared/telemetry.js'],
  ['src/ca/fake.ts', '../store/ca-store.js'],
  ['src/ca/fake.ts', '../audit/audit-log.js'],
  ['src/ca/x509/fake.ts', '@peculiar/x509'],
  ['src/ca/x509/fake.ts', '../../shared/ids.js'],
  ['src/store/fake.ts', '../shared/security-terms.js'],
  ['src/audit/fake.ts', '../store/audit-store.js'],
  ['src/access/fake.ts', '../audit/audit-log.js'],
  ['src/enroll/fake.ts', '../detect/rate-limits.js'],
  ['src/enroll/fake.ts', '../ca/issuance.js'],
  ['src/revoke/fake.ts', '../ca/hierarchy.js'],
  ['src/rotate/fake.ts', '../enroll/devices.js'],
  ['src/respond/fake.ts', '../broker/connector.js'],
  ['src/respond/fake.ts', '../rotate/session-keys.js'],
  ['src/detect/fake.ts', '../revoke/crl-watch.js'],
  ['src/detect/fake.ts', '../jobs/runner.js'],
  ['src/broker/fake.ts', '../shared/errors.js'],
  ['src/jobs/fake.ts', '../rotate/renewals.js'],
  ['src/http/fake.ts', 'express'],
  ['src/http/fake.ts', '../respond/incidents.js'],
  ['src/http/fake.ts', '../store/db.js'],
  ['src/cli/commands/fake.ts', '../../shared/page.js'],
  ['src/cli/commands/fake.ts', '../api-client.js'],
  ['src/cli/fake.ts', 'commander'],
  ['src/main-fake.ts', './cli/index.js'],
  ['src/main-fake.ts', './http/app.js'],
  ['src/main-fake.ts', 'express'],
  ['test/unit/fake.test.ts', '@peculiar/x509'],
  ['test/unit/fake.test.ts', '../../src/store/db.js'],
  ['bench/fake.ts', '@peculiar/x509'],
  ['migrations/fake.ts', 'knex'],
  ['console/src/fake.ts', 'preact'],
];

/** Allowed as `import type` only (the value import is in REFUSED). */
const ALLOWED_TYPES: Array<[string, string]> = [
  ['console/src/fake.ts', '../../src/shared/api-views.js'],
  ['console/src/pages/fake.tsx', '../../../src/shared/api-views.js'],
];

describe('import boundaries (eslint.config.js)', () => {
  for (const [path, specifier, mention] of REFUSED) {
    it(`refuses ${specifier} in ${path}`, async () => {
      const messages = await restrictions(path, specifier);
      assert.equal(messages.length, 1, `expected one no-restricted-imports error, got ${JSON.stringify(messages)}`);
      assert.match(messages[0]!, mention);
    });
  }
  for (const [path, specifier] of ALLOWED) {
    it(`allows ${specifier} in ${path}`, async () => {
      assert.deepEqual(await restrictions(path, specifier), []);
    });
  }
  for (const [path, specifier] of ALLOWED_TYPES) {
    it(`allows import type from ${specifier} in ${path}`, async () => {
      assert.deepEqual(await restrictions(path, specifier, true), []);
    });
  }
});
