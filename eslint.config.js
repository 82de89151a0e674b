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

/** Top-level entries of src/ (folders, and the composition-root files without `.ts`). */
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
  'jobs',
  'http',
];
const COMPOSITION_ROOT = ['main', 'cli', 'bootstrap'];

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

function boundary(files, patterns, paths = []) {
  return {
    files,
    rules: {
      'no-restricted-imports': ['error', { paths, patterns }],
    },
  };
}

const others = (...allowed) => SRC_FOLDERS.filter((f) => !allowed.includes(f));
const DOMAIN = ['enroll', 'revoke', 'rotate', 'respond', 'audit', 'access'];
const ADAPTERS_AND_ROOT = ['http', 'jobs', ...COMPOSITION_ROOT];

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

  // ---- import boundaries (docs/architecture.md, Layout) -------------------------------------

  // shared: imports nothing from other src folders.
  boundary(
    ['src/shared/**/*.ts'],
    [forbidSrc([...others('shared'), ...COMPOSITION_ROOT], 'src/shared imports nothing from other src folders.')],
  ),

  // config: only shared.
  boundary(
    ['src/config/**/*.ts'],
    [forbidSrc([...others('shared'), ...COMPOSITION_ROOT], 'src/config may import only src/shared.')],
  ),

  // ca: the authority knows nothing of registration, adapters or the composition root.
  boundary(
    ['src/ca/**/*.ts'],
    [
      forbidSrc(
        ['http', 'enroll', 'revoke', 'rotate', 'respond', 'jobs', 'broker', ...COMPOSITION_ROOT],
        'src/ca may import only src/shared and store ports (no registration, adapters or composition root).',
      ),
    ],
  ),

  // store: speaks SQL for everyone, depends on no service or adapter (type imports from ca are fine).
  boundary(
    ['src/store/**/*.ts'],
    [
      forbidSrc(
        ['http', 'enroll', 'revoke', 'rotate', 'respond', 'jobs', ...COMPOSITION_ROOT],
        'src/store may not import services, adapters or the composition root.',
      ),
    ],
  ),

  // domain folders: no HTTP, no composition root, no Express.
  boundary(
    DOMAIN.map((d) => `src/${d}/**/*.ts`),
    [
      forbidSrc(
        ADAPTERS_AND_ROOT.filter((x) => x !== 'jobs'),
        'Domain code may not import src/http or the composition root (src/main, src/cli).',
      ),
      { group: ['express/*'], message: 'Domain code may not depend on Express; that belongs in src/http.' },
    ],
    [{ name: 'express', message: 'Domain code may not depend on Express; that belongs in src/http.' }],
  ),

  // broker: only shared.
  boundary(
    ['src/broker/**/*.ts'],
    [forbidSrc([...others('shared'), ...COMPOSITION_ROOT], 'src/broker may import only src/shared.')],
  ),

  // migrations: nothing from src/ (they must keep working as the code moves on).
  boundary(
    ['migrations/**/*.ts'],
    [{ regex: '^(\\.\\./)+src(/|$)', message: 'Migrations may not import from src/.' }],
  ),
);
