import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { brokerConnectorSpec, ServiceIdentities, tlsServerSpec, type ServiceIdentityDeps } from '../../src/rotate/service-identities.js';
import { ManualClock } from '../../src/shared/clock.js';

const DAY = 86_400_000;

/** Fakes for everything below the module: settings in a map, an issuance that counts, a vault that hands out refs. */
function fakes(clock: ManualClock) {
  const settings = new Map<string, unknown>();
  const issued: { commonName: string; dnsNames: string[]; ipAddresses: string[] }[] = [];
  const audit: { action: string; targetId: string; details: Record<string, unknown> }[] = [];
  let n = 0;
  const deps = {
    db: { transaction: async (f: (tx: unknown) => unknown) => f({}) },
    settings: {
      get: async (_db: unknown, key: string) => settings.get(key),
      set: async (_db: unknown, key: string, value: unknown) => void settings.set(key, structuredClone(value)),
    },
    vault: {
      generate: async () => ({ signerRef: `software:key-${++n}`, signer: { publicKey: new Uint8Array([n]) } }),
      tlsPrivateKeyPem: async (_db: unknown, ref: string) => `KEY ${ref}`,
    },
    issuance: {
      issue: async (req: { commonName: string; dnsNames: string[]; ipAddresses: string[]; validityDays: number }) => {
        issued.push({ commonName: req.commonName, dnsNames: req.dnsNames, ipAddresses: req.ipAddresses });
        const notBefore = clock.now();
        return { serial: `0${issued.length}`, notBefore, notAfter: new Date(notBefore.getTime() + req.validityDays * DAY) };
      },
    },
    certificates: { get: async (serial: string) => ({ serial, caId: 'ca-1', certificate: `CERT ${serial}\n` }) },
    hierarchy: {
      chain: async () => [Buffer.from('issuing'), Buffer.from('root')],
      list: async () => [{ certificate: 'ROOT\n' }, { certificate: 'ISSUING\n' }],
    },
    audit: { append: async (_tx: unknown, entries: typeof audit) => void audit.push(...entries) },
    clock,
  } as unknown as ServiceIdentityDeps;
  return { deps, settings, issued, audit };
}

describe("ServiceIdentities: the service's own certificates", () => {
  it('issues once, keeps it until a third of its life is left, then the job renews it and records what it replaces', async () => {
    const clock = new ManualClock(new Date('2026-01-01T00:00:00Z'));
    const f = fakes(clock);
    const ids = new ServiceIdentities(f.deps, {
      'tls-server': tlsServerSpec('https://ca.example.com:8443'),
      'broker-connector': brokerConnectorSpec('mqtt-ca-connector'),
    });
    const seen: string[] = [];
    ids.onIssued((name) => seen.push(name));

    const a = await ids.ensure('tls-server');
    assert.deepEqual(f.issued[0], {
      commonName: 'ca.example.com',
      dnsNames: ['ca.example.com', 'localhost'],
      ipAddresses: ['127.0.0.1', '::1'],
    });
    assert.equal(
      a.cert,
      `CERT ${a.serial}\n-----BEGIN CERTIFICATE-----\n${Buffer.from('issuing').toString('base64')}\n-----END CERTIFICATE-----\n`,
    );
    assert.deepEqual(a.ca, ['ROOT\n', 'ISSUING\n']);
    assert.equal((await ids.ensure('tls-server')).serial, a.serial);

    clock.advance(59 * DAY);
    assert.deepEqual((await ids.renewDue()).renewed, [], 'two thirds of 90 days not yet passed; the connector was never used');
    clock.advance(2 * DAY);
    const r = await ids.renewDue();
    assert.equal(r.renewed.length, 1);
    assert.equal(r.renewed[0]!.name, 'tls-server');
    assert.equal(r.renewed[0]!.replaces, a.serial);
    assert.equal((await ids.current('tls-server'))!.serial, r.renewed[0]!.serial);
    assert.equal(f.audit.at(-1)!.details.replaces, a.serial);
    assert.deepEqual(seen, ['tls-server', 'tls-server']);
    assert.deepEqual((await ids.renewDue()).renewed, []);
  });

  it('renews when its names changed (PUBLIC_URL, BROKER_CLIENT_CN), and a connector record of old (cn only) is kept while the CN is the same', async () => {
    const clock = new ManualClock();
    const f = fakes(clock);
    f.settings.set('broker_connector_client', {
      serial: 'aa',
      signerRef: 'software:key-0',
      cn: 'ops-connector',
      notBefore: clock.now().toISOString(),
      notAfter: new Date(clock.now().getTime() + 90 * DAY).toISOString(),
    });
    const same = new ServiceIdentities(f.deps, {
      'tls-server': tlsServerSpec('http://127.0.0.1:8080'),
      'broker-connector': brokerConnectorSpec('ops-connector'),
    });
    assert.equal((await same.ensure('broker-connector')).serial, 'aa');
    assert.equal(f.issued.length, 0);

    const renamed = new ServiceIdentities(f.deps, {
      'tls-server': tlsServerSpec('http://127.0.0.1:8080'),
      'broker-connector': brokerConnectorSpec('ops-connector-2'),
    });
    const r = await renamed.renewDue();
    assert.deepEqual(
      r.renewed.map((x) => [x.name, x.replaces]),
      [['broker-connector', 'aa']],
    );
    assert.deepEqual(f.issued[0], { commonName: 'ops-connector-2', dnsNames: ['ops-connector-2'], ipAddresses: [] });
  });

  it('one issuance per identity at a time in a process (a listener starting while the job runs)', async () => {
    const clock = new ManualClock();
    const f = fakes(clock);
    const ids = new ServiceIdentities(f.deps, {
      'tls-server': tlsServerSpec('http://[::1]:8080'),
      'broker-connector': brokerConnectorSpec('c', () => ['BROKER CA\n']),
    });
    const [a, b] = await Promise.all([ids.ensure('broker-connector'), ids.ensure('broker-connector')]);
    assert.equal(a.serial, b.serial);
    assert.equal(f.issued.length, 1);
    assert.deepEqual(a.ca, ['BROKER CA\n'], "BROKER_CA_FILE replaces the service's own CAs as the broker's trust anchors");
    const tls = await ids.ensure('tls-server');
    assert.deepEqual(f.issued[1], { commonName: 'localhost', dnsNames: ['localhost'], ipAddresses: ['::1', '127.0.0.1'] });
    assert.equal(tls.commonName, 'localhost');
  });
});
