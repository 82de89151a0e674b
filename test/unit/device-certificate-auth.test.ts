import { describe, it, before } from 'node:test';
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { KeyObject, generateKeyPairSync, sign, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { malleateP256 } from '../helpers/csr.js';
import {
  DeviceCertificateAuthenticator,
  pickupSigningInput,
  renewalSigningInput,
  sessionKeysSigningInput,
  type DeviceProof,
  type IssuedCertificates,
  type OneTimeProofs,
} from '../../src/enroll/device-certificate-auth.js';
import { ManualClock } from '../../src/shared/clock.js';
import { DomainError } from '../../src/shared/errors.js';
import type { CertificateRow } from '../../src/store/certificate-store.js';
import type { Db, Executor } from '../../src/store/db.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** The stored certificates, in memory. */
class FakeCertificates implements IssuedCertificates {
  readonly rows = new Map<string, CertificateRow>();
  async get(_db: Executor, serial: Buffer) {
    return this.rows.get(serial.toString('hex'));
  }
}

/** The replay guard, in memory: what it was asked to remember, and until when. */
class FakeReplayGuard implements OneTimeProofs {
  readonly seen = new Map<string, Date>();
  async useOnce(_db: Executor, digest: Buffer, expiresAt: Date) {
    const k = digest.toString('hex');
    if (this.seen.has(k)) return false;
    this.seen.set(k, expiresAt);
    return true;
  }
}

interface Device {
  der: Buffer;
  key: KeyObject;
  serial: string;
}

const NOW = new Date('2026-06-01T12:00:00.000Z');

async function makeDevice(certificates: FakeCertificates, kind: 'p256' | 'ed25519', row: Partial<CertificateRow> = {}): Promise<Device> {
  const pair = kind === 'p256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  const alg = kind === 'p256' ? { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } : { name: 'Ed25519' };
  const keys = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', pair.privateKey.export({ format: 'der', type: 'pkcs8' }), alg, false, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', pair.publicKey.export({ format: 'der', type: 'spki' }), alg, true, ['verify']),
  };
  const serial = Buffer.from(webcrypto.getRandomValues(new Uint8Array(16)))
    .toString('hex')
    .replace(/^[89a-f]/, '1');
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial,
    name: 'CN=unit-device',
    notBefore: new Date(NOW.getTime() - 86_400_000),
    notAfter: new Date(NOW.getTime() + 86_400_000),
    keys: keys as webcrypto.CryptoKeyPair,
    signingAlgorithm: alg,
  });
  const der = Buffer.from(cert.rawData);
  certificates.rows.set(serial, {
    serial: Buffer.from(serial, 'hex'),
    caId: 'ca_unit',
    profile: 'device',
    status: 'issued',
    subjectCn: 'unit-device',
    deviceId: 'unit-device',
    der,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    createdAt: NOW,
    issuedAt: NOW,
    failure: null,
    renewedFrom: null,
    revokedAt: null,
    revocationReason: null,
    invalidityDate: null,
    ...row,
  });
  return { der, key: pair.privateKey, serial };
}

const signed = (d: Device, input: Buffer, signedAt: string, signature?: Buffer): DeviceProof => ({
  kind: 'signed',
  certificateDer: d.der,
  signedAt,
  signature: signature ?? sign(d.key.asymmetricKeyType === 'ed25519' ? null : 'sha256', input, d.key),
});

async function refusal(p: Promise<unknown>): Promise<DomainError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof DomainError) return e;
    throw e;
  }
  assert.fail('expected a refusal');
}

