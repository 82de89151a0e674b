// ESLint flat config: @eslint/js + typescript-eslint recommended (syntax only, no type
// information, so `npx eslint .` stays fast), plus the import boundaries of
// docs/architecture.md ("Layout", third column) as `no-restricted-imports`.
//
// How the boundaries are matched: each rule below looks at the import specifier as written
// (`../http/app.js`, `../../ca/keys.js`), not at the resolved file. A relative specifier that
// climbs one or more `../` and then names a top-level folder of src/ is taken to point at that
// folder. The names are distinct from every sub-folder in use, so this is exact in practice;
// if a sub-folder is ever named like a top-level folder (say `src/revoke/ca/`), move it or
// tighten the regex. Dynamic `import()` is not checked by this rule.
//
// `no-restricted-imports` options do not merge across config objects: the last object that
// matches a file wins. That is why every folder below gets exactly one object, and why the
// folders' `files` globs do not overlap.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

/** Top-level folders of src/. */
const SRC_FOLDERS = [
  'config',
  'shared',
  'ca',
  'store',
  'enroll',
  'revoke',
  'rotate',
  'respond',
  'audit',
  'access',
  'broker',
  'detect',
  'jobs',
  'http',
];
/** The composition root: the top-level files of src/, named without `.ts`. */
const COMPOSITION_ROOT = ['main', 'cli', 'bootstrap', 'broker-identity', 'cluster'];

/**
 * A `no-restricted-imports` pattern that forbids relative imports reaching the given top-level
 * src entries: `../http/x.js`, `../../http/x.js`, `../main.js`, `../main`.
 */
function forbidSrc(names, message) {
  const alternatives = names.map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
  return {
    regex: `^(\\.\\./)+(${alternatives})(/|\\.js$|\\.ts$|$)`,
    message,
  };
}

const X509_MESSAGE = '@peculiar/x509 is for src/ca/x509 only (and tests): the rest of src uses the encoder and parsers there.';
const EXPRESS_MESSAGE = 'Only src/http (and the composition root) may depend on Express.';

/**
 * One folder's `no-restricted-imports`: the src folders it may import (everything else in src/,
 * and the composition root, is refused), and whether it may import Express or @peculiar/x509.
 */
function room(files, allowed, message, { express = false, x509 = false, ignores = [] } = {}) {
  const paths = [];
  const patterns = [];
  if (allowed !== 'all') patterns.push(forbidSrc([...SRC_FOLDERS.filter((f) => !allowed.includes(f)), ...COMPOSITION_ROOT], message));
  if (!express) {
    paths.push({ name: 'express', message: EXPRESS_MESSAGE });
    patterns.push({ group: ['express/*'], message: EXPRESS_MESSAGE });
  }
  if (!x509) {
    paths.push({ name: '@peculiar/x509', message: X509_MESSAGE });
    patterns.push({ group: ['@peculiar/x509/*'], message: X509_MESSAGE });
  }
  return {
    files,
    ...(ignores.length ? { ignores } : {}),
    rules: {
      'no-restricted-imports': ['error', { paths, patterns }],
    },
  };
}

/** Node's globals, for the few plain-JS files (config, scripts, bin). */
const nodeGlobals = Object.fromEntries(
  [
    'process',
    'console',
    'Buffer',
    'URL',
    'URLSearchParams',
    'setTimeout',
    'clearTimeout',
    'setInterval',
    'clearInterval',
    'setImmediate',
    'clearImmediate',
    'queueMicrotask',
    'structuredClone',
    'globalThis',
    'TextEncoder',
    'TextDecoder',
    'AbortController',
    'fetch',
  ].map((name) => [name, 'readonly']),
);

