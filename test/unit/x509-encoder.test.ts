/**
 * The DER encoder against @peculiar/x509 (the oracle) and OpenSSL.
 *
 * For every issuer key type and extension profile the library builds a certificate
 * from the same semantic inputs (its own extension classes, not our bytes), and the
 * TBSCertificate bytes must match exactly. Our certificates are then signed with
 * node:crypto and must verify in the library and in `openssl verify -x509_strict`.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, sign as nodeSign, webcrypto, type KeyObject } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import 'reflect-metadata';
import type * as X509 from '@peculiar/x509';
import * as der from '../../src/ca/x509/der.js';
import {
  algorithmIdentifier,
  compileTbsTemplate,
  encodeCertificate,
  encodeCertificationRequest,
  encodeCertificationRequestInfo,
  encodeTbsCertificate,
  nodeSignHash,
  type SignatureAlgorithm,
} from '../../src/ca/x509/encode.js';
import { ext, keyIdentifier, type KeyUsageFlag } from '../../src/ca/x509/extensions.js';
import { ipAddressBytes } from '../../src/ca/x509/ip-address.js';
import { encodeName, type GeneralName, type NameAttribute } from '../../src/ca/x509/names.js';
import { OID } from '../../src/ca/x509/oids.js';

const x509 = await import('@peculiar/x509');
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

// ---------------------------------------------------------------------------
// Helpers

const hex = (b: Uint8Array | ArrayBuffer): string => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString('hex');
const u8 = (b: Uint8Array | ArrayBuffer): Uint8Array => new Uint8Array(b instanceof ArrayBuffer ? b : b.slice());

/** The first element of the outer SEQUENCE (the TBS), sliced from raw bytes. Independent of der.ts. */
function firstElement(raw: Uint8Array | ArrayBuffer): Uint8Array {
  const b = raw instanceof ArrayBuffer ? new Uint8Array(raw) : raw;
  const skipHeader = (pos: number): { start: number; end: number } => {
    const l0 = b[pos + 1] as number;
    if (l0 < 0x80) return { start: pos + 2, end: pos + 2 + l0 };
    const n = l0 & 0x7f;
    let len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (b[pos + 2 + i] as number);
    return { start: pos + 2 + n, end: pos + 2 + n + len };
  };
  const outer = skipHeader(0);
  const inner = skipHeader(outer.start);
  return b.slice(outer.start, inner.end);
}

type KeyKind = 'P-256' | 'P-384' | 'Ed25519' | 'RSA-2048';
const KINDS: KeyKind[] = ['P-256', 'P-384', 'Ed25519', 'RSA-2048'];

interface TestKey {
  kind: KeyKind;
  alg: SignatureAlgorithm;
  privateKey: KeyObject;
  publicKey: KeyObject;
  spki: Uint8Array;
  /** WebCrypto pair for the library. */
  webKeys: { privateKey: webcrypto.CryptoKey; publicKey: webcrypto.CryptoKey };
  /** What the library wants as signingAlgorithm. */
  webSignAlg: Record<string, unknown>;
}

async function makeKey(kind: KeyKind): Promise<TestKey> {
  let pair: { privateKey: KeyObject; publicKey: KeyObject };
  let importAlg: Record<string, unknown>;
  let webSignAlg: Record<string, unknown>;
  let alg: SignatureAlgorithm;
  switch (kind) {
    case 'P-256':
      pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      importAlg = { name: 'ECDSA', namedCurve: 'P-256' };
      webSignAlg = { name: 'ECDSA', hash: 'SHA-256' };
      alg = 'ecdsa-with-SHA256';
      break;
    case 'P-384':
      pair = generateKeyPairSync('ec', { namedCurve: 'P-384' });
      importAlg = { name: 'ECDSA', namedCurve: 'P-384' };
      webSignAlg = { name: 'ECDSA', hash: 'SHA-384' };
      alg = 'ecdsa-with-SHA384';
      break;
    case 'Ed25519':
      pair = generateKeyPairSync('ed25519');
      importAlg = { name: 'Ed25519' };
      webSignAlg = { name: 'Ed25519' };
      alg = 'Ed25519';
      break;
    case 'RSA-2048':
      pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
      importAlg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
      webSignAlg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
      alg = 'sha256WithRSAEncryption';
      break;
  }
  const spki = u8(pair.publicKey.export({ type: 'spki', format: 'der' }));
  const pkcs8 = pair.privateKey.export({ type: 'pkcs8', format: 'der' });
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, importAlg as never, false, ['sign']);
  const publicKey = await webcrypto.subtle.importKey('spki', spki, importAlg as never, true, ['verify']);
  return { kind, alg, ...pair, spki, webKeys: { privateKey, publicKey }, webSignAlg };
}

function signWith(key: TestKey, data: Uint8Array): Uint8Array {
  return u8(nodeSign(nodeSignHash(key.alg), data, key.privateKey));
}

interface Profile {
  name: string;
  bc?: { ca: boolean; pathLen?: number };
  ku: KeyUsageFlag[];
  eku?: string[];
  san?: GeneralName[];
  ocspNoCheck?: boolean;
  aia?: { ocsp: string[]; caIssuers: string[] };
  crldp?: string[];
}

const AIA = { ocsp: ['http://ocsp.example.com'], caIssuers: ['http://ca.example.com/ca.cer'] };
const CRLDP = ['http://crl.example.com/ca.crl'];

const PROFILES: Profile[] = [
  {
    name: 'device leaf',
    ku: ['digitalSignature'],
    eku: [OID.clientAuth],
    san: [{ type: 'uri', value: 'mqtt://devices/dev-1' }],
    aia: AIA,
    crldp: CRLDP,
  },
  {
    name: 'broker leaf',
    bc: { ca: false },
    ku: ['digitalSignature', 'keyEncipherment'],
    eku: [OID.serverAuth, OID.clientAuth],
    san: [
      { type: 'dns', value: 'broker.example.com' },
      { type: 'ip', value: '10.1.2.3' },
      { type: 'ip', value: '2001:db8::1' },
      { type: 'email', value: 'ops@example.com' },
    ],
    aia: AIA,
    crldp: CRLDP,
  },
  { name: 'OCSP responder', ku: ['digitalSignature'], eku: [OID.ocspSigning], ocspNoCheck: true },
  { name: 'CA', bc: { ca: true, pathLen: 0 }, ku: ['keyCertSign', 'cRLSign'] },
];

const KU_FLAG: Record<KeyUsageFlag, number> = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
};
const kuNumber = (flags: KeyUsageFlag[]): number => flags.reduce((n, f) => n | KU_FLAG[f], 0);
const libSanType = (t: GeneralName['type']): 'dns' | 'ip' | 'url' | 'email' => (t === 'uri' ? 'url' : t);

/** Our extensions, in the canonical order: BC, KU, EKU, SAN, SKI, AKI, AIA, CRLDP, ocsp-nocheck. */
function ourExtensions(p: Profile, subjectSpki: Uint8Array, issuerSpki: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  if (p.bc) out.push(ext.basicConstraints(p.bc));
  out.push(ext.keyUsage(p.ku));
  if (p.eku) out.push(ext.extendedKeyUsage(p.eku));
  if (p.san) out.push(ext.subjectAltName(p.san, false));
  out.push(ext.subjectKeyIdentifier(keyIdentifier(subjectSpki)));
  out.push(ext.authorityKeyIdentifier(keyIdentifier(issuerSpki)));
  if (p.aia) out.push(ext.authorityInfoAccess(p.aia));
  if (p.crldp) out.push(ext.crlDistributionPoints(p.crldp));
  if (p.ocspNoCheck) out.push(ext.ocspNoCheck());
  return out;
}

