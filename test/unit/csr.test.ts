/**
 * The lean PKCS#10 reader (src/ca/x509/csr.ts) against its oracles: @peculiar/x509 parses the
 * same CSRs (made by openssl, by the library, by our encoder) and every field must agree; then
 * the refusals (weak and unknown algorithms, broken DER, tampering) and csrFromBody.
 */
import 'reflect-metadata';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  constants,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  webcrypto,
  type KeyObject,
} from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { CsrError, MAX_CSR_BODY_BYTES, csrFromBody, parseCsrDer, verifyCsr, type ParsedCsr } from '../../src/ca/x509/csr.js';
import { bitString, integer, NULL, oid, sequence, set, tlv } from '../../src/ca/x509/der.js';
import {
  algorithmIdentifier,
  encodeCertificationRequest,
  encodeCertificationRequestInfo,
  type SignatureAlgorithm,
} from '../../src/ca/x509/encode.js';
import { ext } from '../../src/ca/x509/extensions.js';
import { encodeName } from '../../src/ca/x509/names.js';
import { OID } from '../../src/ca/x509/oids.js';
import { toPem } from '../../src/ca/x509/pem.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const hex = (b: ArrayBuffer | Uint8Array) => Buffer.from(b instanceof Uint8Array ? b : new Uint8Array(b)).toString('hex');

let tmp = '';
let counter = 0;
const keys: Record<'P-256' | 'P-384' | 'Ed25519' | 'RSA-2048', string> = { 'P-256': '', 'P-384': '', Ed25519: '', 'RSA-2048': '' };
type KeyKind = keyof typeof keys;
const KEY_KINDS = Object.keys(keys) as KeyKind[];

function openssl(args: string[], input?: Uint8Array): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync('openssl', args, { input });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

function must(args: string[]): Buffer {
  const r = openssl(args);
  assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function genKey(kind: KeyKind): string {
  const file = join(tmp, `${kind}.key`);
  const alg: Record<KeyKind, string[]> = {
    'P-256': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
    'P-384': ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
    Ed25519: ['-algorithm', 'ED25519'],
    'RSA-2048': ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
  };
  must(['genpkey', ...alg[kind], '-out', file]);
  return file;
}

interface OpensslCsrOptions {
  cn?: string;
  exts?: string[];
  challenge?: string;
  args?: string[];
}

/** `openssl req -new` with a config file; returns the DER. */
function opensslCsr(keyFile: string, o: OpensslCsrOptions = {}): Buffer {
  const n = counter++;
  const cnf = join(tmp, `req-${n}.cnf`);
  const out = join(tmp, `req-${n}.der`);
  const lines = ['[req]', 'distinguished_name = dn', 'prompt = no', 'utf8 = yes', 'string_mask = utf8only'];
  if (o.exts) lines.push('req_extensions = ext');
  if (o.challenge !== undefined) lines.push('attributes = attrs');
  lines.push('[dn]', 'O = Acme Fleet', `CN = ${o.cn ?? 'dev-1'}`);
  if (o.exts) lines.push('[ext]', ...o.exts);
  if (o.challenge !== undefined) lines.push('[attrs]', `challengePassword = ${o.challenge}`);
  writeFileSync(cnf, lines.join('\n') + '\n');
  must(['req', '-new', '-key', keyFile, '-config', cnf, '-outform', 'DER', '-out', out, ...(o.args ?? [])]);
  return readFileSync(out);
}

const ALL_SANS =
  'subjectAltName = DNS:dev-1.devices.example, IP:192.0.2.7, IP:2001:db8::42, URI:mqtt://devices/dev-1, email:dev-1@example.com, DNS:*.wild.example';

/** What the library makes of a CSR, in ParsedCsr's terms. */
async function libraryView(der: Buffer) {
  const lib = new x509.Pkcs10CertificateRequest(der);
  const sanExt = lib.getExtension(OID.subjectAltName);
  const sans: ParsedCsr['requestedSans'] = [];
  for (const n of sanExt ? new x509.SubjectAlternativeNameExtension(sanExt.rawData).names.items : []) {
    if (n.type === 'dns' || n.type === 'ip' || n.type === 'url' || n.type === 'email')
      sans.push({ type: n.type === 'url' ? 'uri' : n.type, value: n.value });
  }
  const bc = lib.getExtension(OID.basicConstraints);
  const ku = lib.getExtension(OID.keyUsage);
  const caRights =
    (bc ? new x509.BasicConstraintsExtension(bc.rawData).ca : false) ||
    (ku ? (new x509.KeyUsagesExtension(ku.rawData).usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)) !== 0 : false);
  const cp = lib.getAttribute('1.2.840.113549.1.9.7');
  return {
    lib,
    verified: await lib.verify(),
    info: hex((lib as unknown as { tbs: ArrayBuffer }).tbs), // the bytes the library verifies (private in its typings)
    subjectDer: hex(lib.subjectName.toArrayBuffer()),
    commonName: lib.subjectName.getField('CN')[0],
    spki: hex(lib.publicKey.rawData),
    extensions: Array.from(lib.extensions, (e) => ({ oid: e.type, critical: e.critical })),
    sans,
    caRights,
    challengePassword: cp ? new x509.ChallengePasswordAttribute(cp.rawData).password : undefined,
  };
}

