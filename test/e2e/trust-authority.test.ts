import { describe, it, before, after } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import request from 'supertest';
import * as x509 from '@peculiar/x509';
import { dbTargets } from '../helpers/db.js';
import { toolSkip } from '../helpers/tools.js';
import { makeApiService } from '../helpers/service.js';
import { assertProblem } from '../helpers/http.js';
import { KEY_ARGS, opensslCsr, run, tempDir, writeTemp } from '../helpers/openssl.js';
import { p256Csr, signedRenewalAuth } from '../helpers/csr.js';
import { dynsecCtrl, startMosquittoTls } from '../helpers/mosquitto-tls.js';
import { toPem } from '../../src/ca/x509/pem.js';
import { DomainError } from '../../src/shared/errors.js';
import { DeviceStore } from '../../src/store/device-store.js';
import type { Service } from '../../src/main.js';
import type { Role } from '../../src/access/api-keys.js';

type Agent = ReturnType<typeof request>;

/**
 * What `openssl ocsp` (as a relying party that trusts the root) makes of a "good" answer for
 * `victimPem` that an attacker built with openssl's own responder mode (`ocsp -index -rsigner`),
 * signed with `signerPem`/`signerKeyPem`: { accepted, status, output }.
 */
function forgedGoodAnswer(o: { rootPem: string; issuerPem: string; victimPem: string; signerPem: string; signerKeyPem: string }): {
  accepted: boolean;
  good: boolean;
  output: string;
} {
  const dir = tempDir();
  const victim = new x509.X509Certificate(o.victimPem);
  const notAfter = victim.notAfter.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
  // The attacker's index: the revoked certificate listed as valid ("V").
  const index = writeTemp(
    dir,
    'index.txt',
    `V\t${notAfter}\t\t${victim.serialNumber.toUpperCase()}\tunknown\t/CN=${victim.subjectName.getField('CN')[0]}\n`,
  );
  const issuer = writeTemp(dir, 'issuer.pem', o.issuerPem);
  const cert = writeTemp(dir, 'victim.pem', o.victimPem);
  const req = `${dir}/req.der`;
  const resp = `${dir}/resp.der`;
  const made = run('openssl', ['ocsp', '-issuer', issuer, '-cert', cert, '-no_nonce', '-reqout', req]);
  assert.equal(made.status, 0, made.stderr);
  const signed = run('openssl', [
    'ocsp',
    '-index',
    index,
    '-rsigner',
    writeTemp(dir, 'signer.pem', o.signerPem),
    '-rkey',
    writeTemp(dir, 'signer.key', o.signerKeyPem),
    '-CA',
    issuer,
    '-reqin',
    req,
    '-respout',
    resp,
  ]);
  assert.equal(signed.status, 0, signed.stderr);
  const judged = run('openssl', [
    'ocsp',
    '-respin',
    resp,
    '-issuer',
    issuer,
    '-cert',
    cert,
    '-CAfile',
    writeTemp(dir, 'root.pem', o.rootPem),
    '-verify_other',
    issuer,
  ]);
  const output = judged.stdout + judged.stderr;
  return {
    accepted: judged.status === 0 && /Response verify OK/.test(output),
    good: new RegExp(`${cert.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: good`).test(output),
    output,
  };
}