/** The same profile built with the library's own extension classes. */
async function libExtensions(p: Profile, subjectSpki: Uint8Array, issuerSpki: Uint8Array): Promise<X509.Extension[]> {
  const out: X509.Extension[] = [];
  if (p.bc) out.push(new x509.BasicConstraintsExtension(p.bc.ca, p.bc.pathLen, true));
  out.push(new x509.KeyUsagesExtension(kuNumber(p.ku), true));
  if (p.eku) out.push(new x509.ExtendedKeyUsageExtension(p.eku, false));
  if (p.san)
    out.push(
      new x509.SubjectAlternativeNameExtension(
        p.san.map((n) => ({ type: libSanType(n.type), value: n.value })),
        false,
      ),
    );
  out.push(await x509.SubjectKeyIdentifierExtension.create(subjectSpki));
  out.push(await x509.AuthorityKeyIdentifierExtension.create(issuerSpki));
  if (p.aia) out.push(new x509.AuthorityInfoAccessExtension(p.aia));
  if (p.crldp) out.push(new x509.CRLDistributionPointsExtension(p.crldp));
  if (p.ocspNoCheck) out.push(new x509.Extension(OID.ocspNoCheck, false, der.NULL));
  return out;
}

const ISSUER_ATTRS: NameAttribute[] = [
  { type: 'C', value: 'DE' },
  { type: 'O', value: 'Acme Fleet' },
  { type: 'CN', value: 'Acme Device CA' },
];
const subjectAttrs = (cn: string): NameAttribute[] => [
  { type: 'O', value: 'Acme Fleet' },
  { type: 'OU', value: 'Devices' },
  { type: 'CN', value: cn },
];