/** Every field equals the library's; both verify. */
async function agreesWithLibrary(der: Buffer, label: string): Promise<ParsedCsr> {
  const ours = parseCsrDer(der);
  const lib = await libraryView(der);
  assert.equal(await verifyCsr(ours), true, `${label}: verifyCsr`);
  assert.equal(lib.verified, true, `${label}: the library verifies`);
  assert.equal(hex(ours.der), hex(der), label);
  assert.equal(hex(ours.info), lib.info, `${label}: info`);
  assert.equal(hex(ours.subjectDer), lib.subjectDer, `${label}: subject`);
  assert.equal(ours.commonName, lib.commonName, `${label}: CN`);
  assert.equal(hex(ours.spki), lib.spki, `${label}: SPKI`);
  assert.deepEqual(ours.requestedExtensions, lib.extensions, `${label}: extensions`);
  assert.deepEqual(ours.requestedSans, lib.sans, `${label}: SANs`);
  assert.equal(ours.requestsCaRights, lib.caRights, `${label}: CA rights`);
  assert.equal(ours.challengePassword, lib.challengePassword, `${label}: challenge password`);
  return ours;
}

/** Either a CsrError or a CSR that does not verify; never another exception, never true. */
async function refused(der: Uint8Array, label: string): Promise<'parse' | 'verify'> {
  let parsed: ParsedCsr;
  try {
    parsed = parseCsrDer(der);
  } catch (e) {
    assert.ok(e instanceof CsrError, `${label}: threw ${String(e)}`);
    return 'parse';
  }
  let ok: boolean;
  try {
    ok = await verifyCsr(parsed);
  } catch (e) {
    assert.fail(`${label}: verifyCsr threw ${String(e)}`);
  }
  assert.equal(ok, false, `${label}: a changed CSR verified`);
  return 'verify';
}

function throwsCsr(f: () => unknown, re: RegExp, label = ''): void {
  assert.throws(f, (e: unknown) => e instanceof CsrError && re.test(e.message), `${label} expected CsrError ${re}`);
}

/** mulberry32: a seeded PRNG so a failing mutation can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Re-wraps info + AlgorithmIdentifier + signature without the encoder's shape checks. */
const rawCsr = (info: Uint8Array, algId: Uint8Array, sig: Uint8Array) => Buffer.from(sequence(info, algId, bitString(sig)));

