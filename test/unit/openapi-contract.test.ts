import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ContractError, operationContract } from '../../src/http/openapi-contract.js';

describe('operationContract (openapi.yaml for the handlers in front of Express)', () => {
  const enroll = operationContract('/v1/enroll', 'post');
  const result = {
    serial: '0a1b',
    certificate: '-----BEGIN CERTIFICATE-----',
    chain: ['a', 'b'],
    caId: 'ca_1',
    notBefore: '2026-11-25T00:00:00.000Z',
    notAfter: '2027-11-25T00:00:00.000Z',
  };

  it('checks responses against the documented schema, status and media type', () => {
    assert.deepEqual(enroll.responseErrors(201, 'application/json', result), []);
    assert.notDeepEqual(enroll.responseErrors(201, 'application/json', { ...result, serial: 'XYZ' }), []);
    assert.notDeepEqual(enroll.responseErrors(201, 'application/json', { ...result, notAfter: 'tomorrow' }), []);
    assert.notDeepEqual(enroll.responseErrors(201, 'application/json', { ...result, extra: 1 }), []);
    const { chain: _chain, ...noChain } = result;
    assert.notDeepEqual(enroll.responseErrors(201, 'application/json', noChain), []);
    assert.notDeepEqual(enroll.responseErrors(200, 'application/json', result), [], '200 is not documented');
    assert.deepEqual(enroll.responseErrors(403, 'application/problem+json', { type: 'urn:x', title: 'Forbidden', status: 403 }), []);
    assert.notDeepEqual(enroll.responseErrors(403, 'application/problem+json', { title: 'Forbidden', status: 403 }), []);
  });

  it('reads bodies by media type and schema, and checks header parameters', () => {
    assert.deepEqual(enroll.readBody('application/json; charset=utf-8', Buffer.from('{"csr":"x"}')), { json: { csr: 'x' } });
    assert.deepEqual(enroll.readBody('application/pkcs10', Buffer.from([0x30, 0x00])), { bytes: Buffer.from([0x30, 0x00]) });
    const status = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        assert.ok(e instanceof ContractError, String(e));
        return e.status;
      }
      return 'accepted';
    };
    assert.equal(
      status(() => enroll.readBody(undefined, Buffer.from('{}'))),
      415,
    );
    assert.equal(
      status(() => enroll.readBody('text/plain', Buffer.from('x'))),
      415,
    );
    assert.equal(
      status(() => enroll.readBody('application/json', Buffer.from('{'))),
      400,
    );
    assert.equal(
      status(() => enroll.readBody('application/json', Buffer.from('{"csr":"x","more":1}'))),
      400,
    );
    assert.equal(
      status(() => enroll.readBody('application/json', Buffer.from('[]'))),
      400,
    );
    assert.equal(
      status(() => enroll.checkHeaders({ 'idempotency-key': 'k'.repeat(255) })),
      'accepted',
    );
    assert.equal(
      status(() => enroll.checkHeaders({ 'idempotency-key': 'k'.repeat(256) })),
      400,
    );
    assert.equal(
      status(() => enroll.checkHeaders({ 'idempotency-key': '' })),
      400,
    );
  });

  it('refuses an operation it cannot serve', () => {
    assert.throws(() => operationContract('/v1/no-such-path', 'post'), /no POST/);
  });
});