export default defineConfig(
  {
    ignores: ['dist/', 'node_modules/', 'data/', '.tmp/', 'coverage/'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        {
          argsIgnorePattern: '^_',
          varsIgnorePattern: '^_',
          caughtErrorsIgnorePattern: '^_',
          destructuredArrayIgnorePattern: '^_',
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    languageOptions: { globals: nodeGlobals },
  },
  {
    // Tests and benchmarks poke at internals and untyped library corners.
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },

  // ---- import boundaries (docs/architecture.md, Layout: this list and that table say the same) ----

  room(['src/shared/**/*.ts'], [], 'src/shared imports nothing from other src folders.'),
  room(['src/config/**/*.ts'], ['shared'], 'src/config may import only src/shared.'),

  // ca: the authority knows nothing of registration, detection, adapters or the composition root.
  room(['src/ca/**/*.ts'], ['shared', 'store', 'audit'], 'src/ca may import only src/shared, store ports and the audit log.', {
    ignores: ['src/ca/x509/**'],
  }),
  room(['src/ca/x509/**/*.ts'], ['shared', 'store', 'audit'], 'src/ca may import only src/shared, store ports and the audit log.', {
    x509: true,
  }),

  // store: speaks SQL for everyone and depends on no service or adapter.
  room(['src/store/**/*.ts'], ['shared'], 'src/store may import only src/shared (services and adapters depend on it, not the other way).'),

  // the domain rooms.
  room(['src/audit/**/*.ts'], ['shared', 'store'], 'src/audit may import only src/shared and store ports.'),
  room(['src/access/**/*.ts'], ['shared', 'store', 'audit'], 'src/access may import only src/shared, store ports and the audit log.'),
  room(
    ['src/enroll/**/*.ts'],
    ['shared', 'store', 'audit', 'ca', 'detect'],
    'src/enroll may import only src/shared, store ports, the audit log, ca and detect (events, rate limits, source blocks).',
  ),
  room(
    ['src/revoke/**/*.ts'],
    ['shared', 'store', 'audit', 'ca'],
    'src/revoke may import only src/shared, store ports, the audit log and ca.',
  ),
  room(
    ['src/rotate/**/*.ts'],
    ['shared', 'store', 'audit', 'ca', 'enroll', 'revoke', 'detect'],
    'src/rotate may import only src/shared, store ports, the audit log, ca, enroll, revoke and detect.',
  ),
  room(
    ['src/respond/**/*.ts'],
    ['shared', 'store', 'audit', 'access', 'ca', 'enroll', 'revoke', 'rotate', 'broker'],
    'src/respond may import only src/shared, store ports, the domain rooms (audit, access, ca, enroll, revoke, rotate) and broker.',
  ),
  room(
    ['src/detect/**/*.ts'],
    ['shared', 'store', 'audit', 'ca', 'revoke', 'broker', 'jobs'],
    'src/detect may import only src/shared, store ports, the audit log, ca, revoke, broker and the jobs overview.',
  ),

  // broker: only shared.
  room(['src/broker/**/*.ts'], ['shared'], 'src/broker may import only src/shared.'),

  // the adapters. jobs runs domain work on a schedule or a queue; it reaches no store, broker or HTTP.
  room(
    ['src/jobs/**/*.ts'],
    ['shared', 'audit', 'access', 'ca', 'enroll', 'revoke', 'rotate', 'respond', 'detect'],
    'src/jobs may import only src/shared and the domain rooms (no store, broker, http, config or composition root).',
  ),
  // http: the services, plus the types it answers with (store statuses, config's listener
  // timeouts, the job runner) and the database-unavailable check of its problem mapper.
  room(
    ['src/http/**/*.ts'],
    SRC_FOLDERS.filter((f) => f !== 'broker'),
    'src/http may not import src/broker or the composition root: brokers are reached through the services.',
    { express: true },
  ),

  // the daily-work command line: a pure HTTP client of the API; no domain, store or service code.
  room(['src/cli/**/*.ts'], ['shared'], 'src/cli (the daily-work commands) may import only src/shared: it talks to the service over HTTP.'),

  // the composition root builds everything, Express included, but reads certificates through src/ca/x509 too.
  room(['src/*.ts'], 'all', '', { express: true }),

  // migrations: nothing from src/ (they must keep working as the code moves on).
  {
    files: ['migrations/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: '@peculiar/x509', message: X509_MESSAGE }],
          patterns: [{ regex: '^(\\.\\./)+src(/|$)', message: 'Migrations may not import from src/.' }],
        },
      ],
    },
  },

  // the web console runs in the browser: it talks to the service through the API only, never its code.
  // One exception: the API's shapes in src/shared/api-views.ts, by `import type` only (erased by
  // esbuild, so nothing of src/ enters the bundle); typescript-eslint's rule tells the two apart.
  {
    files: ['console/**/*.ts', 'console/**/*.tsx'],
    rules: {
      'no-restricted-imports': 'off',
      '@typescript-eslint/no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(\\.\\./)+(?!src/shared/api-views\\.js$)(src|migrations|test|bench)(/|$)',
              message: 'The console uses the API, not the service code.',
            },
            {
              regex: '^(\\.\\./)+src/shared/api-views\\.js$',
              allowTypeImports: true,
              message: 'The console takes only types from src/shared/api-views.ts: `import type`, so none of it enters the bundle.',
            },
            { regex: '^node:', message: 'The console runs in the browser.' },
          ],
        },
      ],
    },
  },
);
