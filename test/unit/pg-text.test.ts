import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pgJsonObject, pgText } from '../../src/shared/pg-text.js';

describe('text for PostgreSQL (no U+0000 in text or jsonb)', () => {
  it('replaces U+0000 in strings, keys and nested values, and leaves everything else as JSON would', () => {
    assert.equal(pgText('a\u0000b\u0000'), 'a\uFFFDb\uFFFD');
    assert.equal(pgText('plain'), 'plain');
    const at = new Date('2026-12-03T00:00:00Z');
    assert.deepEqual(pgJsonObject({ 'k\u0000': ['x\u0000', { y: 'z\u0000', n: 1 }], at, gone: undefined, keep: '\\u0000' }), {
      'k\uFFFD': ['x\uFFFD', { y: 'z\uFFFD', n: 1 }],
      at: '2026-12-03T00:00:00.000Z',
      keep: '\\u0000',
    });
    assert.throws(() => pgJsonObject([] as never), TypeError);
  });

  it('replaces a UTF-16 surrogate without its pair (either half), in text and in jsonb, and keeps pairs', () => {
    assert.equal(pgText('a\ud800b\udc00\u0000'), 'a\uFFFDb\uFFFD\uFFFD');
    assert.equal(pgText('ok 😀'), 'ok 😀');
    assert.equal(pgText('x\u0000y'), 'x\uFFFDy', 'again: the global pattern keeps no state between calls');
    assert.deepEqual(pgJsonObject({ 'k\udbff': ['\udfff', 'ok 😀'] }), { 'k\uFFFD': ['\uFFFD', 'ok 😀'] });
  });
});