function openssl(args: string[], input?: Uint8Array): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('openssl', args, { input, encoding: 'utf8' });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function toPem(derBytes: Uint8Array, label: string): string {
  const b64 = Buffer.from(derBytes).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ${label}-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END ${label}-----\n`;
}

/** Checks every extension of a parsed certificate against the profile it was built from. */
function checkExtensionsParseBack(cert: X509.X509Certificate, p: Profile, subjectSpki: Uint8Array, issuerSpki: Uint8Array): void {
  const expectedOrder = [
    ...(p.bc ? [OID.basicConstraints] : []),
    OID.keyUsage,
    ...(p.eku ? [OID.extKeyUsage] : []),
    ...(p.san ? [OID.subjectAltName] : []),
    OID.subjectKeyIdentifier,
    OID.authorityKeyIdentifier,
    ...(p.aia ? [OID.authorityInfoAccess] : []),
    ...(p.crldp ? [OID.crlDistributionPoints] : []),
    ...(p.ocspNoCheck ? [OID.ocspNoCheck] : []),
  ];
  // Array.from: the library's list is an Array subclass, which deepEqual tells apart.
  assert.deepEqual(
    Array.from(cert.extensions, (e) => e.type),
    expectedOrder,
  );

  if (p.bc) {
    const bc = cert.getExtension<X509.BasicConstraintsExtension>(OID.basicConstraints);
    assert.ok(bc);
    assert.equal(bc.critical, true);
    assert.equal(bc.ca, p.bc.ca);
    assert.equal(bc.pathLength, p.bc.pathLen);
  }
  const ku = cert.getExtension<X509.KeyUsagesExtension>(OID.keyUsage);
  assert.ok(ku);
  assert.equal(ku.critical, true);
  assert.equal(ku.usages, kuNumber(p.ku));
  if (p.eku) {
    const eku = cert.getExtension<X509.ExtendedKeyUsageExtension>(OID.extKeyUsage);
    assert.ok(eku);
    assert.equal(eku.critical, false);
    assert.deepEqual(Array.from(eku.usages), p.eku);
  }
  if (p.san) {
    const san = cert.getExtension<X509.SubjectAlternativeNameExtension>(OID.subjectAltName);
    assert.ok(san);
    assert.equal(san.critical, false);
    assert.deepEqual(
      Array.from(san.names.toJSON()),
      p.san.map((n) => ({ type: libSanType(n.type), value: n.value })),
    );
  }
  const ski = cert.getExtension<X509.SubjectKeyIdentifierExtension>(OID.subjectKeyIdentifier);
  assert.equal(ski?.keyId, hex(keyIdentifier(subjectSpki)));
  const aki = cert.getExtension<X509.AuthorityKeyIdentifierExtension>(OID.authorityKeyIdentifier);
  assert.equal(aki?.keyId, hex(keyIdentifier(issuerSpki)));
  assert.equal(aki?.certId, undefined);
  if (p.aia) {
    const aia = cert.getExtension<X509.AuthorityInfoAccessExtension>(OID.authorityInfoAccess);
    assert.ok(aia);
    assert.equal(aia.critical, false);
    assert.deepEqual(
      Array.from(aia.ocsp, (g) => [g.type, g.value]),
      p.aia.ocsp.map((u) => ['url', u]),
    );
    assert.deepEqual(
      Array.from(aia.caIssuers, (g) => [g.type, g.value]),
      p.aia.caIssuers.map((u) => ['url', u]),
    );
  }
  if (p.crldp) {
    const cdp = cert.getExtension<X509.CRLDistributionPointsExtension>(OID.crlDistributionPoints);
    assert.ok(cdp);
    assert.equal(cdp.critical, false);
    assert.equal(cdp.distributionPoints.length, 1);
    const fullName = cdp.distributionPoints[0]?.distributionPoint?.fullName ?? [];
    assert.deepEqual(
      Array.from(fullName, (g) => g.uniformResourceIdentifier),
      p.crldp,
    );
  }
  if (p.ocspNoCheck) {
    const nocheck = cert.getExtension(OID.ocspNoCheck);
    assert.ok(nocheck);
    assert.equal(nocheck.critical, false);
    assert.equal(hex(nocheck.value), '0500');
  }
}

// ---------------------------------------------------------------------------

const keys = new Map<KeyKind, TestKey>();
const key = (k: KeyKind): TestKey => {
  const v = keys.get(k);
  if (!v) throw new Error(`no key ${k}`);
  return v;
};
let tmp = '';

before(async () => {
  for (const k of KINDS) keys.set(k, await makeKey(k));
  tmp = mkdtempSync(join(tmpdir(), 'x509-encoder-'));
});
after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const NOW = new Date();
const NOT_BEFORE = new Date(Math.floor(NOW.getTime() / 1000) * 1000 - 3_600_000);
const NOT_AFTER = new Date(NOT_BEFORE.getTime() + 30 * 86_400_000);

describe('DER primitives', () => {
  test('length encoding: short and long forms', () => {
    assert.equal(hex(der.encodeLength(0)), '00');
    assert.equal(hex(der.encodeLength(127)), '7f');
    assert.equal(hex(der.encodeLength(128)), '8180');
    assert.equal(hex(der.encodeLength(255)), '81ff');
    assert.equal(hex(der.encodeLength(256)), '820100');
    assert.equal(hex(der.encodeLength(65535)), '82ffff');
    assert.equal(hex(der.encodeLength(65536)), '83010000');
    assert.equal(hex(der.encodeLength(0x01000000)), '8401000000');
    const big = der.octetString(new Uint8Array(300));
    assert.equal(hex(big.subarray(0, 4)), '0482012c');
    assert.equal(big.length, 304);
  });

  test('tlv, sequence, explicit and implicit tags', () => {
    assert.equal(hex(der.sequence()), '3000');
    assert.equal(hex(der.sequence(der.NULL, der.boolean(true))), '30050500' + '0101ff');
    assert.equal(hex(der.boolean(false)), '010100');
    assert.equal(hex(der.explicit(0, der.smallInt(2))), 'a003020102');
    assert.equal(hex(der.explicit(3, der.sequence())), 'a3023000');
    assert.equal(hex(der.implicit(0, false, Uint8Array.of(1, 2))), '80020102');
    assert.equal(hex(der.implicit(1, true, der.NULL)), 'a1020500');
    assert.equal(hex(der.retagImplicit(6, der.ia5String('a'))), '860161');
    assert.equal(hex(der.retagImplicit(0, der.sequence(der.NULL))), 'a0020500');
  });

  test('SET OF is sorted by encoding (X.690 11.6)', () => {
    const a = der.utf8String('b');
    const b = der.utf8String('a');
    const c = der.integer(Uint8Array.of(5));
    assert.equal(hex(der.set(a, b, c)), '31' + '09' + '020105' + '0c0161' + '0c0162');
  });

  test('integer from unsigned bytes: sign byte and leading zeros', () => {
    assert.equal(hex(der.integer(Uint8Array.of())), '020100');
    assert.equal(hex(der.integer(Uint8Array.of(0))), '020100');
    assert.equal(hex(der.integer(Uint8Array.of(0, 0, 0))), '020100');
    assert.equal(hex(der.integer(Uint8Array.of(0x7f))), '02017f');
    assert.equal(hex(der.integer(Uint8Array.of(0x80))), '02020080');
    assert.equal(hex(der.integer(Uint8Array.of(0, 0, 0x12, 0x34))), '02021234');
    assert.equal(hex(der.integer(Uint8Array.of(0, 0, 0x92, 0x34))), '0203009234');
    assert.equal(hex(der.smallInt(0)), '020100');
    assert.equal(hex(der.smallInt(127)), '02017f');
    assert.equal(hex(der.smallInt(128)), '02020080');
    assert.equal(hex(der.smallInt(65536)), '0203010000');
    assert.throws(() => der.smallInt(-1), RangeError);
  });

  test('OIDs, including multi-byte and huge arcs (openssl as oracle)', () => {
    assert.equal(hex(der.oid('1.2.840.113549')), '06062a864886f70d');
    assert.equal(hex(der.oid('2.5.29.19')), '0603551d13');
    assert.equal(hex(der.oid('2.999.3')), '0603883703');
    assert.equal(der.oid('2.5.29.19'), der.oid('2.5.29.19'), 'cached');
    for (const o of ['1.3.6.1.4.1.311.20.2.3', '2.25.329800735698586629295641978511506172918', '1.2.840.10045.3.1.7']) {
      const out = join(tmp, 'oid.der');
      const r = openssl(['asn1parse', '-genstr', `OID:${o}`, '-out', out, '-noout']);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(hex(der.oid(o)), hex(u8(readFileSync(out))), o);
    }
    for (const bad of ['', '1', '3.1', '1.40', '1.2.', '1..2', '1.02', 'a.b']) assert.throws(() => der.oid(bad), Error, bad);
  });

  test('strings', () => {
    assert.equal(hex(der.utf8String('Mü')), '0c034dc3bc');
    assert.equal(hex(der.printableString("A-z 0'()+,./:=?")), '13' + '0f' + Buffer.from("A-z 0'()+,./:=?").toString('hex'));
    assert.throws(() => der.printableString('a@b'), TypeError);
    assert.throws(() => der.printableString('a*b'), TypeError);
    assert.throws(() => der.printableString('ü'), TypeError);
    assert.equal(hex(der.ia5String('a@b')), '1603614062');
    assert.throws(() => der.ia5String('é'), TypeError);
  });

  test('bit string and octet string', () => {
    assert.equal(hex(der.bitString(Uint8Array.of(0x80), 7)), '03020780');
    assert.equal(hex(der.bitString(Uint8Array.of())), '030100');
    assert.throws(() => der.bitString(Uint8Array.of(), 1), RangeError);
    assert.throws(() => der.bitString(Uint8Array.of(1), 8), RangeError);
    assert.equal(hex(der.octetString(Uint8Array.of(1, 2))), '04020102');
  });

  test('times: UTCTime through 2049, GeneralizedTime from 2050, Z, seconds, no fraction', () => {
    const t = (iso: string): string =>
      Buffer.from(der.time(new Date(iso)))
        .toString('latin1')
        .slice(2);
    assert.equal(der.time(new Date('2049-12-31T23:59:59Z'))[0], 0x17);
    assert.equal(t('2049-12-31T23:59:59Z'), '491231235959Z');
    assert.equal(der.time(new Date('2050-01-01T00:00:00Z'))[0], 0x18);
    assert.equal(t('2050-01-01T00:00:00Z'), '20500101000000Z');
    assert.equal(t('2030-06-07T08:09:10.999Z'), '300607080910Z');
    assert.equal(t('2000-01-01T00:00:00Z'), '000101000000Z');
    assert.equal(t('1950-01-01T00:00:00Z'), '500101000000Z');
    // Before 1950 UTCTime would be read back as 20xx, so GeneralizedTime is used.
    assert.equal(der.time(new Date('1949-12-31T23:59:59Z'))[0], 0x18);
    assert.equal(t('1949-12-31T23:59:59Z'), '19491231235959Z');
    assert.equal(t('9999-12-31T23:59:59Z'), '99991231235959Z');
    assert.throws(() => der.utcTime(new Date('2050-01-01T00:00:00Z')), RangeError);
    assert.throws(() => der.time(new Date(Number.NaN)), RangeError);
    const out = new Uint8Array(17);
    assert.equal(der.writeTime(out, 0, new Date('2051-02-03T04:05:06Z')), 17);
    assert.equal(hex(out), hex(der.time(new Date('2051-02-03T04:05:06Z'))));
  });

  test('readTlv', () => {
    const s = der.sequence(der.octetString(new Uint8Array(200)), der.NULL);
    const h = der.readTlv(s);
    assert.deepEqual(h, { tag: 0x30, start: 3, end: s.length });
    const inner = der.readTlv(s, h.start);
    assert.deepEqual(inner, { tag: 0x04, start: 6, end: 206 });
    assert.throws(() => der.readTlv(s.subarray(0, 10)), RangeError);
  });

  test('readTlv is strict DER: each refusal is a DerError naming its fault', () => {
    const fault = (bytes: number[], pos?: number, limit?: number, maxLengthOctets?: number) => {
      try {
        der.readTlv(Uint8Array.from(bytes), pos, limit, maxLengthOctets);
      } catch (e) {
        assert.ok(e instanceof der.DerError && e instanceof RangeError, String(e));
        return e.fault;
      }
      return 'read';
    };
    assert.equal(fault([0x04, 0x81, 0x05, 1, 2, 3, 4, 5]), 'non-minimal');
    assert.equal(fault([0x04, 0x82, 0x00, 0x05, 1, 2, 3, 4, 5]), 'non-minimal');
    assert.equal(fault([0x30, 0x80, 0x05, 0x00, 0x00, 0x00]), 'indefinite');
    assert.equal(fault([0x04, 0x06, 1, 2, 3, 4, 5]), 'truncated');
    assert.equal(fault([0x30]), 'truncated');
    assert.equal(fault([0x30, 0x00], 2), 'missing');
    assert.equal(fault([0x1f, 0x01, 0x00]), 'high-tag');
    assert.equal(fault([0x04, 0x85, 1, 0, 0, 0, 0]), 'too-long');
    assert.equal(fault([0x04, 0x84, 0x01, 0x00, 0x00, 0x00]), 'truncated');
    // Bounded by the container, not the buffer; and a reader may allow fewer length octets.
    assert.equal(fault([0x30, 0x03, 0x04, 0x02, 0xaa, 0xbb], 2, 5), 'truncated');
    assert.equal(fault([0x30, 0x03, 0x04, 0x01, 0xaa], 2, 5), 'read');
    assert.equal(fault([0x04, 0x84, 0x01, 0x00, 0x00, 0x00], 0, 6, 3), 'too-long');
    const long = new Uint8Array(0x104);
    long.set([0x04, 0x82, 0x01, 0x00]);
    assert.deepEqual(der.readTlv(long), { tag: 0x04, start: 4, end: 0x104 });
  });
});

describe('names', () => {
  const ATTRS: NameAttribute[] = [
    { type: 'C', value: 'DE' },
    { type: 'ST', value: 'Bavaria' },
    { type: 'L', value: 'München' },
    { type: 'O', value: 'Acme GmbH' },
    { type: 'OU', value: 'Fleet' },
    { type: 'CN', value: 'dev-1' },
    { type: 'serialNumber', value: 'SN-0001' },
  ];
  // The library's JSON form with explicit string types: C and serialNumber
  // PrintableString, the DirectoryStrings UTF8String (RFC 5280 4.1.2.6).
  const JSON_NAME = [
    { C: [{ printableString: 'DE' }] },
    { ST: [{ utf8String: 'Bavaria' }] },
    { L: [{ utf8String: 'München' }] },
    { O: [{ utf8String: 'Acme GmbH' }] },
    { OU: [{ utf8String: 'Fleet' }] },
    { CN: [{ utf8String: 'dev-1' }] },
    { '2.5.4.5': [{ printableString: 'SN-0001' }] },
  ];

  test('encodeName equals the library Name built from JSON with explicit string types', () => {
    const ours = encodeName(ATTRS);
    assert.equal(hex(ours), hex(new x509.Name(JSON_NAME).toArrayBuffer()));
    const parsed = new x509.Name(ours);
    assert.equal(parsed.toString(), 'C=DE, ST=Bavaria, L=München, O=Acme GmbH, OU=Fleet, CN=dev-1, 2.5.4.5=SN-0001');
  });

  test('string types: C and serialNumber PrintableString, others UTF8String', () => {
    const n = encodeName([
      { type: 'C', value: 'US' },
      { type: 'CN', value: 'plain' },
      { type: 'serialNumber', value: '42' },
    ]);
    // SEQUENCE { SET { SEQUENCE { OID, value } } ... }: find each value's tag.
    const tags: number[] = [];
    const outer = der.readTlv(n);
    for (let pos = outer.start; pos < outer.end;) {
      const rdn = der.readTlv(n, pos);
      const atv = der.readTlv(n, rdn.start);
      const type = der.readTlv(n, atv.start);
      tags.push(der.readTlv(n, type.end).tag);
      pos = rdn.end;
    }
    assert.deepEqual(tags, [0x13, 0x0c, 0x13]);
    assert.equal(hex(encodeName([])), '3000');
  });

  test('rejects bad attribute values', () => {
    assert.throws(() => encodeName([{ type: 'C', value: 'DEU' }]), TypeError);
    assert.throws(() => encodeName([{ type: 'C', value: 'D*' }]), TypeError);
    assert.throws(() => encodeName([{ type: 'serialNumber', value: 'a@b' }]), TypeError);
    assert.throws(() => encodeName([{ type: 'CN', value: '' }]), TypeError);
    assert.throws(() => encodeName([{ type: 'XX' as never, value: 'a' }]), TypeError);
  });

  test('whole TBS with JSON-built library names matches', async () => {
    const issuer = key('P-256');
    const subject = key('Ed25519');
    const p = PROFILES[0] as Profile;
    const lib = await x509.X509CertificateGenerator.create({
      serialNumber: '0a1b2c',
      subject: new x509.Name(JSON_NAME),
      issuer: new x509.Name([{ C: [{ printableString: 'DE' }] }, { CN: [{ utf8String: 'Acme Device CA' }] }]),
      notBefore: NOT_BEFORE,
      notAfter: NOT_AFTER,
      publicKey: subject.spki,
      signingKey: issuer.webKeys.privateKey,
      signingAlgorithm: issuer.webSignAlg as never,
      extensions: await libExtensions(p, subject.spki, issuer.spki),
    });
    const tbs = encodeTbsCertificate({
      serial: Uint8Array.of(0x0a, 0x1b, 0x2c),
      signatureAlgorithm: issuer.alg,
      issuer: encodeName([
        { type: 'C', value: 'DE' },
        { type: 'CN', value: 'Acme Device CA' },
      ]),
      notBefore: NOT_BEFORE,
      notAfter: NOT_AFTER,
      subject: encodeName(ATTRS),
      subjectPublicKeyInfo: subject.spki,
      extensions: ourExtensions(p, subject.spki, issuer.spki),
    });
    assert.equal(hex(tbs), hex(firstElement(lib.rawData)));
  });
});

describe('certificates against the library, per issuer key type and profile', () => {
  for (const [i, kind] of KINDS.entries()) {
    for (const p of PROFILES) {
      test(`${kind} issuer, ${p.name}`, async () => {
        const issuer = key(kind);
        const selfSigned = p.bc?.ca === true;
        const subject = selfSigned ? issuer : key(KINDS[(i + 1) % KINDS.length] as KeyKind);
        const issuerName = encodeName(ISSUER_ATTRS);
        const subjectName = selfSigned ? issuerName : encodeName(subjectAttrs(`${p.name} ${kind}`));
        const serial = Uint8Array.from(createHash('sha256').update(`${kind}/${p.name}`).digest().subarray(0, 16));

        const lib = await x509.X509CertificateGenerator.create({
          serialNumber: hex(serial),
          subject: new x509.Name(subjectName),
          issuer: new x509.Name(issuerName),
          notBefore: NOT_BEFORE,
          notAfter: NOT_AFTER,
          publicKey: subject.spki,
          signingKey: issuer.webKeys.privateKey,
          signingAlgorithm: issuer.webSignAlg as never,
          extensions: await libExtensions(p, subject.spki, issuer.spki),
        });
        assert.equal(await lib.verify({ publicKey: issuer.spki, signatureOnly: true }), true, 'library self-check');

        const tbs = encodeTbsCertificate({
          serial,
          signatureAlgorithm: issuer.alg,
          issuer: issuerName,
          notBefore: NOT_BEFORE,
          notAfter: NOT_AFTER,
          subject: subjectName,
          subjectPublicKeyInfo: subject.spki,
          extensions: ourExtensions(p, subject.spki, issuer.spki),
        });
        assert.equal(hex(tbs), hex(firstElement(lib.rawData)), 'TBSCertificate bytes');

        const certDer = encodeCertificate(tbs, issuer.alg, signWith(issuer, tbs));
        // Outer algorithm identifier and signature layout match the library's too.
        const libRaw = new Uint8Array(lib.rawData);
        const algId = algorithmIdentifier(issuer.alg);
        const afterTbs = der.readTlv(libRaw).start + tbs.length;
        assert.equal(hex(libRaw.subarray(afterTbs, afterTbs + algId.length)), hex(algId));
        const ourAfterTbs = der.readTlv(certDer).start + tbs.length;
        assert.equal(hex(certDer.subarray(ourAfterTbs, ourAfterTbs + algId.length)), hex(algId));

        const cert = new x509.X509Certificate(certDer);
        assert.equal(await cert.verify({ publicKey: issuer.spki, signatureOnly: true }), true, 'our certificate verifies');
        assert.equal(await cert.verify({ publicKey: issuer.spki, date: NOW }), true, 'and is valid now');
        assert.equal(cert.serialNumber, hex(serial).replace(/^00/, ''));
        assert.equal(cert.notBefore.getTime(), NOT_BEFORE.getTime());
        assert.equal(cert.notAfter.getTime(), NOT_AFTER.getTime());
        assert.equal(cert.subject, new x509.Name(subjectName).toString());
        assert.equal(cert.issuer, 'C=DE, O=Acme Fleet, CN=Acme Device CA');
        assert.equal(hex(cert.publicKey.rawData), hex(subject.spki));
        checkExtensionsParseBack(cert, p, subject.spki, issuer.spki);

        const text = openssl(['x509', '-inform', 'DER', '-noout', '-text'], certDer);
        assert.equal(text.status, 0, text.stderr);
        for (const n of p.san ?? []) {
          const shown =
            n.type === 'dns'
              ? `DNS:${n.value}`
              : n.type === 'uri'
                ? `URI:${n.value}`
                : n.type === 'email'
                  ? `email:${n.value}`
                  : n.value === '2001:db8::1'
                    ? 'IP Address:2001:DB8:0:0:0:0:0:1'
                    : `IP Address:${n.value}`;
          assert.ok(text.stdout.includes(shown), `openssl shows ${shown}`);
        }
        if (p.ocspNoCheck) assert.match(text.stdout, /OCSP No Check/);
        if (p.bc?.ca) assert.match(text.stdout, /CA:TRUE, pathlen:0/);
        if (p.aia) assert.match(text.stdout, /OCSP - URI:http:\/\/ocsp\.example\.com/);
        if (p.crldp) assert.match(text.stdout, /URI:http:\/\/crl\.example\.com\/ca\.crl/);
      });
    }
  }
});

describe('chains built entirely with our encoder pass openssl verify -x509_strict', () => {
  for (const kind of KINDS) {
    test(`${kind} root`, () => {
      const root = key(kind);
      const rootName = encodeName([
        { type: 'C', value: 'DE' },
        { type: 'O', value: 'Acme Fleet' },
        { type: 'CN', value: `Acme Root ${kind}` },
      ]);
      const template = compileTbsTemplate({
        signatureAlgorithm: root.alg,
        issuer: rootName,
        extensionsAfter: [
          ext.authorityKeyIdentifier(keyIdentifier(root.spki)),
          ext.authorityInfoAccess(AIA),
          ext.crlDistributionPoints(CRLDP),
        ],
      });
      const rootTbs = encodeTbsCertificate({
        serial: Uint8Array.of(0x01),
        signatureAlgorithm: root.alg,
        issuer: rootName,
        notBefore: NOT_BEFORE,
        notAfter: NOT_AFTER,
        subject: rootName,
        subjectPublicKeyInfo: root.spki,
        extensions: [
          ext.basicConstraints({ ca: true, pathLen: 0 }),
          ext.keyUsage(['keyCertSign', 'cRLSign']),
          ext.subjectKeyIdentifier(keyIdentifier(root.spki)),
        ],
      });
      const rootDer = encodeCertificate(rootTbs, root.alg, signWith(root, rootTbs));
      const dir = mkdtempSync(join(tmp, `${kind}-`));
      writeFileSync(join(dir, 'root.pem'), toPem(rootDer, 'CERTIFICATE'));

      const leaves: { name: string; purpose: string; spki: Uint8Array; exts: Uint8Array[] }[] = [
        {
          name: 'device',
          purpose: 'sslclient',
          spki: key('P-256').spki,
          exts: [
            ext.keyUsage(['digitalSignature']),
            ext.extendedKeyUsage([OID.clientAuth]),
            ext.subjectAltName([{ type: 'uri', value: 'mqtt://devices/dev-1' }], false),
            ext.subjectKeyIdentifier(keyIdentifier(key('P-256').spki)),
          ],
        },
        {
          name: 'broker',
          purpose: 'sslserver',
          spki: key('RSA-2048').spki,
          exts: [
            ext.basicConstraints({ ca: false }),
            ext.keyUsage(['digitalSignature', 'keyEncipherment']),
            ext.extendedKeyUsage([OID.serverAuth, OID.clientAuth]),
            ext.subjectAltName(
              [
                { type: 'dns', value: 'broker.example.com' },
                { type: 'ip', value: '10.1.2.3' },
                { type: 'ip', value: '::1' },
              ],
              false,
            ),
            ext.subjectKeyIdentifier(keyIdentifier(key('RSA-2048').spki)),
          ],
        },
        {
          name: 'ocsp',
          purpose: 'any',
          spki: key('P-384').spki,
          exts: [
            ext.keyUsage(['digitalSignature']),
            ext.extendedKeyUsage([OID.ocspSigning]),
            ext.ocspNoCheck(),
            ext.subjectKeyIdentifier(keyIdentifier(key('P-384').spki)),
          ],
        },
      ];
      for (const [n, leaf] of leaves.entries()) {
        const subject = encodeName(subjectAttrs(leaf.name));
        const serial = Uint8Array.of(0x80 + n, 0xff, 0x00);
        const tbs = template(serial, NOT_BEFORE, NOT_AFTER, subject, leaf.spki, leaf.exts);
        // The template path is byte-identical to the general encoder.
        const general = encodeTbsCertificate({
          serial,
          signatureAlgorithm: root.alg,
          issuer: rootName,
          notBefore: NOT_BEFORE,
          notAfter: NOT_AFTER,
          subject,
          subjectPublicKeyInfo: leaf.spki,
          extensions: [
            ...leaf.exts,
            ext.authorityKeyIdentifier(keyIdentifier(root.spki)),
            ext.authorityInfoAccess(AIA),
            ext.crlDistributionPoints(CRLDP),
          ],
        });
        assert.equal(hex(tbs), hex(general));
        const leafDer = encodeCertificate(tbs, root.alg, signWith(root, tbs));
        const leafPem = join(dir, `${leaf.name}.pem`);
        writeFileSync(leafPem, toPem(leafDer, 'CERTIFICATE'));
        const args = ['verify', '-x509_strict', '-CAfile', join(dir, 'root.pem')];
        if (leaf.purpose !== 'any') args.push('-purpose', leaf.purpose);
        const r = openssl([...args, leafPem]);
        assert.equal(r.status, 0, `${leaf.name}: ${r.stdout}${r.stderr}`);
        assert.match(r.stdout, /: OK/);
      }
    });
  }

  test('openssl rejects a tampered leaf (the check has teeth)', () => {
    const root = key('P-256');
    const rootName = encodeName([{ type: 'CN', value: 'Tamper Root' }]);
    const rootTbs = encodeTbsCertificate({
      serial: Uint8Array.of(7),
      signatureAlgorithm: root.alg,
      issuer: rootName,
      notBefore: NOT_BEFORE,
      notAfter: NOT_AFTER,
      subject: rootName,
      subjectPublicKeyInfo: root.spki,
      extensions: [
        ext.basicConstraints({ ca: true }),
        ext.keyUsage(['keyCertSign', 'cRLSign']),
        ext.subjectKeyIdentifier(keyIdentifier(root.spki)),
      ],
    });
    const leafSpki = key('Ed25519').spki;
    const leafTbs = encodeTbsCertificate({
      serial: Uint8Array.of(8),
      signatureAlgorithm: root.alg,
      issuer: rootName,
      notBefore: NOT_BEFORE,
      notAfter: NOT_AFTER,
      subject: encodeName([{ type: 'CN', value: 'leaf-a' }]),
      subjectPublicKeyInfo: leafSpki,
      extensions: [
        ext.keyUsage(['digitalSignature']),
        ext.subjectKeyIdentifier(keyIdentifier(leafSpki)),
        ext.authorityKeyIdentifier(keyIdentifier(root.spki)),
      ],
    });
    const good = encodeCertificate(leafTbs, root.alg, signWith(root, leafTbs));
    const bad = Uint8Array.from(good);
    const at = Buffer.from(bad).indexOf('leaf-a');
    assert.ok(at > 0);
    bad[at + 5] = 0x62; // leaf-a -> leaf-b
    const dir = mkdtempSync(join(tmp, 'tamper-'));
    writeFileSync(join(dir, 'root.pem'), toPem(encodeCertificate(rootTbs, root.alg, signWith(root, rootTbs)), 'CERTIFICATE'));
    writeFileSync(join(dir, 'good.pem'), toPem(good, 'CERTIFICATE'));
    writeFileSync(join(dir, 'bad.pem'), toPem(bad, 'CERTIFICATE'));
    const ok = openssl(['verify', '-x509_strict', '-CAfile', join(dir, 'root.pem'), join(dir, 'good.pem')]);
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    const ko = openssl(['verify', '-x509_strict', '-CAfile', join(dir, 'root.pem'), join(dir, 'bad.pem')]);
    assert.notEqual(ko.status, 0);
    assert.match(ko.stdout + ko.stderr, /signature failure/);
  });
});

describe('validity and serial edge cases against the library', () => {
  async function libTbs(o: { serialHex: string; notBefore: Date; notAfter: Date; extensions?: X509.Extension[] }): Promise<string> {
    const k = key('P-256');
    const lib = await x509.X509CertificateGenerator.create({
      serialNumber: o.serialHex,
      subject: new x509.Name(encodeName([{ type: 'CN', value: 'edge' }])),
      issuer: new x509.Name(encodeName([{ type: 'CN', value: 'edge' }])),
      notBefore: o.notBefore,
      notAfter: o.notAfter,
      publicKey: k.spki,
      signingKey: k.webKeys.privateKey,
      extensions: o.extensions ?? [new x509.BasicConstraintsExtension(false, undefined, true)],
    });
    return hex(firstElement(lib.rawData));
  }
  /** The serialNumber TLV: the element after the [0] version. */
  function serialTlv(tbs: Uint8Array): Uint8Array {
    const version = der.readTlv(tbs, der.readTlv(tbs).start);
    return tbs.subarray(version.end, der.readTlv(tbs, version.end).end);
  }
  function ourTbs(serial: Uint8Array, notBefore: Date, notAfter: Date, extensions?: Uint8Array[]): Uint8Array {
    const k = key('P-256');
    return encodeTbsCertificate({
      serial,
      signatureAlgorithm: 'ecdsa-with-SHA256',
      issuer: encodeName([{ type: 'CN', value: 'edge' }]),
      notBefore,
      notAfter,
      subject: encodeName([{ type: 'CN', value: 'edge' }]),
      subjectPublicKeyInfo: k.spki,
      extensions: extensions ?? [ext.basicConstraints({ ca: false })],
    });
  }

  test('UTCTime/GeneralizedTime boundary 2049-12-31 / 2050-01-01 is byte-equal', async () => {
    const nb = new Date('2049-12-31T23:59:59Z');
    const na = new Date('2050-01-01T00:00:00Z');
    const ours = ourTbs(Uint8Array.of(1), nb, na);
    assert.equal(hex(ours), await libTbs({ serialHex: '01', notBefore: nb, notAfter: na }));
    const oursHex = hex(ours);
    assert.ok(oursHex.includes('170d' + Buffer.from('491231235959Z').toString('hex')));
    assert.ok(oursHex.includes('180f' + Buffer.from('20500101000000Z').toString('hex')));
  });

  test('milliseconds are dropped like the library does', async () => {
    const nb = new Date('2030-01-01T00:00:00.999Z');
    const na = new Date('2031-01-01T00:00:00.001Z');
    assert.equal(hex(ourTbs(Uint8Array.of(1), nb, na)), await libTbs({ serialHex: '01', notBefore: nb, notAfter: na }));
  });

  test('serial with the high bit set gets a 0x00 prefix; leading zeros are stripped', async () => {
    const ours = ourTbs(Uint8Array.of(0x80, 0x01), NOT_BEFORE, NOT_AFTER);
    assert.equal(hex(ours), await libTbs({ serialHex: '8001', notBefore: NOT_BEFORE, notAfter: NOT_AFTER }));
    assert.equal(hex(serialTlv(ours)), '0203008001');
    const zeros = ourTbs(Uint8Array.of(0, 0, 0x12, 0x34), NOT_BEFORE, NOT_AFTER);
    assert.equal(hex(zeros), await libTbs({ serialHex: '00001234', notBefore: NOT_BEFORE, notAfter: NOT_AFTER }));
    assert.equal(hex(serialTlv(zeros)), '02021234');
    const twenty = new Uint8Array(20).fill(0x7f);
    assert.equal(
      hex(ourTbs(twenty, NOT_BEFORE, NOT_AFTER)),
      await libTbs({ serialHex: hex(twenty), notBefore: NOT_BEFORE, notAfter: NOT_AFTER }),
    );
  });

  test('serials RFC 5280 forbids are rejected', () => {
    assert.throws(() => ourTbs(Uint8Array.of(0), NOT_BEFORE, NOT_AFTER), RangeError);
    assert.throws(() => ourTbs(Uint8Array.of(), NOT_BEFORE, NOT_AFTER), RangeError);
    assert.throws(() => ourTbs(new Uint8Array(20).fill(0x80), NOT_BEFORE, NOT_AFTER), RangeError); // 21 octets encoded
    assert.throws(() => ourTbs(new Uint8Array(21).fill(0x01), NOT_BEFORE, NOT_AFTER), RangeError);
  });

  test('notAfter before notBefore is rejected', () => {
    assert.throws(() => ourTbs(Uint8Array.of(1), NOT_AFTER, NOT_BEFORE), RangeError);
  });

  test('no extensions: [3] omitted (Extensions is SIZE (1..MAX))', async () => {
    const ours = ourTbs(Uint8Array.of(1), NOT_BEFORE, NOT_AFTER, []);
    const tags: number[] = [];
    const outer = der.readTlv(ours);
    for (let pos = outer.start; pos < outer.end; pos = der.readTlv(ours, pos).end) tags.push(der.readTlv(ours, pos).tag);
    assert.deepEqual(tags, [0xa0, 0x02, 0x30, 0x30, 0x30, 0x30, 0x30]); // version..subjectPublicKeyInfo, no [3]
    // @peculiar/x509 2.2.0 appends an empty, invalid `a3 02 30 00` here. Compare modulo that.
    const libBytes = Buffer.from(await libTbs({ serialHex: '01', notBefore: NOT_BEFORE, notAfter: NOT_AFTER, extensions: [] }), 'hex');
    const emptyExts = libBytes.subarray(libBytes.length - 4).equals(Buffer.from('a3023000', 'hex'));
    const libBody = libBytes.subarray(der.readTlv(libBytes).start, libBytes.length - (emptyExts ? 4 : 0));
    assert.equal(hex(ours.subarray(der.readTlv(ours).start)), hex(libBody));
  });
});

describe('extensions', () => {
  test('basicConstraints and keyUsage encodings', () => {
    assert.equal(hex(ext.basicConstraints({ ca: false })), '300c0603551d130101ff04023000');
    assert.equal(hex(ext.basicConstraints({ ca: true })), '300f0603551d130101ff040530030101ff');
    assert.equal(hex(ext.basicConstraints({ ca: true, pathLen: 0 })), '30120603551d130101ff040830060101ff020100');
    assert.throws(() => ext.basicConstraints({ ca: false, pathLen: 0 }), TypeError);
    // digitalSignature: one bit, 7 unused. keyCertSign|cRLSign: bits 5,6 -> 0x06, 1 unused.
    assert.equal(hex(ext.keyUsage(['digitalSignature'])), '300e0603551d0f0101ff0404030207' + '80');
    assert.equal(hex(ext.keyUsage(['keyCertSign', 'cRLSign'])), '300e0603551d0f0101ff0404030201' + '06');
    assert.equal(hex(ext.keyUsage(['digitalSignature', 'keyEncipherment'])), '300e0603551d0f0101ff0404030205' + 'a0');
    assert.throws(() => ext.keyUsage([]), TypeError);
  });

  test('each extension matches the library encoding byte for byte', async () => {
    const spki = key('P-256').spki;
    const cases: [string, Uint8Array, X509.Extension][] = [
      ['BC leaf', ext.basicConstraints({ ca: false }), new x509.BasicConstraintsExtension(false, undefined, true)],
      ['BC CA pathLen 3', ext.basicConstraints({ ca: true, pathLen: 3 }), new x509.BasicConstraintsExtension(true, 3, true)],
      ...(
        [
          'digitalSignature',
          'nonRepudiation',
          'keyEncipherment',
          'dataEncipherment',
          'keyAgreement',
          'keyCertSign',
          'cRLSign',
        ] as KeyUsageFlag[]
      ).map((f): [string, Uint8Array, X509.Extension] => [`KU ${f}`, ext.keyUsage([f]), new x509.KeyUsagesExtension(KU_FLAG[f], true)]),
      ['KU all', ext.keyUsage(Object.keys(KU_FLAG) as KeyUsageFlag[]), new x509.KeyUsagesExtension(127 as X509.KeyUsageFlags, true)],
      [
        'EKU',
        ext.extendedKeyUsage([OID.serverAuth, OID.clientAuth, OID.ocspSigning]),
        new x509.ExtendedKeyUsageExtension([OID.serverAuth, OID.clientAuth, OID.ocspSigning], false),
      ],
      ['SKI', ext.subjectKeyIdentifier(keyIdentifier(spki)), await x509.SubjectKeyIdentifierExtension.create(spki)],
      ['AKI', ext.authorityKeyIdentifier(keyIdentifier(spki)), await x509.AuthorityKeyIdentifierExtension.create(spki)],
      [
        'SAN critical',
        ext.subjectAltName([{ type: 'dns', value: 'a.example' }], true),
        new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: 'a.example' }], true),
      ],
      [
        'AIA 2+2',
        ext.authorityInfoAccess({ ocsp: ['http://o1', 'http://o2'], caIssuers: ['http://c1', 'http://c2'] }),
        new x509.AuthorityInfoAccessExtension({ ocsp: ['http://o1', 'http://o2'], caIssuers: ['http://c1', 'http://c2'] }),
      ],
      [
        'AIA ocsp only',
        ext.authorityInfoAccess({ ocsp: ['http://o1'], caIssuers: [] }),
        new x509.AuthorityInfoAccessExtension({ ocsp: ['http://o1'] }),
      ],
      [
        'CRLDP',
        ext.crlDistributionPoints(['http://crl.example/a.crl']),
        new x509.CRLDistributionPointsExtension(['http://crl.example/a.crl']),
      ],
      ['ocsp-nocheck', ext.ocspNoCheck(), new x509.Extension(OID.ocspNoCheck, false, der.NULL)],
    ];
    for (const [name, ours, lib] of cases) assert.equal(hex(ours), hex(lib.rawData), name);
  });

  test('CRLDP with several URLs: one DistributionPoint listing them all', () => {
    const urls = ['http://crl.example/a.crl', 'ldap://crl.example/cn=a'];
    const e = new x509.CRLDistributionPointsExtension(ext.crlDistributionPoints(urls));
    assert.equal(e.distributionPoints.length, 1);
    assert.deepEqual(
      Array.from(e.distributionPoints[0]?.distributionPoint?.fullName ?? [], (g) => g.uniformResourceIdentifier),
      urls,
    );
    // (The library's url-list constructor makes one DistributionPoint per URL instead,
    // i.e. different CRLs; RFC 5280 4.2.1.13 reads several names in one
    // DistributionPointName as several ways to fetch the same CRL.)
  });

  test('IP addresses: IPv4, IPv6 full and :: forms match the library', () => {
    const ips = [
      '10.1.2.3',
      '0.0.0.0',
      '255.255.255.255',
      '::1',
      '::',
      '1::',
      '2001:db8::1',
      '2001:0db8:0000:0000:0000:0000:0000:0001',
      'fe80::1:2:3',
      '2001:db8:0:1:1:1:1:1',
      'FFFF::ABCD',
    ];
    for (const ip of ips) {
      assert.equal(
        hex(ext.subjectAltName([{ type: 'ip', value: ip }], false)),
        hex(new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: ip }]).rawData),
        ip,
      );
    }
    assert.equal(hex(ipAddressBytes('::ffff:192.0.2.1')), '00000000000000000000ffffc0000201');
    assert.equal(hex(ipAddressBytes('1:2:3:4:5:6:7::')), '00010002000300040005000600070000');
    assert.equal(ipAddressBytes('2001:db8::1').length, 16);
    assert.equal(ipAddressBytes('192.0.2.1').length, 4);
    for (const bad of [
      '1.2.3',
      '1.2.3.256',
      '01.2.3.4',
      '1.2.3.4.5',
      '1:2:3:4:5:6:7:8:9',
      '1:2:3:4:5:6:7',
      '1::2::3',
      ':::',
      'g::1',
      '12345::1',
      'fe80::1%eth0',
      '1:2:3:4:5:6:7::8',
      '1.2.3.4::1',
      '',
      'localhost',
    ]) {
      assert.throws(() => ipAddressBytes(bad), TypeError, bad);
    }
  });

  test('SAN rejects non-IA5 names and empty lists', () => {
    assert.throws(() => ext.subjectAltName([{ type: 'dns', value: 'bücher.example' }], false), TypeError);
    assert.throws(() => ext.subjectAltName([{ type: 'uri', value: '' }], false), TypeError);
    assert.throws(() => ext.subjectAltName([], false), TypeError);
    assert.throws(() => ext.extendedKeyUsage([]), TypeError);
    assert.throws(() => ext.authorityInfoAccess({ ocsp: [], caIssuers: [] }), TypeError);
    assert.throws(() => ext.crlDistributionPoints([]), TypeError);
  });
});

describe('keyIdentifier', () => {
  for (const kind of KINDS) {
    test(`${kind}: RFC 5280 method 1, same as the library`, async () => {
      const k = key(kind);
      const ours = hex(keyIdentifier(k.spki));
      assert.equal(ours.length, 40);
      // Independent computation of the subjectPublicKey BIT STRING contents.
      let rawKey: Buffer;
      if (kind === 'RSA-2048') rawKey = k.publicKey.export({ type: 'pkcs1', format: 'der' });
      else {
        const jwk = k.publicKey.export({ format: 'jwk' });
        const x = Buffer.from(jwk.x ?? '', 'base64url');
        rawKey = kind === 'Ed25519' ? x : Buffer.concat([Buffer.of(4), x, Buffer.from(jwk.y ?? '', 'base64url')]);
      }
      assert.equal(ours, createHash('sha1').update(rawKey).digest('hex'));
      const lib = await x509.SubjectKeyIdentifierExtension.create(k.spki);
      assert.equal(ours, lib.keyId);
    });
  }

  test('rejects what is not an SPKI', () => {
    assert.throws(() => keyIdentifier(der.sequence(der.NULL)));
    assert.throws(() => keyIdentifier(Uint8Array.of(0x30, 0x05)));
  });
});

describe('PKCS#10', () => {
  const csrExts = (): Uint8Array[] => [
    ext.subjectAltName(
      [
        { type: 'uri', value: 'mqtt://devices/dev-1' },
        { type: 'dns', value: 'dev-1.devices.example' },
      ],
      false,
    ),
    ext.keyUsage(['digitalSignature']),
    ext.extendedKeyUsage([OID.clientAuth]),
  ];
  const libCsrExts = (): X509.Extension[] => [
    new x509.SubjectAlternativeNameExtension([
      { type: 'url', value: 'mqtt://devices/dev-1' },
      { type: 'dns', value: 'dev-1.devices.example' },
    ]),
    new x509.KeyUsagesExtension(1, true),
    new x509.ExtendedKeyUsageExtension([OID.clientAuth]),
  ];

  for (const kind of KINDS) {
    test(`${kind}: CertificationRequestInfo equals the library's; ours verifies in the library and openssl`, async () => {
      const k = key(kind);
      const subject = encodeName([{ type: 'C', value: 'DE' }, ...subjectAttrs('dev-1')]);
      for (const withExts of [true, false]) {
        const lib = await x509.Pkcs10CertificateRequestGenerator.create({
          name: new x509.Name(subject),
          keys: k.webKeys as never,
          signingAlgorithm: k.webSignAlg as never,
          extensions: withExts ? libCsrExts() : [],
        });
        assert.equal(await lib.verify(), true, 'library self-check');
        const spki = u8(lib.publicKey.rawData);
        assert.equal(hex(spki), hex(k.spki));
        const info = encodeCertificationRequestInfo(subject, spki, withExts ? csrExts() : undefined);
        assert.equal(hex(info), hex(firstElement(lib.rawData)), `info, extensions=${withExts}`);

        const csrDer = encodeCertificationRequest(info, k.alg, signWith(k, info));
        const csr = new x509.Pkcs10CertificateRequest(csrDer);
        assert.equal(await csr.verify(), true);
        assert.equal(csr.subject, 'C=DE, O=Acme Fleet, OU=Devices, CN=dev-1');
        if (withExts) {
          const san = csr.getExtension(OID.subjectAltName) as X509.SubjectAlternativeNameExtension | null;
          assert.deepEqual(Array.from(san?.names.toJSON() ?? []), [
            { type: 'url', value: 'mqtt://devices/dev-1' },
            { type: 'dns', value: 'dev-1.devices.example' },
          ]);
          assert.equal((csr.getExtension(OID.keyUsage) as X509.KeyUsagesExtension | null)?.usages, 1);
        } else {
          assert.equal(csr.extensions.length, 0);
        }

        const r = openssl(['req', '-inform', 'DER', '-verify', '-noout'], csrDer);
        // OpenSSL 3.0 `req -verify` exits 0 even on failure: the message is what counts.
        assert.equal(r.status, 0, r.stdout + r.stderr);
        assert.match(r.stdout + r.stderr, /self-signature verify OK/);
        assert.doesNotMatch(r.stdout + r.stderr, /fail/i);
        const txt = openssl(['req', '-inform', 'DER', '-noout', '-text'], csrDer);
        assert.equal(txt.status, 0, txt.stderr);
        if (withExts) assert.ok(txt.stdout.includes('URI:mqtt://devices/dev-1'));
      }
    });
  }

  test('empty extension list means no extensionRequest attribute; attributes stays present', () => {
    const k = key('P-256');
    const subject = encodeName([{ type: 'CN', value: 'x' }]);
    const a = encodeCertificationRequestInfo(subject, k.spki);
    assert.equal(hex(a), hex(encodeCertificationRequestInfo(subject, k.spki, [])));
    assert.ok(hex(a).endsWith('a000'));
  });

  test('a tampered CSR fails openssl verification', () => {
    const k = key('P-256');
    const info = encodeCertificationRequestInfo(encodeName([{ type: 'CN', value: 'abc' }]), k.spki);
    const sig = signWith(k, info);
    const other = encodeCertificationRequestInfo(encodeName([{ type: 'CN', value: 'abd' }]), k.spki);
    const r = openssl(['req', '-inform', 'DER', '-verify', '-noout'], encodeCertificationRequest(other, k.alg, sig));
    assert.doesNotMatch(r.stdout + r.stderr, /verify OK/);
    assert.match(r.stdout + r.stderr, /verify failure/);
  });
});

