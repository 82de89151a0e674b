import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TokenEnrollment } from '../../src/enroll/token-method.js';
import type { EnrollmentTokens } from '../../src/enroll/tokens.js';
import type { ParsedCsr } from '../../src/ca/x509/csr.js';
import { DomainError } from '../../src/shared/errors.js';

/** Tokens that know no token: whatever reaches them is refused as an unknown token. */
const noTokens = { authenticate: async () => ({ ok: false, reason: 'unknown' }) } as unknown as EnrollmentTokens;
const csr = { commonName: 'dev-1' } as ParsedCsr;
const ctx = { source: '192.0.2.1', requestId: 'r-1' };
const basic = (overTls: boolean) => ({ kind: 'basic' as const, user: 'dev-1', password: 'tok', overTls });
const refusal = async (p: Promise<unknown>) => {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  assert.ok(e instanceof DomainError, `expected a DomainError, got ${String(e)}`);
  return e;
};

describe('EST HTTP Basic and its transport (RFC 7030 3.2.3)', () => {
  it('over plain HTTP is refused before the token is looked at, unless EST_BASIC_OVER_HTTP allows it', async () => {
    const strict = new TokenEnrollment('est-basic', noTokens);
    const e = await refusal(strict.authorize(basic(false), csr, ctx));
    assert.equal(e.kind, 'Forbidden');
    assert.match(e.message, /requires TLS/);

    const behindProxy = new TokenEnrollment('est-basic', noTokens, { basicOverHttp: true });
    assert.equal((await refusal(behindProxy.authorize(basic(false), csr, ctx))).kind, 'Unauthenticated');
  });

  it('over TLS goes on to the token', async () => {
    const strict = new TokenEnrollment('est-basic', noTokens);
    assert.equal((await refusal(strict.authorize(basic(true), csr, ctx))).kind, 'Unauthenticated');
  });
});
