import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TrustedProxies, parseCidr } from '../../src/shared/trusted-proxies.js';
import { ConfigError, loadConfig } from '../../src/config/config.js';

describe('TRUSTED_PROXIES: whose X-Forwarded-For names the client', () => {
  const proxies = new TrustedProxies(['10.0.0.0/8', '192.0.2.1', '2001:db8:aa::/48'].map((c) => parseCidr(c)!));

  it('parses IPv4 and IPv6 CIDRs and single addresses, and nothing else', () => {
    assert.deepEqual(parseCidr('10.0.0.0/8'), { address: '10.0.0.0', prefix: 8, family: 'ipv4' });
    assert.deepEqual(parseCidr('192.0.2.1'), { address: '192.0.2.1', prefix: 32, family: 'ipv4' });
    assert.deepEqual(parseCidr(' 2001:db8::/32 '), { address: '2001:db8::', prefix: 32, family: 'ipv6' });
    assert.deepEqual(parseCidr('::1'), { address: '::1', prefix: 128, family: 'ipv6' });
    for (const bad of ['', 'proxy.example', '10.0.0.0/33', '::/129', '10.0.0.0/8/8', '10.0.0.0/x', '10.0.0.0/', '300.1.1.1'])
      assert.equal(parseCidr(bad), undefined, bad);
  });

  it('believes the header only from a trusted peer, and takes its right-most hop that is not a trusted proxy', () => {
    assert.equal(proxies.clientOf('198.51.100.4', '203.0.113.9'), '198.51.100.4', 'an untrusted peer: the header is its own claim');
    assert.equal(proxies.clientOf('10.1.1.1', undefined), '10.1.1.1');
    assert.equal(proxies.clientOf('10.1.1.1', '203.0.113.9'), '203.0.113.9');
    assert.equal(
      proxies.clientOf('10.1.1.1', '1.1.1.1, 203.0.113.9, 10.2.2.2'),
      '203.0.113.9',
      'hops left of the first untrusted one were written by the client',
    );
    assert.equal(proxies.clientOf('::ffff:10.1.1.1', '203.0.113.9'), '203.0.113.9', 'an IPv4-mapped peer is its IPv4 address');
    assert.equal(proxies.clientOf('2001:db8:aa::5', '2001:db8:bb::7'), '2001:db8:bb::7');
    assert.equal(proxies.clientOf('10.1.1.1', '[2001:db8:bb::7]:4711'), '2001:db8:bb::7');
    assert.equal(proxies.clientOf('10.1.1.1', '203.0.113.9:4711'), '203.0.113.9');
    assert.equal(proxies.clientOf('10.1.1.1', '10.3.3.3, 192.0.2.1'), '10.3.3.3', 'every hop trusted: the left-most');
    assert.equal(
      proxies.clientOf('10.1.1.1', '203.0.113.9, garbage'),
      '10.1.1.1',
      'a hop that is no address: nothing left of it is believed',
    );
    assert.equal(new TrustedProxies([]).clientOf('10.1.1.1', '203.0.113.9'), '10.1.1.1', 'no trusted proxies: the header is never read');
  });

  it('is a setting: comma-separated, validated at start', () => {
    const base = { MQTT_CA_KEK: 'a'.repeat(64) };
    assert.deepEqual(loadConfig(base).trustedProxies, []);
    assert.deepEqual(
      loadConfig({ ...base, TRUSTED_PROXIES: '10.0.0.0/8, ::1' }).trustedProxies.map((c) => `${c.address}/${c.prefix}`),
      ['10.0.0.0/8', '::1/128'],
    );
    assert.throws(
      () => loadConfig({ ...base, TRUSTED_PROXIES: '10.0.0.0/8, lb.internal' }),
      (e: unknown) => e instanceof ConfigError && /TRUSTED_PROXIES: lb\.internal is no IPv4 or IPv6 address or CIDR/.test(e.message),
    );
  });
});
