import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { dbTargets } from '../helpers/db.js';
import { toolSkip } from '../helpers/tools.js';
import { makeService, TEST_PUBLIC_URL } from '../helpers/service.js';
import { certtoolVerifyChain, opensslVerify, run, tempDir, writeTemp } from '../helpers/openssl.js';
import { toPem } from '../../src/ca/x509/pem.js';
import type { KeyAlgorithm } from '../../src/ca/keys.js';
import { DomainError } from '../../src/shared/errors.js';
import type { Service } from '../../src/main.js';

const ctx = { actor: 'test', requestId: 'req-test-1' };
const spki = (k: ReturnType<typeof generateKeyPairSync>['publicKey']) => k.export({ format: 'der', type: 'spki' });
const p256 = () => spki(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey);

async function expectDomainError(p: Promise<unknown>, kind: DomainError['kind'], re?: RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof DomainError, `expected DomainError, got ${String(e)}`);
    assert.equal(e.kind, kind, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

const HIERARCHIES: { root: KeyAlgorithm; inter: KeyAlgorithm }[] = [
  { root: 'EC-P384', inter: 'EC-P256' },
  { root: 'Ed25519', inter: 'Ed25519' },
  { root: 'RSA-4096', inter: 'RSA-2048' },
  { root: 'EC-P256', inter: 'RSA-3072' },
];

for (const target of dbTargets) {
  describe(`CA hierarchy and issuance on ${target.name}`, { skip: target.skip ?? toolSkip('openssl') }, () => {
    let svc: Service & { dispose(): Promise<void> };
    const chains: string[][] = [];
    before(async () => {
      svc = await makeService(target);
    });
    after(async () => {
      await svc?.dispose();
    });
    /** A root and an intermediate under it: leaves come from the intermediate (a root signs no leaves). */
    const issuingCa = async (name: string) => {
      const root = await svc.hierarchy.createRoot({ name: `${name} root`, keyAlgorithm: 'EC-P256' }, ctx);
      return { root, ca: await svc.hierarchy.createIntermediate({ name, parentId: root.id, keyAlgorithm: 'EC-P256' }, ctx) };
    };

    for (const h of HIERARCHIES) {
      it(`builds a ${h.root} root → ${h.inter} intermediate chain that OpenSSL and GnuTLS verify, with every extension right`, async () => {
        const root = await svc.hierarchy.createRoot({ name: `Root ${h.root}`, keyAlgorithm: h.root, pathLen: 1 }, ctx);
        const inter = await svc.hierarchy.createIntermediate({ name: `Issuing ${h.inter}`, parentId: root.id, keyAlgorithm: h.inter }, ctx);
        assert.equal(inter.pathLen, 0);
        const device = await svc.issuance.issue(
          { profile: 'device', caId: inter.id, deviceId: 'dev-0001', subjectPublicKeyInfo: p256() },
          ctx,
        );
        const rsaKey = spki(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey);
        const broker = await svc.issuance.issue(
          {
            profile: 'broker',
            caId: inter.id,
            subjectPublicKeyInfo: rsaKey,
            dnsNames: ['Broker-1.example.net', 'broker.local'],
            ipAddresses: ['10.1.2.3', '2001:db8::1'],
          },
          ctx,
        );

        const rootPem = root.certificate!;
        const interPem = inter.certificate!;
        const devicePem = toPem(device.der);
        const brokerPem = toPem(broker.der);
        const v1 = opensslVerify(rootPem, [interPem], devicePem, ['-purpose', 'sslclient']);
        assert.equal(v1.status, 0, v1.stderr + v1.stdout);
        const v2 = opensslVerify(rootPem, [interPem], brokerPem, ['-purpose', 'sslserver']);
        assert.equal(v2.status, 0, v2.stderr + v2.stdout);
        // The device certificate is not a server certificate.
        assert.notEqual(opensslVerify(rootPem, [interPem], devicePem, ['-purpose', 'sslserver']).status, 0);
        chains.push([devicePem, interPem, rootPem], [brokerPem, interPem, rootPem]);

        // Root: CA, pathLen 1, keyCertSign+cRLSign, SKI.
        const r = new x509.X509Certificate(rootPem);
        const rbc = r.getExtension(x509.BasicConstraintsExtension)!;
        assert.equal(rbc.ca, true);
        assert.equal(rbc.pathLength, 1);
        assert.equal(rbc.critical, true);
        assert.equal(r.getExtension(x509.KeyUsagesExtension)!.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
        const rootSki = r.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;

        // Intermediate: AKI = root SKI, AIA + CRLDP to the parent.
        const i = new x509.X509Certificate(interPem);
        assert.equal(i.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId, rootSki);
        const interSki = i.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
        assert.equal(i.getExtension(x509.BasicConstraintsExtension)!.pathLength, 0);
        assert.ok(await i.verify({ publicKey: r.publicKey, signatureOnly: true }));

        // Device leaf: CN and SAN URI are the device id; clientAuth only; AIA, CRLDP from PUBLIC_URL.
        const d = new x509.X509Certificate(devicePem);
        assert.equal(d.subject, 'CN=dev-0001');
        assert.equal(d.serialNumber, device.serial);
        assert.equal(d.serialNumber.length, 32);
        assert.ok(parseInt(d.serialNumber[0]!, 16) < 8, 'serial is positive');
        assert.deepEqual(d.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON(), [
          { type: 'url', value: 'urn:mqtt-ca:device:dev-0001' },
        ]);
        assert.deepEqual([...d.getExtension(x509.ExtendedKeyUsageExtension)!.usages].map(String), ['1.3.6.1.5.5.7.3.2']);
        assert.equal(d.getExtension(x509.KeyUsagesExtension)!.usages, x509.KeyUsageFlags.digitalSignature);
        assert.equal(d.getExtension(x509.BasicConstraintsExtension)!.ca, false);
        assert.equal(d.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId, interSki);
        const aia = d.getExtension(x509.AuthorityInfoAccessExtension)!;
        assert.deepEqual(
          aia.ocsp.map((n) => n.value),
          [`${TEST_PUBLIC_URL}/pki/ocsp`],
        );
        assert.deepEqual(
          aia.caIssuers.map((n) => n.value),
          [`${TEST_PUBLIC_URL}/pki/ca/${inter.id}.crt`],
        );
        const cdp = d.getExtension(x509.CRLDistributionPointsExtension)!;
        assert.equal(
          cdp.distributionPoints[0]!.distributionPoint!.fullName![0]!.uniformResourceIdentifier,
          `${TEST_PUBLIC_URL}/pki/crl/${inter.id}.crl`,
        );
        assert.ok(await d.verify({ publicKey: i.publicKey, signatureOnly: true }));

        // Broker leaf: serverAuth + clientAuth, DNS (lower-cased) and IP SANs, RSA gets keyEncipherment.
        const b = new x509.X509Certificate(brokerPem);
        assert.deepEqual([...b.getExtension(x509.ExtendedKeyUsageExtension)!.usages].map(String), [
          '1.3.6.1.5.5.7.3.1',
          '1.3.6.1.5.5.7.3.2',
        ]);
        assert.deepEqual(b.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON(), [
          { type: 'dns', value: 'broker-1.example.net' },
          { type: 'dns', value: 'broker.local' },
          { type: 'ip', value: '10.1.2.3' },
          { type: 'ip', value: '2001:db8::1' },
        ]);
        assert.equal(
          b.getExtension(x509.KeyUsagesExtension)!.usages,
          x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
        );

        // The register holds both, issued, with their DER.
        const stored = await svc.certificates.get(device.serial);
        assert.equal(stored.status, 'issued');
        assert.equal(stored.certificate, devicePem);
        const chain = await svc.hierarchy.chain(inter.id);
        assert.deepEqual(
          chain.map((c) => toPem(c)),
          [interPem, rootPem],
        );
      });
    }

    it('GnuTLS certtool verifies every chain built above', { skip: toolSkip('certtool') }, () => {
      assert.equal(chains.length, HIERARCHIES.length * 2);
      for (const chain of chains) {
        const g = certtoolVerifyChain(chain);
        assert.equal(g.status, 0, g.stdout + g.stderr);
        assert.match(g.stdout, /Chain verification output: Verified/);
        assert.match(g.stdout, /The certificate is trusted/);
      }
    });

    it('issues an OCSP responder certificate with OCSPSigning and id-pkix-ocsp-nocheck', async () => {
      const root = await svc.hierarchy.createRoot({ name: 'OCSP root', keyAlgorithm: 'EC-P256' }, ctx);
      const c = await svc.issuance.issueResponder({ caId: root.id, commonName: 'Responder', subjectPublicKeyInfo: p256() }, ctx);
      const cert = new x509.X509Certificate(c.der);
      assert.deepEqual([...cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages].map(String), ['1.3.6.1.5.5.7.3.9']);
      assert.ok(cert.getExtension('1.3.6.1.5.5.7.48.1.5'), 'ocsp-nocheck present');
      const dir = tempDir();
      const text = run('openssl', ['x509', '-noout', '-text', '-in', writeTemp(dir, 'r.pem', toPem(c.der))]);
      assert.match(text.stdout, /OCSP Signing/);
      assert.match(text.stdout, /OCSP No Check/);
    });

    it('refuses bad parents, path lengths and expired or pending CAs with clear errors, writing nothing', async () => {
      const before = (await svc.hierarchy.list()).length;
      await expectDomainError(
        svc.hierarchy.createIntermediate({ name: 'x', parentId: 'ca_nope', keyAlgorithm: 'EC-P256' }, ctx),
        'NotFound',
      );
      const root = await svc.hierarchy.createRoot({ name: 'pathlen root', keyAlgorithm: 'EC-P256', pathLen: 0 }, ctx);
      await expectDomainError(
        svc.hierarchy.createIntermediate({ name: 'x', parentId: root.id, keyAlgorithm: 'EC-P256' }, ctx),
        'BadRequest',
        /pathLen 0/,
      );
      const root2 = await svc.hierarchy.createRoot({ name: 'pathlen root 2', keyAlgorithm: 'EC-P256', pathLen: 1 }, ctx);
      await expectDomainError(
        svc.hierarchy.createIntermediate({ name: 'x', parentId: root2.id, keyAlgorithm: 'EC-P256', pathLen: 1 }, ctx),
        'BadRequest',
        /exceeds/,
      );
      const pending = await svc.hierarchy.createExternalIntermediate({ name: 'pending', keyAlgorithm: 'EC-P256' }, ctx);
      await expectDomainError(
        svc.hierarchy.createIntermediate({ name: 'x', parentId: pending.id, keyAlgorithm: 'EC-P256' }, ctx),
        'Conflict',
      );
      await expectDomainError(
        svc.issuance.issue({ profile: 'device', caId: pending.id, deviceId: 'd1', subjectPublicKeyInfo: p256() }, ctx),
        'Conflict',
      );
      // A root signs no leaves, whoever asks the authority.
      await expectDomainError(
        svc.issuance.issue({ profile: 'device', caId: root.id, deviceId: 'd2', subjectPublicKeyInfo: p256() }, ctx),
        'Forbidden',
        /is a root/,
      );
      await expectDomainError(
        svc.issuance.issueBatch([{ profile: 'broker', caId: root.id, dnsNames: ['b.example'], subjectPublicKeyInfo: p256() }], ctx),
        'Forbidden',
        /is a root/,
      );
      assert.equal((await svc.certificates.list({ caId: root.id }, { limit: 10 })).items.length, 0, 'nothing recorded under the root');
      // The leaf under a pathLen-0 issuer does not outlive it.
      const issuing = await svc.hierarchy.createIntermediate(
        { name: 'short issuing', parentId: root2.id, keyAlgorithm: 'EC-P256', validityDays: 30 },
        ctx,
      );
      assert.equal(issuing.pathLen, 0);
      const leaf = await svc.issuance.issue(
        { profile: 'device', caId: issuing.id, deviceId: 'd2', subjectPublicKeyInfo: p256(), validityDays: 825 },
        ctx,
      );
      assert.equal(leaf.notAfter.getTime(), new Date(issuing.notAfter!).getTime());
      assert.equal((await svc.hierarchy.list()).length, before + 4);
    });

    it('enforces the profile: key algorithms and sizes, names, validity; nothing recorded for a refused request', async () => {
      const { ca } = await issuingCa('policy');
      const base = { caId: ca.id };
      const count = async () => (await svc.certificates.list({ caId: ca.id }, { limit: 500 })).items.length;
      const rsa1024 = spki(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey);
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'device', deviceId: 'd', subjectPublicKeyInfo: rsa1024 }, ctx),
        'BadKey',
        /2048, 3072 or 4096/,
      );
      const rsaE3 = spki(generateKeyPairSync('rsa', { modulusLength: 2048, publicExponent: 3 }).publicKey);
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'device', deviceId: 'd', subjectPublicKeyInfo: rsaE3 }, ctx),
        'BadKey',
        /65537/,
      );
      const p521 = spki(generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey);
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'device', deviceId: 'd', subjectPublicKeyInfo: p521 }, ctx),
        'BadKey',
        /curve/,
      );
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'device', deviceId: 'd', subjectPublicKeyInfo: Buffer.from('garbage') }, ctx),
        'BadKey',
      );
      const x25519 = spki(generateKeyPairSync('x25519').publicKey);
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'device', deviceId: 'd', subjectPublicKeyInfo: x25519 }, ctx),
        'BadKey',
      );
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'device', deviceId: 'd', dnsNames: ['evil.example'], subjectPublicKeyInfo: p256() }, ctx),
        'PolicyViolation',
      );
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'device', deviceId: 'bad id/with slash', subjectPublicKeyInfo: p256() }, ctx),
        'BadRequest',
      );
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'device', deviceId: 'd', validityDays: 5000, subjectPublicKeyInfo: p256() }, ctx),
        'PolicyViolation',
      );
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'broker', subjectPublicKeyInfo: p256() }, ctx),
        'BadRequest',
        /at least one/,
      );
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'broker', dnsNames: ['bad_name!'], subjectPublicKeyInfo: p256() }, ctx),
        'BadRequest',
      );
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'broker', ipAddresses: ['300.1.1.1'], subjectPublicKeyInfo: p256() }, ctx),
        'BadRequest',
      );
      // The authority issues its responder certificates through issueResponder only: a request (typed or not) gets none.
      await expectDomainError(
        svc.issuance.issue({ ...base, profile: 'ocsp-responder' as 'broker', commonName: 'r', subjectPublicKeyInfo: p256() }, ctx),
        'Forbidden',
        /not issued on request/,
      );
      await expectDomainError(
        svc.issuance.issueBatch([{ ...base, profile: 'ocsp-responder' as 'broker', commonName: 'r', subjectPublicKeyInfo: p256() }], ctx),
        'Forbidden',
      );
      assert.equal(await count(), 0);
    });

    it('takes nothing from a CSR but its key: smuggled CA flags, names and key usages do not reach the certificate', async () => {
      const { root, ca } = await issuingCa('csr');
      await svc.devices.register({ id: 'dev-honest' }, ctx);
      const dir = tempDir();
      const cnf = writeTemp(
        dir,
        'req.cnf',
        [
          '[req]',
          'distinguished_name=dn',
          'req_extensions=ext',
          'prompt=no',
          '[dn]',
          'CN=root-impostor',
          'O=Evil',
          '[ext]',
          'basicConstraints=critical,CA:TRUE',
          'keyUsage=keyCertSign,cRLSign',
          'extendedKeyUsage=serverAuth,codeSigning',
          'subjectAltName=DNS:broker.example,URI:urn:mqtt-ca:device:someone-else',
        ].join('\n'),
      );
      const key = writeTemp(dir, 'k.pem', run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']).stdout);
      const csr = run('openssl', ['req', '-new', '-key', key, '-config', cnf]);
      assert.equal(csr.status, 0, csr.stderr);
      const issued = await svc.operatorIssuance.issueFromCsr(
        { profile: 'device', caId: ca.id, deviceId: 'dev-honest', csr: csr.stdout },
        ctx,
      );
      const cert = new x509.X509Certificate(issued.certificate);
      assert.equal(cert.subject, 'CN=dev-honest');
      assert.equal(cert.getExtension(x509.BasicConstraintsExtension)!.ca, false);
      assert.equal(cert.getExtension(x509.KeyUsagesExtension)!.usages, x509.KeyUsageFlags.digitalSignature);
      assert.deepEqual([...cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages].map(String), ['1.3.6.1.5.5.7.3.2']);
      assert.deepEqual(cert.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON(), [
        { type: 'url', value: 'urn:mqtt-ca:device:dev-honest' },
      ]);
      const csrKey = createPublicKey(run('openssl', ['pkey', '-in', key, '-pubout']).stdout).export({ format: 'der', type: 'spki' });
      assert.deepEqual(Buffer.from(cert.publicKey.rawData), csrKey);
      assert.deepEqual(issued.chain, [ca.certificate, root.certificate]);

      // A CSR whose signature does not verify is refused: no proof of possession.
      const tampered = Buffer.from(
        csr.stdout
          .split('\n')
          .filter((l) => !l.startsWith('-----'))
          .join(''),
        'base64',
      );
      tampered[tampered.length - 5] = tampered[tampered.length - 5]! ^ 0xff;
      await expectDomainError(
        svc.operatorIssuance.issueFromCsr(
          { profile: 'device', caId: ca.id, deviceId: 'dev-honest', csr: toPem(tampered, 'CERTIFICATE REQUEST') },
          ctx,
        ),
        'BadCsr',
      );
      await expectDomainError(
        svc.operatorIssuance.issueFromCsr({ profile: 'device', caId: ca.id, deviceId: 'dev-honest', csr: 'not a csr' }, ctx),
        'BadCsr',
      );
      await expectDomainError(
        svc.operatorIssuance.issueFromCsr(
          { profile: 'device', caId: ca.id, deviceId: 'dev-honest', csr: toPem(Buffer.from('garbage'), 'CERTIFICATE REQUEST') },
          ctx,
        ),
        'BadCsr',
      );
    });

    it('gives every certificate a distinct positive 16-byte serial, also in one large batch', async () => {
      const { ca: root } = await issuingCa('batch');
      const key = p256();
      const reqs = Array.from({ length: 1200 }, (_, n) => ({
        profile: 'device' as const,
        caId: root.id,
        deviceId: `lot7-${n}`,
        subjectPublicKeyInfo: key,
      }));
      const issued = await svc.issuance.issueBatch(reqs, ctx);
      const serials = new Set(issued.map((c) => c.serial));
      assert.equal(serials.size, 1200);
      for (const s of serials) assert.match(s, /^[0-7][0-9a-f]{31}$/);
      const listed = await svc.certificates.list({ caId: root.id, status: 'issued' }, { limit: 500 });
      assert.equal(listed.items.length, 500);
      assert.ok(listed.nextCursor);
      const page2 = await svc.certificates.list({ caId: root.id, status: 'issued' }, { limit: 500, cursor: listed.nextCursor! });
      assert.equal(new Set([...listed.items, ...page2.items].map((c) => c.serial)).size, 1000);
      // Concurrent single requests are gathered into batches and each gets its own certificate.
      const concurrent = await Promise.all(
        Array.from({ length: 300 }, (_, n) =>
          svc.issuance.issue({ profile: 'device', caId: root.id, deviceId: `c-${n}`, subjectPublicKeyInfo: key }, ctx),
        ),
      );
      assert.deepEqual(
        concurrent.map((c) => new x509.X509Certificate(c.der).subject),
        concurrent.map((_, n) => `CN=c-${n}`),
      );
      // Every issued certificate has its audit entry.
      const audit = await svc.audit.list({ limit: 5, action: 'certificate.issued', targetId: concurrent[7]!.serial });
      assert.equal(audit.items.length, 1);
      assert.equal(audit.items[0]!.actor, 'test');
    });
  });
}
