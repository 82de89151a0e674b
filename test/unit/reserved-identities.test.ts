import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ReservedIdentities } from '../../src/enroll/reserved-identities.js';
import { deviceStanding } from '../../src/enroll/policy.js';
import { DomainError } from '../../src/shared/errors.js';
import type { ParsedCsr } from '../../src/ca/x509/csr.js';

describe("the service's reserved identities", () => {
  const reserved = ReservedIdentities.of({ brokerClientCn: 'mqtt-ca-connector', publicUrl: 'https://CA.Example.net:8443' });

  it("reserves the connector's name, the PUBLIC_URL host and the responders' CN prefix, in any case, width or with a trailing dot", () => {
    for (const name of [
      'mqtt-ca-connector',
      'MQTT-CA-Connector',
      'ｍｑｔｔ-ca-connector',
      'mqtt-ca-connector.',
      'ca.example.net',
      'CA.EXAMPLE.NET',
      'OCSP Responder ca_1',
      'ocsp responder',
    ]) {
      assert.equal(reserved.isReserved(name), true, name);
    }
    for (const name of ['mqtt-ca-connector-2', 'broker.ca.example.net', 'sensor-1', 'localhost', '127.0.0.1', 'OCSP']) {
      assert.equal(reserved.isReserved(name), false, name);
    }
  });

  it("leaves loopback and IP hosts alone: a broker on the service's machine may carry them", () => {
    for (const publicUrl of ['http://localhost:8080', 'http://127.0.0.1:8080', 'http://[::1]:8080', 'https://10.0.0.5']) {
      const r = ReservedIdentities.of({ brokerClientCn: 'c', publicUrl });
      for (const name of ['localhost', '127.0.0.1', '::1', '10.0.0.5']) assert.equal(r.isReserved(name), false, `${publicUrl}: ${name}`);
    }
  });

  it('refuses with Forbidden naming the first reserved name, and passes names that are free', () => {
    assert.throws(
      () => reserved.refuse([undefined, 'b.example', 'Mqtt-Ca-Connector'], 'certificate'),
      (e: unknown) => e instanceof DomainError && e.kind === 'Forbidden' && /"Mqtt-Ca-Connector" is reserved/.test(e.message),
    );
    assert.doesNotThrow(() => reserved.refuse([undefined, 'b.example', 'sensor-9'], 'certificate'));
  });
});

describe('the device-standing policy step', () => {
  const csr = {} as ParsedCsr;
  const draft = { profile: 'device' as const, deviceId: 'd1' };
  const refusal = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof DomainError);
      return `${e.kind}: ${e.message}`;
    }
    return 'issued';
  };

  it("passes a registered or active device of the profile's kind", () => {
    for (const status of ['registered', 'active']) {
      assert.equal(
        refusal(() => deviceStanding('d1', { kind: 'client', lot: null, status }, 'device').apply(draft, csr)),
        'issued',
      );
      assert.equal(
        refusal(() => deviceStanding('b1', { kind: 'broker', lot: null, status }, 'broker').apply(draft, csr)),
        'issued',
      );
    }
  });

  it('refuses an unknown, suspended, revoked or decommissioned device, and one of the other kind', () => {
    assert.match(
      refusal(() => deviceStanding('d1', undefined, 'device').apply(draft, csr)),
      /^Forbidden: device d1 is not in the inventory/,
    );
    for (const status of ['suspended', 'revoked', 'decommissioned']) {
      assert.match(
        refusal(() => deviceStanding('d1', { kind: 'client', lot: null, status }, 'device').apply(draft, csr)),
        new RegExp(`^Forbidden: device d1 is ${status}`),
      );
    }
    assert.match(
      refusal(() => deviceStanding('d1', { kind: 'client', lot: null, status: 'active' }, 'broker').apply(draft, csr)),
      /is a client: it takes no broker certificate/,
    );
    assert.match(
      refusal(() => deviceStanding('b1', { kind: 'broker', lot: null, status: 'active' }, 'device').apply(draft, csr)),
      /is a broker: it takes no device certificate/,
    );
  });
});
