import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { checkSameOrigin, clearSessionCookie, sessionIdOf, setSessionCookie } from '../../src/http/console-session.js';

const req = (headers: Record<string, string>, encrypted = false) => ({ headers, socket: { encrypted } }) as unknown as IncomingMessage;
const res = () => {
  const headers: Record<string, string> = {};
  return { headers, setHeader: (k: string, v: string) => void (headers[k.toLowerCase()] = v) } as unknown as ServerResponse & {
    headers: Record<string, string>;
  };
};

describe('console session cookie and origin checks', () => {
  it('marks the cookie Secure over TLS only, always HttpOnly, SameSite=Strict, Path=/', () => {
    const plain = res();
    setSessionCookie(req({}), plain, 'abc', 28800);
    assert.equal(plain.headers['set-cookie'], 'mqca_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=28800');
    const tls = res();
    setSessionCookie(req({}, true), tls, 'abc', 60.7);
    assert.equal(tls.headers['set-cookie'], 'mqca_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure');
    const cleared = res();
    clearSessionCookie(req({}, true), cleared);
    assert.equal(cleared.headers['set-cookie'], 'mqca_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure');
  });

  it('reads the session id from the Cookie header among others, and nothing from a lookalike name', () => {
    assert.equal(sessionIdOf(req({ cookie: 'a=1; mqca_session=xyz; b=2' })), 'xyz');
    assert.equal(sessionIdOf(req({ cookie: 'xmqca_session=xyz; mqca_session_2=q' })), undefined);
    assert.equal(sessionIdOf(req({})), undefined);
    assert.equal(sessionIdOf(req({ cookie: `mqca_session=${'a'.repeat(9000)}` })), undefined);
  });

  it('refuses another site by Sec-Fetch-Site or Origin, and passes same-origin requests and clients that send neither', () => {
    assert.equal(checkSameOrigin(req({ host: 'ca.test:8080' })), undefined);
    assert.equal(checkSameOrigin(req({ host: 'ca.test:8080', 'sec-fetch-site': 'same-origin', origin: 'http://ca.test:8080' })), undefined);
    for (const site of ['cross-site', 'same-site', 'none'])
      assert.equal(checkSameOrigin(req({ host: 'ca.test:8080', 'sec-fetch-site': site }))?.kind, 'Forbidden', site);
    for (const origin of ['http://evil.test', 'http://ca.test:8081', 'null', 'not a url'])
      assert.equal(checkSameOrigin(req({ host: 'ca.test:8080', origin }))?.kind, 'Forbidden', origin);
  });
});