describe('device-certificate authentication (renewal, session keys, staged pickup): one module', () => {
  const certificates = new FakeCertificates();
  const replay = new FakeReplayGuard();
  const clock = new ManualClock(NOW);
  const auth = new DeviceCertificateAuthenticator({} as Db, certificates, replay, clock);
  let ec: Device;
  let ed: Device;
  const at = () => clock.now().toISOString();
  before(async () => {
    ec = await makeDevice(certificates, 'p256');
    ed = await makeDevice(certificates, 'ed25519');
  });

  it('accepts a TLS client certificate it issued, and returns its row and key', async () => {
    const got = await auth.authenticate({ kind: 'client-certificate', der: ec.der }, sessionKeysSigningInput);
    assert.equal(got.name, ec.serial);
    assert.equal(got.row.deviceId, 'unit-device');
    assert.equal(got.publicKey.asymmetricKeyType, 'ec');
    assert.equal(replay.seen.size, 0, 'a TLS handshake is no signed request: nothing to remember');
  });

  it('accepts a signed request once; the same content signed again, or its ECDSA signature with s → n − s, is a replay', async () => {
    const signedAt = at();
    const input = sessionKeysSigningInput(signedAt);
    const proof = signed(ec, input, signedAt);
    await auth.authenticate(proof, sessionKeysSigningInput);
    assert.equal(replay.seen.size, 1);
    assert.equal([...replay.seen.values()][0]!.getTime(), NOW.getTime() + 10 * 60_000, 'remembered for twice the skew');
    if (proof.kind !== 'signed') throw new Error('unreachable');
    const malleated = malleateP256(proof.signature);
    assert.notDeepEqual(malleated, proof.signature);
    assert.match((await refusal(auth.authenticate({ ...proof, signature: malleated }, sessionKeysSigningInput))).message, /replay/);
    // ECDSA signs with a fresh nonce: a second signature of the same content has other bytes, and is the same request.
    assert.match((await refusal(auth.authenticate(signed(ec, input, signedAt), sessionKeysSigningInput))).message, /replay/);
  });

  it('keys the guard on the certificate too: two devices signing the same content at the same moment are two requests', async () => {
    const other = await makeDevice(certificates, 'p256');
    clock.advance(1);
    const signedAt = at();
    await auth.authenticate(signed(ec, sessionKeysSigningInput(signedAt), signedAt), sessionKeysSigningInput);
    await auth.authenticate(signed(other, sessionKeysSigningInput(signedAt), signedAt), sessionKeysSigningInput);
  });

  it('refuses a signature over another purpose, another body, or by another key, and a time outside the skew', async () => {
    clock.advance(1);
    const signedAt = at();
    const csr = Buffer.from('csr');
    const renewal = (d: DeviceProof) => auth.authenticate(d, (t) => renewalSigningInput(t, csr));
    assert.match((await refusal(renewal(signed(ec, sessionKeysSigningInput(signedAt), signedAt)))).message, /does not verify/);
    assert.match(
      (await refusal(renewal(signed(ec, renewalSigningInput(signedAt, Buffer.from('other csr')), signedAt)))).message,
      /does not verify/,
    );
    const pickup = (p: DeviceProof) => auth.authenticate(p, (t) => pickupSigningInput(t, { password: 'device-pass', format: 'pkcs12' }));
    assert.match(
      (await refusal(pickup(signed(ec, pickupSigningInput(signedAt, { password: 'attacker-pass', format: 'pkcs12' }), signedAt)))).message,
      /does not verify/,
    );
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    assert.match(
      (
        await refusal(
          renewal({
            kind: 'signed',
            certificateDer: ec.der,
            signedAt,
            signature: sign('sha256', renewalSigningInput(signedAt, csr), stranger),
          }),
        )
      ).message,
      /does not verify/,
    );
    const old = new Date(clock.now().getTime() - 5 * 60_000 - 1).toISOString();
    assert.match((await refusal(renewal(signed(ec, renewalSigningInput(old, csr), old)))).message, /stale/);
    assert.match((await refusal(renewal(signed(ec, renewalSigningInput('yesterday', csr), 'yesterday')))).message, /stale/);
    // None of these was remembered: only a verified request is.
    await renewal(signed(ec, renewalSigningInput(signedAt, csr), signedAt));
    await pickup(signed(ed, pickupSigningInput(signedAt, { password: 'device-pass', format: 'pkcs12' }), signedAt));
  });

  it('refuses certificates it did not issue, that do not parse, that are revoked or on hold, or that authenticate no device', async () => {
    const foreign = new FakeCertificates();
    const stray = await makeDevice(foreign, 'p256');
    const client = (der: Buffer) => auth.authenticate({ kind: 'client-certificate', der }, sessionKeysSigningInput);
    assert.equal((await refusal(client(stray.der))).kind, 'Unauthenticated');
    assert.match((await refusal(client(Buffer.from('not a certificate')))).message, /cannot be parsed/);
    const held = await makeDevice(certificates, 'p256', { status: 'revoked', revocationReason: 'certificateHold' });
    const revoked = await makeDevice(certificates, 'p256', { status: 'revoked', revocationReason: 'keyCompromise' });
    const responder = await makeDevice(certificates, 'p256', { deviceId: null });
    const e = await refusal(client(held.der));
    assert.deepEqual([e.kind, /on hold/.test(e.message)], ['Forbidden', true]);
    assert.match((await refusal(client(revoked.der))).message, /is revoked/);
    assert.match((await refusal(client(responder.der))).message, /does not authenticate a device/);
    // A stored row whose DER differs from what was presented (same serial): not ours.
    const twin = await makeDevice(certificates, 'p256');
    const row = certificates.rows.get(twin.serial)!;
    certificates.rows.set(twin.serial, { ...row, der: Buffer.concat([row.der!, Buffer.from([0])]) });
    assert.match((await refusal(client(twin.der))).message, /not issued by this CA/);
  });

  it('an Ed25519 signature verifies too (the algorithms devices sign with)', async () => {
    clock.advance(1);
    const signedAt = at();
    const got = await auth.authenticate(signed(ed, sessionKeysSigningInput(signedAt), signedAt), sessionKeysSigningInput);
    assert.ok(got.publicKey instanceof KeyObject);
  });
});
