import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { redactSecrets, safeErrorSerializer } from '../../src/shared/log-redaction.js';

describe('log redaction', () => {
  it('redacts secret-named fields at any depth and keeps the rest', () => {
    const out = redactSecrets({
      keyId: 'ak_1',
      keyAlgorithm: 'EC-P256',
      role: 'admin',
      password: 'p',
      nested: { token: 't', apiKey: 'k', tokenHash: 'h', list: [{ secret: 's', name: 'n' }] },
    });
    assert.deepEqual(out, {
      keyId: 'ak_1',
      keyAlgorithm: 'EC-P256',
      role: 'admin',
      password: '[redacted]',
      nested: { token: '[redacted]', apiKey: '[redacted]', tokenHash: '[redacted]', list: [{ secret: '[redacted]', name: 'n' }] },
    });
  });

  it('a database error keeps its code and statement but loses bound values, row contents and quoted input', () => {
    const err = Object.assign(new Error('select $1::uuid - invalid input syntax for type uuid: "secret-value"'), {
      name: 'error',
      severity: 'ERROR',
      code: '22P02',
      routine: 'string_to_uuid',
      params: ['secret-value'],
      detail: 'Key (h)=(\\xsecret) already exists.',
    });
    err.stack = `error: ${err.message}\n    at somewhere (file.js:1:1)`;
    const s = JSON.stringify(safeErrorSerializer(err));
    assert.ok(!s.includes('secret'), s);
    const o = JSON.parse(s) as Record<string, unknown>;
    assert.equal(o.code, '22P02');
    assert.match(String(o.message), /^select \$1::uuid - invalid input syntax for type uuid: "\[redacted\]"$/);
    assert.match(String(o.stack), /at somewhere/);
  });

  it('the cause of an error is cleaned too, and secret-named fields of any error', () => {
    const cause = Object.assign(new Error('unique violation'), {
      name: 'error',
      severity: 'ERROR',
      code: '23505',
      detail: 'Key (token_hash)=(\\xsecret) already exists.',
    });
    const err = Object.assign(new Error('enrollment failed', { cause }), { token: 'secret-token' });
    const s = JSON.stringify(safeErrorSerializer(err));
    assert.ok(!s.includes('secret'), s);
    assert.match(s, /unique violation/);
  });
});
