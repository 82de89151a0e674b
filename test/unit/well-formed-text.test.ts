import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { badTextIn } from '../../src/http/well-formed-text.js';

describe('badTextIn: the request text PostgreSQL and UTF-8 cannot hold', () => {
  it('passes text, paired surrogates (emoji) and U+FFFD; ignores numbers, booleans, null and bytes', () => {
    assert.equal(badTextIn({ a: 'ü😀\uFFFD', b: [1, true, null, { c: '\ud83d\ude00' }], d: Buffer.from([0]) }, '/body'), undefined);
    assert.equal(badTextIn(undefined, '/body'), undefined);
  });

  it('names the first NUL or unpaired surrogate by its JSON pointer: values, array items, object keys', () => {
    assert.deepEqual(badTextIn({ name: 'ok', labels: { site: 'x\u0000' } }, '/body'), {
      path: '/body/labels/site',
      message: 'must not contain NUL (U+0000)',
    });
    assert.deepEqual(badTextIn({ devices: ['ok', 'x\ud800'] }, '/body'), {
      path: '/body/devices/1',
      message: 'must not contain an unpaired UTF-16 surrogate',
    });
    assert.deepEqual(badTextIn({ title: '\udc00 low half first' }, '/body'), {
      path: '/body/title',
      message: 'must not contain an unpaired UTF-16 surrogate',
    });
    assert.deepEqual(badTextIn({ labels: { 'a/b\u0000': 'v' } }, '/body'), {
      path: '/body/labels/a~1b\uFFFD',
      message: 'a key must not contain NUL (U+0000)',
    });
    assert.deepEqual(badTextIn({ site: 'x\u0000' }, '/query'), { path: '/query/site', message: 'must not contain NUL (U+0000)' });
  });

  it('gives the line of a multi-line text body (a CSV manifest)', () => {
    assert.deepEqual(badTextIn('id,kind\nd-1,client\nd-2\u0000,client\n', '/body'), {
      path: '/body',
      message: 'must not contain NUL (U+0000) (line 3)',
    });
  });

  it('walks a deeply nested body without recursion', () => {
    let deep: unknown = 'x\u0000';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    assert.equal(badTextIn(deep, '/body')?.message, 'must not contain NUL (U+0000)');
  });
});