const corpus: { label: string; der: Buffer }[] = [];

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'csr-test-'));
  for (const k of KEY_KINDS) keys[k] = genKey(k);
});
after(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('openssl-made CSRs: every field equals the library, and verifyCsr is true', () => {
  for (const kind of KEY_KINDS) {
    it(`${kind}, without and with extensions`, async () => {
      const plain = opensslCsr(keys[kind]);
      const p = await agreesWithLibrary(plain, `${kind} plain`);
      assert.equal(p.commonName, 'dev-1');
      assert.deepEqual(p.requestedExtensions, []);
      assert.equal(p.requestsCaRights, false);
      assert.equal(p.challengePassword, undefined);
      assert.equal(
        p.signatureAlgorithm,
        { 'P-256': 'ecdsa-with-SHA256', 'P-384': 'ecdsa-with-SHA256', Ed25519: 'Ed25519', 'RSA-2048': 'sha256WithRSAEncryption' }[kind],
      );

      const full = opensslCsr(keys[kind], {
        exts: [
          ALL_SANS,
          'basicConstraints = critical, CA:TRUE',
          'keyUsage = critical, keyCertSign, digitalSignature',
          'extendedKeyUsage = clientAuth',
        ],
        challenge: 'open sesame 42',
      });
      const f = await agreesWithLibrary(full, `${kind} full`);
      assert.deepEqual(f.requestedSans, [
        { type: 'dns', value: 'dev-1.devices.example' },
        { type: 'ip', value: '192.0.2.7' },
        { type: 'ip', value: '2001:db8::42' },
        { type: 'uri', value: 'mqtt://devices/dev-1' },
        { type: 'email', value: 'dev-1@example.com' },
        { type: 'dns', value: '*.wild.example' },
      ]);
      assert.deepEqual(f.requestedExtensions, [
        { oid: OID.subjectAltName, critical: false },
        { oid: OID.basicConstraints, critical: true },
        { oid: OID.keyUsage, critical: true },
        { oid: OID.extKeyUsage, critical: false },
      ]);
      assert.equal(f.requestsCaRights, true);
      assert.equal(f.challengePassword, 'open sesame 42');
      corpus.push({ label: `openssl ${kind} plain`, der: plain }, { label: `openssl ${kind} full`, der: full });
    });
  }

  it('CA rights: cA=TRUE alone, keyCertSign alone, cRLSign alone; not cA=FALSE or digitalSignature', async () => {
    const k = keys['P-256'];
    const cases: [string[], boolean][] = [
      [['basicConstraints = critical, CA:TRUE, pathlen:0'], true],
      [['keyUsage = keyCertSign'], true],
      [['keyUsage = cRLSign'], true],
      [['basicConstraints = CA:FALSE', 'keyUsage = digitalSignature, keyEncipherment'], false],
      [['subjectAltName = IP:::1, IP:fe80::1:0:0:1, IP:2001:db8:0:0:1:0:0:1, IP:1:2:3:4:5:6:7:8'], false],
    ];
    for (const [exts, ca] of cases) {
      const der = opensslCsr(k, { exts });
      const p = await agreesWithLibrary(der, exts.join('; '));
      assert.equal(p.requestsCaRights, ca, exts.join('; '));
      corpus.push({ label: exts.join('; '), der });
    }
  });

  it('a UTF-8 CN and a UTF-8 challenge password', async () => {
    const der = opensslCsr(keys['P-256'], { cn: 'Gerät Nr. 7 – ü', challenge: 'pässwort' });
    const p = await agreesWithLibrary(der, 'utf8');
    assert.equal(p.commonName, 'Gerät Nr. 7 – ü');
    assert.equal(p.challengePassword, 'pässwort');
  });

  it('RSA with SHA-384 and SHA-512', async () => {
    for (const md of ['-sha384', '-sha512']) {
      const der = opensslCsr(keys['RSA-2048'], { args: [md] });
      const p = await agreesWithLibrary(der, md);
      assert.equal(p.signatureAlgorithm, md === '-sha384' ? 'sha384WithRSAEncryption' : 'sha512WithRSAEncryption');
    }
  });

  it('RSASSA-PSS (-sigopt rsa_padding_mode:pss), default and explicit salt, SHA-256 and SHA-384', async () => {
    const variants: [string[], string, number | undefined][] = [
      [['-sigopt', 'rsa_padding_mode:pss'], 'sha256', undefined],
      [['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:32'], 'sha256', 32],
      [['-sha384', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:48'], 'sha384', 48],
    ];
    for (const [args, hash, salt] of variants) {
      const der = opensslCsr(keys['RSA-2048'], { args, exts: [ALL_SANS] });
      // openssl and the library both verify it.
      const v = openssl(['req', '-inform', 'DER', '-verify', '-noout'], der);
      assert.match(v.stdout.toString() + v.stderr, /verify OK/);
      const p = await agreesWithLibrary(der, args.join(' '));
      assert.equal(p.signatureAlgorithm, 'rsassa-pss');
      assert.equal(p.pss?.hash, hash);
      if (salt !== undefined) assert.equal(p.pss?.saltLength, salt);
      corpus.push({ label: `openssl PSS ${args.join(' ')}`, der });
    }
  });
});

describe('library- and encoder-made CSRs', () => {
  const subject = encodeName([
    { type: 'C', value: 'DE' },
    { type: 'O', value: 'Acme Fleet' },
    { type: 'CN', value: 'dev-7' },
  ]);

  const webAlgs: { kind: string; gen: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams | webcrypto.Algorithm; sign: object }[] = [
    { kind: 'P-256', gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
    { kind: 'P-384', gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } },
    { kind: 'Ed25519', gen: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
    {
      kind: 'RSA-2048',
      gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      sign: { name: 'RSASSA-PKCS1-v1_5' },
    },
    {
      kind: 'RSA-PSS',
      gen: { name: 'RSA-PSS', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
      sign: { name: 'RSA-PSS', saltLength: 32 },
    },
  ];

  for (const a of webAlgs) {
    it(`Pkcs10CertificateRequestGenerator.create, ${a.kind}`, async () => {
      const keyPair = (await webcrypto.subtle.generateKey(a.gen as never, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      for (const withExts of [false, true]) {
        const csr = await x509.Pkcs10CertificateRequestGenerator.create({
          name: new x509.Name(subject),
          keys: keyPair,
          signingAlgorithm: a.sign as never,
          extensions: withExts
            ? [
                new x509.SubjectAlternativeNameExtension([
                  { type: 'dns', value: 'dev-7.example' },
                  { type: 'ip', value: '10.1.2.3' },
                  { type: 'ip', value: '2001:db8::7' },
                  { type: 'url', value: 'urn:mqtt-ca:device:dev-7' },
                  { type: 'email', value: 'ops@example.com' },
                ]),
                new x509.BasicConstraintsExtension(true, 1, true),
                new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature, true),
              ]
            : [],
          attributes: withExts ? [new x509.ChallengePasswordAttribute('lib-pw')] : [],
        });
        const der = Buffer.from(csr.rawData);
        const p = await agreesWithLibrary(der, `${a.kind} exts=${withExts}`);
        assert.equal(p.requestsCaRights, withExts);
        assert.equal(p.challengePassword, withExts ? 'lib-pw' : undefined);
        if (a.kind === 'RSA-PSS') assert.deepEqual(p.pss, { hash: 'sha256', saltLength: 32 });
        corpus.push({ label: `library ${a.kind} exts=${withExts}`, der });
      }
    });
  }

  const nodeKeys: [SignatureAlgorithm, () => KeyObject][] = [
    ['ecdsa-with-SHA256', () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey],
    ['ecdsa-with-SHA384', () => generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey],
    ['Ed25519', () => generateKeyPairSync('ed25519').privateKey],
    ['sha256WithRSAEncryption', () => generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey],
  ];
  for (const [alg, make] of nodeKeys) {
    it(`encodeCertificationRequest, ${alg}`, async () => {
      const key = make();
      const spki = spkiOf(key);
      for (const exts of [
        undefined,
        [
          ext.subjectAltName(
            [
              { type: 'uri', value: 'mqtt://devices/dev-7' },
              { type: 'ip', value: '::ffff:1.2.3.4' },
            ],
            false,
          ),
          ext.keyUsage(['digitalSignature']),
        ],
      ]) {
        const info = encodeCertificationRequestInfo(subject, spki, exts);
        const hash = alg === 'Ed25519' ? null : alg === 'ecdsa-with-SHA384' ? 'sha384' : 'sha256';
        const der = Buffer.from(encodeCertificationRequest(info, alg, sign(hash, info, { key, dsaEncoding: 'der' })));
        const p = await agreesWithLibrary(der, `encoder ${alg}`);
        assert.equal(p.signatureAlgorithm, alg);
        assert.equal(p.requestsCaRights, false);
        corpus.push({ label: `encoder ${alg} exts=${exts !== undefined}`, der });
      }
    });
  }

  it('CN string types: PrintableString, IA5String, BMPString, UniversalString decode like the library', async () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const spki = spkiOf(key);
    const bmp = (s: string) => tlv(0x1e, Buffer.from(s, 'utf16le').swap16());
    const universal = (s: string) => {
      const cps = [...s].map((c) => c.codePointAt(0)!);
      const b = Buffer.alloc(cps.length * 4);
      cps.forEach((cp, i) => b.writeUInt32BE(cp, i * 4));
      return tlv(0x1c, b);
    };
    const values: [Uint8Array, string][] = [
      [tlv(0x13, Buffer.from('Device 42')), 'Device 42'],
      [tlv(0x16, Buffer.from('dev@42')), 'dev@42'],
      [bmp('Gerät ✓'), 'Gerät ✓'],
      [universal('dev 😀'), 'dev 😀'],
    ];
    for (const [value, expected] of values) {
      // Two CNs: the first one counts.
      const name = sequence(
        set(sequence(oid(OID.commonName), value)),
        set(sequence(oid(OID.commonName), tlv(0x0c, Buffer.from('second')))),
      );
      const info = encodeCertificationRequestInfo(name, spki);
      const der = Buffer.from(encodeCertificationRequest(info, 'ecdsa-with-SHA256', sign('sha256', info, key)));
      const ours = parseCsrDer(der);
      assert.equal(ours.commonName, expected);
      assert.equal(await verifyCsr(ours), true);
      const lib = new x509.Pkcs10CertificateRequest(der);
      if (value[0] !== 0x1c) assert.equal(ours.commonName, lib.subjectName.getField('CN')[0]);
    }
    // A BMPString with half a surrogate pair, either half: refused (it would reach text and jsonb columns, which cannot hold it).
    for (const half of [Buffer.from([0xd8, 0x00, 0x00, 0x41]), Buffer.from([0x00, 0x41, 0xdc, 0x00])]) {
      const info = encodeCertificationRequestInfo(sequence(set(sequence(oid(OID.commonName), tlv(0x1e, half)))), spki);
      const der = Buffer.from(encodeCertificationRequest(info, 'ecdsa-with-SHA256', sign('sha256', info, key)));
      assert.throws(
        () => parseCsrDer(der),
        (e: Error) => e instanceof CsrError && /invalid character/.test(e.message),
      );
    }
    // No CN at all, and an empty subject.
    for (const name of [encodeName([{ type: 'O', value: 'x' }]), sequence()]) {
      const info = encodeCertificationRequestInfo(name, spki);
      const p = parseCsrDer(encodeCertificationRequest(info, 'ecdsa-with-SHA256', sign('sha256', info, key)));
      assert.equal(p.commonName, undefined);
      assert.equal(await verifyCsr(p), true);
    }
  });
});

const spkiOf = (key: KeyObject) => createPublicKey(key).export({ format: 'der', type: 'spki' });

describe('refusals', () => {
  it('SHA-1 (openssl req -sha1), MD5 and unknown signature algorithms', () => {
    throwsCsr(() => parseCsrDer(opensslCsr(keys['RSA-2048'], { args: ['-sha1'] })), /^sha1WithRSAEncryption is too weak$/);
    throwsCsr(() => parseCsrDer(opensslCsr(keys['P-256'], { args: ['-sha1'] })), /^ecdsa-with-SHA1 is too weak$/);
    const rsa = opensslCsr(keys['RSA-2048']);
    const sha256Rsa = Buffer.from(oid(OID.sha256WithRSAEncryption));
    const at = rsa.lastIndexOf(sha256Rsa);
    const patched = (lastByte: number) => {
      const b = Buffer.from(rsa);
      b[at + sha256Rsa.length - 1] = lastByte;
      return b;
    };
    throwsCsr(() => parseCsrDer(patched(0x04)), /^md5WithRSAEncryption is too weak$/);
    throwsCsr(() => parseCsrDer(patched(0x02)), /^md2WithRSAEncryption is too weak$/);
    throwsCsr(() => parseCsrDer(patched(0x0e)), /1\.2\.840\.113549\.1\.1\.14 is not supported/);
  });

  it('wrong version, indefinite and non-minimal lengths, trailing bytes, empty input', () => {
    const der = opensslCsr(keys['P-256']);
    assert.equal(der[1], 0x81, 'a P-256 CSR has a one-octet long-form length');
    const info = parseCsrDer(der).info;
    // version v2 (1) instead of v1 (0): patch the INTEGER inside the info.
    const v = Buffer.from(der);
    const vAt = der.indexOf(info) + 2 + (info[1]! & 0x80 ? info[1]! & 0x7f : 0);
    assert.equal(v.subarray(vAt, vAt + 3).toString('hex'), '020100');
    v[vAt + 2] = 1;
    throwsCsr(() => parseCsrDer(v), /version/);
    // Indefinite outer length.
    const indefinite = Buffer.concat([Buffer.from([0x30, 0x80]), der.subarray(3), Buffer.from([0, 0])]);
    throwsCsr(() => parseCsrDer(indefinite), /^indefinite lengths are not DER$/);
    // Non-minimal: 0x82 0x00 LL, and 0x81 for a length under 128.
    throwsCsr(() => parseCsrDer(Buffer.concat([Buffer.from([0x30, 0x82, 0x00]), der.subarray(2)])), /non-minimal/);
    throwsCsr(() => parseCsrDer(Buffer.from([0x30, 0x81, 0x03, 0x02, 0x01, 0x00])), /non-minimal/);
    throwsCsr(() => parseCsrDer(Buffer.concat([der, Buffer.from([0])])), /^trailing bytes after the CSR$/);
    throwsCsr(() => parseCsrDer(Buffer.concat([der, der])), /^trailing bytes after the CSR$/);
    throwsCsr(() => parseCsrDer(new Uint8Array(0)), /^the CSR is empty$/);
  });

  it('truncation at every length is "the CSR is truncated" (or empty), never anything else', () => {
    for (const { label, der } of corpus.slice(0, 6)) {
      for (let len = 0; len < der.length; len++) {
        throwsCsr(() => parseCsrDer(der.subarray(0, len)), len === 0 ? /empty/ : /^the CSR is truncated$/, `${label} cut at ${len}`);
      }
    }
  });

  it('a certificate is not a CSR', () => {
    const out = join(tmp, 'self.der');
    must(['req', '-x509', '-new', '-key', keys['P-256'], '-subj', '/CN=self', '-days', '1', '-outform', 'DER', '-out', out]);
    throwsCsr(() => parseCsrDer(readFileSync(out)), /^this is a certificate, not a CSR$/);
    throwsCsr(() => csrFromBody(toPem(readFileSync(out))), /expected a PEM CERTIFICATE REQUEST, got CERTIFICATE/);
  });

  it('a flipped bit in the signature or in the subject, and a signature by another key, do not verify', async () => {
    for (const { label, der } of corpus) {
      const p = parseCsrDer(der);
      const sigAt = der.length - p.signature.length;
      for (const i of [sigAt + 5, der.length - 5, der.length - 1]) {
        const b = Buffer.from(der);
        b[i] = b[i]! ^ 0x01;
        assert.equal(await refused(b, `${label} sig bit ${i}`), 'verify');
      }
      const subjectAt = der.indexOf(p.subjectDer);
      const b = Buffer.from(der);
      b[subjectAt + p.subjectDer.length - 1] = b[subjectAt + p.subjectDer.length - 1]! ^ 0x01;
      assert.equal(await refused(b, `${label} subject bit`), 'verify');
    }
    // Same info, signed by a different key of the same kind.
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const p = parseCsrDer(opensslCsr(keys['P-256']));
    assert.equal(
      await refused(rawCsr(p.info, algorithmIdentifier('ecdsa-with-SHA256'), sign('sha256', p.info, other)), 'other key'),
      'verify',
    );
  });

  it('key/algorithm mismatches and malformed signatures verify false', async () => {
    const ec = parseCsrDer(opensslCsr(keys['P-256']));
    const ed = parseCsrDer(opensslCsr(keys.Ed25519));
    const rsa = parseCsrDer(opensslCsr(keys['RSA-2048']));
    const cases: [Buffer, string][] = [
      // An EC key's info and signature under an RSA algorithm identifier, and the reverse.
      [rawCsr(ec.info, algorithmIdentifier('sha256WithRSAEncryption'), ec.signature), 'RSA alg on an EC key'],
      [rawCsr(rsa.info, algorithmIdentifier('ecdsa-with-SHA256'), rsa.signature), 'ECDSA alg on an RSA key'],
      [rawCsr(ed.info, algorithmIdentifier('ecdsa-with-SHA256'), ed.signature), 'ECDSA alg on an Ed25519 key'],
      [rawCsr(ec.info, algorithmIdentifier('Ed25519'), ec.signature), 'Ed25519 alg on an EC key'],
      [rawCsr(ec.info, algorithmIdentifier('ecdsa-with-SHA384'), ec.signature), 'wrong hash'],
      [
        rawCsr(
          rsa.info,
          sequence(
            oid('1.2.840.113549.1.1.10'),
            sequence(
              tlv(0xa0, sequence(oid('2.16.840.1.101.3.4.2.1'))),
              tlv(0xa1, sequence(oid('1.2.840.113549.1.1.8'), sequence(oid('2.16.840.1.101.3.4.2.1')))),
            ),
          ),
          rsa.signature,
        ),
        'PKCS#1 v1.5 signature as PSS',
      ],
    ];
    // ECDSA in IEEE P1363 (r||s) instead of DER.
    const ecKey = createPrivateKey(readFileSync(keys['P-256']));
    cases.push([
      rawCsr(ec.info, algorithmIdentifier('ecdsa-with-SHA256'), sign('sha256', ec.info, { key: ecKey, dsaEncoding: 'ieee-p1363' })),
      'P1363 signature',
    ]);
    // ECDSA DER with a redundant leading zero in r.
    const sig = ec.signature;
    const r = sig.subarray(4, 4 + sig[3]!);
    const padded = Buffer.concat([Buffer.from([0x30, sig[1]! + 1, 0x02, r.length + 1, 0x00]), r, sig.subarray(4 + r.length)]);
    cases.push([rawCsr(ec.info, algorithmIdentifier('ecdsa-with-SHA256'), padded), 'non-DER ECDSA signature']);
    cases.push([rawCsr(ec.info, algorithmIdentifier('ecdsa-with-SHA256'), Buffer.from([0x30, 0x00])), 'empty ECDSA-Sig-Value']);
    cases.push([rawCsr(ed.info, algorithmIdentifier('Ed25519'), ed.signature.subarray(1)), 'short Ed25519 signature']);
    for (const [der, label] of cases) assert.equal(await refused(der, label), 'verify', label);
    // An SPKI node cannot load (a bogus EC point) parses but does not verify.
    const bogus = Buffer.from(ec.info);
    const pointAt = bogus.indexOf(ec.spki) + ec.spki.length - 10;
    bogus[pointAt] = bogus[pointAt]! ^ 0xff;
    assert.equal(await refused(rawCsr(bogus, algorithmIdentifier('ecdsa-with-SHA256'), ec.signature), 'bad point'), 'verify');
  });

  it('RSASSA-PSS parameters: SHA-1 defaults, MGF1 mismatch and a wrong salt length', async () => {
    const rsa = parseCsrDer(opensslCsr(keys['RSA-2048']));
    const key = createPrivateKey(readFileSync(keys['RSA-2048']));
    const h = (name: string) => sequence(oid(name), NULL);
    const SHA256 = '2.16.840.1.101.3.4.2.1';
    const SHA1 = '1.3.14.3.2.26';
    const pssAlg = (hash: string | undefined, mgf: string | undefined, salt: number | undefined, trailer?: number) => {
      const parts: Uint8Array[] = [];
      if (hash) parts.push(tlv(0xa0, h(hash)));
      if (mgf) parts.push(tlv(0xa1, sequence(oid('1.2.840.113549.1.1.8'), h(mgf))));
      if (salt !== undefined) parts.push(tlv(0xa2, integer(Uint8Array.of(salt))));
      if (trailer !== undefined) parts.push(tlv(0xa3, integer(Uint8Array.of(trailer))));
      return sequence(oid('1.2.840.113549.1.1.10'), sequence(...parts));
    };
    const pssSig = (saltLength: number) => sign('sha256', rsa.info, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength });
    const good = parseCsrDer(rawCsr(rsa.info, pssAlg(SHA256, SHA256, 32), pssSig(32)));
    assert.equal(await verifyCsr(good), true);
    assert.equal(await refused(rawCsr(rsa.info, pssAlg(SHA256, SHA256, 20), pssSig(32)), 'salt mismatch'), 'verify');
    throwsCsr(() => parseCsrDer(rawCsr(rsa.info, pssAlg(undefined, undefined, undefined), pssSig(20))), /SHA-1 is too weak/);
    throwsCsr(() => parseCsrDer(rawCsr(rsa.info, pssAlg(SHA1, SHA1, 20), pssSig(20))), /SHA-1 is too weak/);
    throwsCsr(() => parseCsrDer(rawCsr(rsa.info, pssAlg(SHA256, undefined, 32), pssSig(32))), /MGF1-SHA-1 is too weak/);
    throwsCsr(() => parseCsrDer(rawCsr(rsa.info, pssAlg(SHA256, '2.16.840.1.101.3.4.2.2', 32), pssSig(32))), /MGF1 hash other than/);
    throwsCsr(() => parseCsrDer(rawCsr(rsa.info, pssAlg(SHA256, SHA256, 32, 2), pssSig(32))), /trailerField/);
    throwsCsr(() => parseCsrDer(rawCsr(rsa.info, sequence(oid('1.2.840.113549.1.1.10')), pssSig(20))), /explicit parameters/);
  });

  it('duplicate extensions and attributes, Ed25519 with parameters, a SAN IP of the wrong size', () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const spki = spkiOf(key);
    const subject = encodeName([{ type: 'CN', value: 'x' }]);
    const signed = (info: Uint8Array) => rawCsr(info, algorithmIdentifier('ecdsa-with-SHA256'), sign('sha256', info, key));
    const ku = ext.keyUsage(['digitalSignature']);
    throwsCsr(() => parseCsrDer(signed(encodeCertificationRequestInfo(subject, spki, [ku, ku]))), /extension 2\.5\.29\.15 twice/);
    const extReq = sequence(oid(OID.extensionRequest), set(sequence(ku)));
    const twoAttrs = sequence(integer(Uint8Array.of(0)), subject, spki, tlv(0xa0, extReq, extReq));
    throwsCsr(() => parseCsrDer(signed(twoAttrs)), /twice/);
    const noAttrs = sequence(integer(Uint8Array.of(0)), subject, spki);
    throwsCsr(() => parseCsrDer(signed(noAttrs)), /attributes/);
    const badIp = ext.subjectAltName([{ type: 'dns', value: 'a' }], false);
    const ipAt = Buffer.from(badIp).lastIndexOf(0x82);
    const patched = Buffer.from(badIp);
    patched[ipAt] = 0x87; // a one-octet iPAddress
    throwsCsr(() => parseCsrDer(signed(encodeCertificationRequestInfo(subject, spki, [patched]))), /iPAddress/);
    const ed = parseCsrDer(opensslCsr(keys.Ed25519));
    throwsCsr(() => parseCsrDer(rawCsr(ed.info, sequence(oid('1.3.101.112'), NULL), ed.signature)), /takes no parameters/);
    // A NUL in the CN (the null-prefix trick).
    const nul = sequence(set(sequence(oid(OID.commonName), tlv(0x0c, Buffer.from('good.example\0.evil')))));
    throwsCsr(() => parseCsrDer(signed(encodeCertificationRequestInfo(nul, spki))), /NUL/);
    // Invalid UTF-8 in the CN.
    const bad = sequence(set(sequence(oid(OID.commonName), tlv(0x0c, Buffer.from([0x61, 0xc3, 0x28])))));
    throwsCsr(() => parseCsrDer(signed(encodeCertificationRequestInfo(bad, spki))), /UTF-8/);
  });

  it('random bytes and ~2,000 random mutations: a CsrError or verify false, nothing else', async () => {
    assert.ok(corpus.length >= 20, `corpus has ${corpus.length} CSRs`);
    const rnd = prng(0x5eed);
    const int = (n: number) => Math.floor(rnd() * n);
    let parse = 0;
    let verify = 0;
    for (let i = 0; i < 300; i++) {
      const b = randomBytes(int(600));
      if (i % 2 === 0 && b.length > 4) {
        // Make it look like a SEQUENCE of the right length, to get past the first check.
        b[0] = 0x30;
        b[1] = 0x82;
        b.writeUInt16BE(b.length - 4, 2);
      }
      await refused(b, `random ${i}`);
    }
    const perCsr = Math.ceil(2000 / corpus.length);
    for (const { label, der } of corpus) {
      for (let i = 0; i < perCsr; i++) {
        let m = Buffer.from(der);
        const edits = 1 + int(3);
        for (let e = 0; e < edits; e++) {
          const at = int(m.length);
          switch (int(5)) {
            case 0:
              m[at] = m[at]! ^ (1 << int(8));
              break;
            case 1:
              m[at] = int(256);
              break;
            case 2:
              m = Buffer.concat([m.subarray(0, at), Buffer.from([int(256)]), m.subarray(at)]);
              break;
            case 3:
              m = Buffer.concat([m.subarray(0, at), m.subarray(at + 1)]);
              break;
            default:
              // A length-ish edit: nudge a byte by one.
              m[at] = (m[at]! + (rnd() < 0.5 ? 1 : 255)) & 0xff;
          }
        }
        if (m.equals(der)) continue;
        if ((await refused(m, `${label} mutation ${i}`)) === 'parse') parse++;
        else verify++;
      }
    }
    assert.ok(parse > 0 && verify > 0, `both kinds of refusal seen (parse ${parse}, verify ${verify})`);
  });
});

describe('csrFromBody', () => {
  let der: Buffer;
  before(() => {
    der = opensslCsr(keys['P-256']);
  });

  it('PEM (both labels, text around it, as string or bytes), base64 with line breaks, raw DER', async () => {
    const pem = toPem(der, 'CERTIFICATE REQUEST');
    assert.deepEqual(csrFromBody(pem), der);
    assert.deepEqual(csrFromBody(Buffer.from(pem)), der);
    assert.deepEqual(csrFromBody(toPem(der, 'NEW CERTIFICATE REQUEST')), der);
    assert.deepEqual(csrFromBody(`Subject: CN=dev-1\r\n${pem.replace(/\n/g, '\r\n')}trailing words\n`), der);
    const b64 = der.toString('base64');
    assert.deepEqual(csrFromBody(b64), der);
    assert.deepEqual(csrFromBody(b64.replace(/(.{76})/g, '$1\r\n') + '\r\n'), der);
    assert.deepEqual(csrFromBody(Buffer.from(b64.replace(/(.{64})/g, '$1\n'))), der);
    assert.deepEqual(csrFromBody(b64.replace(/=+$/, '')), der, 'unpadded base64');
    assert.deepEqual(csrFromBody(der), der);
    // Round trip through the parser.
    assert.equal(await verifyCsr(parseCsrDer(csrFromBody(pem))), true);
  });

  it('refuses garbage, other PEM blocks, several blocks, empty and oversized bodies', () => {
    const pem = toPem(der, 'CERTIFICATE REQUEST');
    throwsCsr(() => csrFromBody(''), /empty/);
    throwsCsr(() => csrFromBody(Buffer.alloc(0)), /empty/);
    throwsCsr(() => csrFromBody('   \r\n'), /empty/);
    throwsCsr(() => csrFromBody('not a csr'), /not a CSR/);
    throwsCsr(() => csrFromBody('not a csr!'), /base64/);
    throwsCsr(() => csrFromBody(Buffer.from([0x00, 0x01, 0x02])), /base64/);
    throwsCsr(() => csrFromBody('aGVsbG8gd29ybGQ='), /not a CSR/);
    throwsCsr(() => csrFromBody(toPem(der, 'PRIVATE KEY')), /got PRIVATE KEY/);
    throwsCsr(() => csrFromBody(pem + pem), /more than one/);
    throwsCsr(() => csrFromBody(pem.replace('-----END CERTIFICATE REQUEST-----', '')), /END/);
    throwsCsr(() => csrFromBody(pem.replace(/\nM/, '\n*M')), /base64/);
    throwsCsr(() => csrFromBody('-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n'), /empty/);
    throwsCsr(() => csrFromBody('A'.repeat(MAX_CSR_BODY_BYTES + 1)), /larger than/);
    throwsCsr(() => csrFromBody(Buffer.concat([Buffer.from([0x30]), Buffer.alloc(MAX_CSR_BODY_BYTES)])), /larger than/);
    throwsCsr(() => parseCsrDer(Buffer.alloc(MAX_CSR_BODY_BYTES + 1, 0x30)), /larger than/);
    // Whatever csrFromBody lets through, parseCsrDer refuses cleanly.
    throwsCsr(() => parseCsrDer(csrFromBody(toPem(Buffer.from('garbage'), 'CERTIFICATE REQUEST'))), /.+/);
  });
});