for (const target of dbTargets) {
  describe(
    `authority certificates, reserved identities and device state on ${target.name}`,
    { skip: target.skip ?? toolSkip('openssl') },
    () => {
      let svc: Service & { dispose(): Promise<void> };
      let api: Agent;
      const keys = {} as Record<Role, string>;
      let issuingId: string;
      let rootId: string;
      let rootPem: string;
      let issuerPem: string;
      before(async () => {
        const made = await makeApiService(target);
        ({ svc, api, issuingId } = made);
        Object.assign(keys, made.keys);
        const cas = await svc.hierarchy.list();
        const root = cas.find((c) => c.kind === 'root')!;
        rootId = root.id;
        rootPem = root.certificate!;
        issuerPem = cas.find((c) => c.id === issuingId)!.certificate!;
      });
      after(async () => svc?.dispose());

      const auth = (role: Role) => ({ Authorization: `Bearer ${keys[role]}` });

      /** What the service's OCSP responder says of a certificate, as `openssl ocsp` reads and verifies its answer. */
      async function ocspStatus(certificatePem: string): Promise<string> {
        const dir = tempDir();
        const issuer = writeTemp(dir, 'issuer.pem', issuerPem);
        const cert = writeTemp(dir, 'cert.pem', certificatePem);
        const made = run('openssl', ['ocsp', '-issuer', issuer, '-cert', cert, '-no_nonce', '-reqout', `${dir}/req.der`]);
        assert.equal(made.status, 0, made.stderr);
        const res = await api
          .post('/pki/ocsp')
          .set('Content-Type', 'application/ocsp-request')
          .send(readFileSync(`${dir}/req.der`))
          .buffer(true)
          .parse((r, cb) => {
            const chunks: Buffer[] = [];
            r.on('data', (c: Buffer) => chunks.push(c));
            r.on('end', () => cb(null, Buffer.concat(chunks)));
          });
        assert.equal(res.status, 200);
        const judged = run('openssl', [
          'ocsp',
          '-respin',
          writeTemp(dir, 'resp.der', res.body as Buffer),
          '-issuer',
          issuer,
          '-cert',
          cert,
          '-CAfile',
          writeTemp(dir, 'root.pem', rootPem),
          '-verify_other',
          issuer,
        ]);
        assert.match(judged.stdout + judged.stderr, /Response verify OK/, judged.stderr);
        return /: (good|revoked|unknown)/.exec(judged.stdout)?.[1] ?? judged.stdout;
      }

      /** A registered device with a certificate (provisioner), then revoked for key compromise (operator): the device is revoked. */
      async function revokedDevice(id: string): Promise<{ certificate: string; serial: string }> {
        await api.post('/v1/devices').set(auth('provisioner')).send({ id }).expect(201);
        const issued = await api
          .post('/v1/certificates')
          .set(auth('provisioner'))
          .send({ profile: 'device', deviceId: id, csr: p256Csr().pem })
          .expect(201);
        await api.post(`/v1/certificates/${issued.body.serial}/revoke`).set(auth('operator')).send({ reason: 'keyCompromise' }).expect(200);
        assert.equal((await api.get(`/v1/devices/${id}`).set(auth('auditor')).expect(200)).body.status, 'revoked');
        return { certificate: issued.body.certificate, serial: issued.body.serial };
      }

      it('gives no role an OCSP responder certificate, so no forged "good" answer for a revoked device verifies', async () => {
        const victim = await revokedDevice('ocsp-victim');
        const rogue = opensslCsr([...KEY_ARGS.p256]);
        for (const role of ['provisioner', 'admin', 'operator'] as Role[]) {
          const res = await api
            .post('/v1/certificates')
            .set(auth(role))
            .send({ profile: 'ocsp-responder', commonName: 'OCSP helper', csr: rogue.csrPem });
          if (res.status === 201) {
            // The attack as it worked: the responder certificate signs a "good" answer that openssl accepts.
            const forged = forgedGoodAnswer({
              rootPem,
              issuerPem,
              victimPem: victim.certificate,
              signerPem: res.body.certificate,
              signerKeyPem: rogue.keyPem,
            });
            assert.fail(
              `a ${role} got an OCSP responder certificate; openssl ${forged.accepted && forged.good ? 'ACCEPTED' : 'rejected'} a forged "good" answer for revoked ${victim.serial}:\n${forged.output}`,
            );
          }
          assertProblem(res, 400, /profile/);
        }
        assert.equal(
          (await api.get('/v1/certificates').query({ profile: 'ocsp-responder' }).set(auth('auditor'))).body.items.filter(
            (c: { deviceId: string | null; subject: string }) => /OCSP helper/.test(JSON.stringify(c)),
          ).length,
          0,
        );

        // What a provisioner can still get (a broker certificate from the same CA) forges nothing: openssl refuses its answer.
        const broker = opensslCsr([...KEY_ARGS.p256]);
        const b = await api
          .post('/v1/certificates')
          .set(auth('provisioner'))
          .send({ profile: 'broker', dnsNames: ['forger.example'], csr: broker.csrPem })
          .expect(201);
        const withBroker = forgedGoodAnswer({
          rootPem,
          issuerPem,
          victimPem: victim.certificate,
          signerPem: b.body.certificate,
          signerKeyPem: broker.keyPem,
        });
        assert.equal(withBroker.accepted, false, withBroker.output);
        // The judge is real: the same forgery signed with the service's own responder key is accepted. That key is the service's alone.
        const responder = await svc.ocspResponders.responder(issuingId);
        const stored = await svc.settings.get<{ signerRef: string }>(svc.db, `ocsp_responder:${issuingId}`);
        const genuine = forgedGoodAnswer({
          rootPem,
          issuerPem,
          victimPem: victim.certificate,
          signerPem: toPem(responder.certificateDer),
          signerKeyPem: await svc.vault.tlsPrivateKeyPem(svc.db, stored!.signerRef),
        });
        assert.ok(genuine.accepted && genuine.good, genuine.output);
      });

      it('signs no device or broker certificate with a root, through the API or the authority itself', async () => {
        const csr = p256Csr();
        await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'under-root' }).expect(201);
        assertProblem(
          await api
            .post('/v1/certificates')
            .set(auth('provisioner'))
            .send({ profile: 'device', caId: rootId, deviceId: 'under-root', csr: csr.pem }),
          403,
          /is a root/,
        );
        assertProblem(
          await api
            .post('/v1/certificates')
            .set(auth('operator'))
            .send({ profile: 'broker', caId: rootId, dnsNames: ['b.example'], csr: csr.pem }),
          403,
          /is a root/,
        );
        assertProblem(await api.post(`/v1/cas/${rootId}/default-issuer`).set(auth('admin')), 400, /is a root/);
        const issuedByRoot = await api.get('/v1/certificates').query({ caId: rootId }).set(auth('auditor')).expect(200);
        assert.deepEqual(
          issuedByRoot.body.items.map((c: { profile: string }) => c.profile).filter((p: string) => p !== 'ca' && p !== 'ocsp-responder'),
          [],
        );
        // The authority's own last check, for any future route.
        const spki = Buffer.from(
          new x509.X509Certificate(
            (
              await api
                .post('/v1/certificates')
                .set(auth('provisioner'))
                .send({ profile: 'device', deviceId: 'under-root', csr: csr.pem })
                .expect(201)
            ).body.certificate,
          ).publicKey.rawData,
        );
        await assert.rejects(
          svc.issuance.issue({ profile: 'device', caId: rootId, deviceId: 'under-root', subjectPublicKeyInfo: spki }, { actor: 'test' }),
          (e: unknown) => e instanceof DomainError && e.kind === 'Forbidden',
        );
        await assert.rejects(
          svc.issuance.issue(
            { profile: 'ocsp-responder' as 'broker', caId: issuingId, commonName: 'x', subjectPublicKeyInfo: spki },
            { actor: 'test' },
          ),
          (e: unknown) => e instanceof DomainError && e.kind === 'Forbidden',
        );
      });

      it("reserves the connector's name and the service's own names for the service", async () => {
        const csr = p256Csr();
        const cn = svc.config.brokers.clientCn;
        assert.equal(cn, 'mqtt-ca-connector');
        // The attack: a broker certificate with the connector's CN is the broker's dynamic-security admin.
        for (const body of [
          { profile: 'broker', commonName: cn, dnsNames: ['broker-7.example'] },
          { profile: 'broker', dnsNames: [cn] },
          { profile: 'broker', commonName: 'MQTT-CA-Connector', dnsNames: ['broker-7.example'] },
          { profile: 'broker', dnsNames: ['ca.test'] }, // PUBLIC_URL's host: the service's TLS server name
          { profile: 'broker', commonName: 'OCSP Responder ca_1', dnsNames: ['broker-7.example'] },
        ]) {
          for (const role of ['operator', 'provisioner'] as Role[]) {
            assertProblem(
              await api
                .post('/v1/certificates')
                .set(auth(role))
                .send({ ...body, csr: csr.pem }),
              403,
              /reserved/,
            );
          }
        }
        assert.equal(
          (await api.get('/v1/certificates').query({ profile: 'broker' }).set(auth('auditor'))).body.items.filter(
            (c: { subject: string }) => /connector|ca\.test|OCSP/i.test(c.subject),
          ).length,
          0,
        );
        // ...and as a device (its CN is its id) or a broker in the inventory.
        assertProblem(await api.post('/v1/devices').set(auth('provisioner')).send({ id: cn }), 400, /reserved/);
        assertProblem(
          await api.post('/v1/devices').set(auth('provisioner')).send({ id: cn.toUpperCase(), kind: 'broker' }),
          400,
          /reserved/,
        );
        assertProblem(
          await api
            .post('/v1/devices/import')
            .set(auth('provisioner'))
            .send({ devices: [{ id: 'fine-1' }, { id: cn }] }),
          400,
          /error/,
        );
        assertProblem(await api.get(`/v1/devices/${cn}`).set(auth('auditor')), 404);
        await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'edge-broker', kind: 'broker' }).expect(201);
        assertProblem(
          await api
            .post('/v1/enrollment-tokens')
            .set(auth('provisioner'))
            .send({ deviceId: 'edge-broker', dnsNames: ['edge.example', cn] }),
          403,
          /reserved/,
        );
        // A device that somehow holds the name (registered before the rule) gets no certificate with it.
        assert.ok(
          await new DeviceStore().insert(svc.db, {
            id: cn,
            kind: 'client',
            model: null,
            hardwareRevision: null,
            firmwareVersion: null,
            site: null,
            lot: null,
            labels: {},
            createdAt: new Date(),
          }),
        );
        assertProblem(
          await api.post('/v1/certificates').set(auth('provisioner')).send({ profile: 'device', deviceId: cn, csr: csr.pem }),
          403,
          /reserved/,
        );
      });

      it(
        "gives no operator the connector's identity, which administers the broker (dynamic security)",
        { skip: toolSkip('mosquitto') ?? toolSkip('mosquitto_ctrl') },
        async () => {
          const broker = await startMosquittoTls(svc);
          try {
            const cn = svc.config.brokers.clientCn;
            const dir = tempDir();
            // The judge: broker-setup's seed makes whoever logs in with the connector's CN the dynsec admin (here, the service itself).
            const own = await svc.identities.ensure('broker-connector');
            const asService = await dynsecCtrl(
              broker,
              { cert: writeTemp(dir, 'own.pem', own.cert), key: writeTemp(dir, 'own.key', own.key) },
              ['listClients'],
            );
            assert.equal(asService.status, 0, asService.out);
            // The attack: an operator asks for a broker certificate with that CN.
            const csr = p256Csr();
            const res = await api
              .post('/v1/certificates')
              .set(auth('operator'))
              .send({ profile: 'broker', commonName: cn, dnsNames: ['broker-7.example'], csr: csr.pem });
            if (res.status === 201) {
              const files = {
                cert: writeTemp(dir, 'rogue.pem', res.body.certificate + res.body.chain[0]),
                key: writeTemp(dir, 'rogue.key', csr.keyPem),
              };
              const asOperator = await dynsecCtrl(broker, files, ['listClients']);
              assert.fail(
                `an operator got a broker certificate with CN ${cn}; mosquitto_ctrl listClients with it exited ${asOperator.status}:\n${asOperator.out}`,
              );
            }
            assertProblem(res, 403, /reserved/);
          } finally {
            await broker.stop();
          }
        },
      );

      it('issues nothing for a device that is unknown, suspended, revoked or decommissioned', async () => {
        const csr = () => p256Csr().pem;
        const certificatesOf = async (id: string) =>
          (await api.get('/v1/certificates').query({ deviceId: id }).set(auth('auditor')).expect(200)).body.items as {
            serial: string;
            status: string;
          }[];
        const victim = await revokedDevice('revoked-1');
        await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'held-1' }).expect(201);
        const held = await api
          .post('/v1/certificates')
          .set(auth('provisioner'))
          .send({ profile: 'device', deviceId: 'held-1', csr: csr() })
          .expect(201);
        await api.post(`/v1/certificates/${held.body.serial}/revoke`).set(auth('operator')).send({ reason: 'certificateHold' }).expect(200);
        await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'retired-1' }).expect(201);
        await api.post('/v1/devices/retired-1/decommission').set(auth('operator')).expect(200);

        // The attack: operator-direct issuance for each of them. On the old code each got a certificate OCSP called good.
        const leaks: string[] = [];
        for (const [deviceId, why] of [
          ['ghost-1', /not in the inventory/],
          ['revoked-1', /is revoked/],
          ['held-1', /is suspended/],
          ['retired-1', /is decommissioned/],
        ] as const) {
          const res = await api.post('/v1/certificates').set(auth('provisioner')).send({ profile: 'device', deviceId, csr: csr() });
          if (res.status === 201) leaks.push(`${deviceId}: issued ${res.body.serial}, OCSP says ${await ocspStatus(res.body.certificate)}`);
          else assertProblem(res, 403, why);
        }
        assert.deepEqual(leaks, []);
        assert.deepEqual(await certificatesOf('ghost-1'), []);
        assert.deepEqual(await certificatesOf('retired-1'), []);
        // The revoked device's revoked certificate stays its only one, and OCSP goes on saying revoked.
        assert.deepEqual(
          (await certificatesOf('revoked-1')).map((c) => [c.serial, c.status]),
          [[victim.serial, 'revoked']],
        );
        assert.equal(await ocspStatus(victim.certificate), 'revoked');
        // A client device takes no broker certificate.
        await api.post('/v1/devices').set(auth('provisioner')).send({ id: 'client-1' }).expect(201);
        assertProblem(
          await api
            .post('/v1/certificates')
            .set(auth('provisioner'))
            .send({ profile: 'broker', deviceId: 'client-1', dnsNames: ['c.example'], csr: csr() }),
          403,
          /client/,
        );
      });

      it('renews nothing for a device that is not in the inventory', async () => {
        // Renewal of a certificate whose device is not in the inventory (made by the authority alone, as before this rule).
        const orphanCsr = p256Csr('orphan-1');
        const orphan = await svc.issuance.issue(
          {
            profile: 'device',
            deviceId: 'orphan-1',
            subjectPublicKeyInfo: Buffer.from(new x509.Pkcs10CertificateRequest(orphanCsr.der).publicKey.rawData),
          },
          { actor: 'test' },
        );
        const next = p256Csr('orphan-1');
        const renewal = await api
          .post('/v1/renew')
          .set({ Authorization: signedRenewalAuth(toPem(orphan.der), orphanCsr.privateKey, new Date().toISOString(), next.der) })
          .send({ csr: next.pem });
        assertProblem(renewal, 403, /not in the inventory/);
      });
    },
  );
}