describe('algorithm identifiers and the signed wrapper', () => {
  test('ECDSA and Ed25519 without parameters, RSA with NULL', () => {
    assert.equal(hex(algorithmIdentifier('ecdsa-with-SHA256')), '300a06082a8648ce3d040302');
    assert.equal(hex(algorithmIdentifier('ecdsa-with-SHA384')), '300a06082a8648ce3d040303');
    assert.equal(hex(algorithmIdentifier('Ed25519')), '300506032b6570');
    assert.equal(hex(algorithmIdentifier('sha256WithRSAEncryption')), '300d06092a864886f70d01010b0500');
    assert.throws(() => algorithmIdentifier('md5' as never), TypeError);
  });

  test('encodeCertificate lays out tbs, algorithm and BIT STRING signature', () => {
    const tbs = der.sequence(der.NULL);
    const sig = new Uint8Array(256).fill(0xab);
    const c = encodeCertificate(tbs, 'sha256WithRSAEncryption', sig);
    const outer = der.readTlv(c);
    assert.equal(outer.end, c.length);
    const t = der.readTlv(c, outer.start);
    assert.equal(hex(c.subarray(outer.start, t.end)), hex(tbs));
    const a = der.readTlv(c, t.end);
    assert.equal(hex(c.subarray(t.end, a.end)), hex(algorithmIdentifier('sha256WithRSAEncryption')));
    const s = der.readTlv(c, a.end);
    assert.equal(s.tag, 0x03);
    assert.equal(c[s.start], 0);
    assert.equal(hex(c.subarray(s.start + 1, s.end)), hex(sig));
    assert.equal(s.end, c.length);
    assert.throws(() => encodeCertificate(Uint8Array.of(1, 0), 'Ed25519', sig), TypeError);
  });

  test('signature shape checks catch P1363 ECDSA and wrong-length Ed25519', () => {
    const tbs = der.sequence(der.NULL);
    const k = key('P-256');
    const p1363 = u8(nodeSign('sha256', tbs, { key: k.privateKey, dsaEncoding: 'ieee-p1363' }));
    if (p1363[0] !== 0x30) assert.throws(() => encodeCertificate(tbs, 'ecdsa-with-SHA256', p1363), TypeError);
    assert.throws(() => encodeCertificate(tbs, 'ecdsa-with-SHA256', new Uint8Array(64).fill(1)), TypeError);
    assert.doesNotThrow(() => encodeCertificate(tbs, 'ecdsa-with-SHA256', signWith(k, tbs)));
    assert.throws(() => encodeCertificate(tbs, 'Ed25519', new Uint8Array(63)), TypeError);
    assert.throws(() => encodeCertificationRequest(tbs, 'sha256WithRSAEncryption', new Uint8Array(0)), TypeError);
  });
});

describe('encodings live in pooled Buffers', () => {
  test('retagImplicit copies: the TLV it was given (perhaps cached) keeps its tag', () => {
    const original = der.sequence(der.integer(Uint8Array.of(5)));
    const before = Buffer.from(original).toString('hex');
    const retagged = der.retagImplicit(1, original);
    assert.equal(retagged[0], 0xa1);
    assert.equal(Buffer.from(original).toString('hex'), before);
  });
  test('detached copies an encoding out of the pool: kept long, it holds its own bytes, not a slab', () => {
    const pooled = der.integer(Uint8Array.of(5));
    assert.ok(pooled.buffer.byteLength > pooled.length, 'small encodings come from the pool');
    const kept = der.detached(pooled);
    assert.deepEqual([...kept], [...pooled]);
    assert.equal(kept.buffer.byteLength, kept.length);
  });
});
