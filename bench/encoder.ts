/**
 * Certificates per second: our DER encoder + node:crypto.sign against
 * @peculiar/x509's X509CertificateGenerator.create, same inputs, same run.
 *
 * Workload: a P-256 issuer signs a device leaf (KU digitalSignature, EKU clientAuth,
 * SAN URI, SKI, AKI, AIA, CRLDP) for a P-256 device key. Per certificate both sides
 * build what varies (random serial, subject name, SAN, SKI) and reuse what does not.
 *
 *   npx tsx bench/encoder.ts
 */
import { generateKeyPairSync, randomBytes, sign, webcrypto } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { result, type BenchResult } from './lib.js';
import 'reflect-metadata';
import type * as X509 from '@peculiar/x509';
import { compileTbsTemplate, encodeCertificate } from '../src/ca/x509/encode.js';
import { ext, keyIdentifier } from '../src/ca/x509/extensions.js';
import { encodeName } from '../src/ca/x509/names.js';
import { OID } from '../src/ca/x509/oids.js';

export interface EncoderBenchResult {
  name: string;
  opsPerSec: number;
  baselineOpsPerSec: number;
  baselineName: string;
}

const DURATION_MS = 2000;
const WARMUP_MS = 200;

async function loadLibrary(): Promise<typeof X509> {
  const x509 = await import('@peculiar/x509');
  x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
  return x509;
}

async function measure(fn: () => unknown, durationMs: number): Promise<number> {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < durationMs) {
    for (let i = 0; i < 16; i++) await fn();
    n += 16;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

function measureSync(fn: () => unknown, durationMs: number): number {
  let n = 0;
  const start = performance.now();
  let now = start;
  while (now - start < durationMs) {
    for (let i = 0; i < 64; i++) fn();
    n += 64;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

interface Setup {
  x509: typeof X509;
  issuer: { privateKey: ReturnType<typeof generateKeyPairSync>['privateKey']; spki: Uint8Array; webKey: webcrypto.CryptoKey };
  deviceSpki: Uint8Array;
  ours: () => Uint8Array;
  oursEncodeOnly: () => Uint8Array;
  library: () => Promise<X509.X509Certificate>;
}

const AIA = { ocsp: ['http://ocsp.example.com'], caIssuers: ['http://ca.example.com/ca.cer'] };
const CRLDP = ['http://crl.example.com/ca.crl'];

async function setup(): Promise<Setup> {
  const x509 = await loadLibrary();
  const issuerPair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const issuerSpki = new Uint8Array(issuerPair.publicKey.export({ type: 'spki', format: 'der' }));
  const webKey = await webcrypto.subtle.importKey(
    'pkcs8',
    issuerPair.privateKey.export({ type: 'pkcs8', format: 'der' }),
    { name: 'ECDSA', namedCurve: 'P-256' },
    false,
    ['sign'],
  );
  const deviceSpki = new Uint8Array(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' }));

  const issuerName = encodeName([
    { type: 'C', value: 'DE' },
    { type: 'O', value: 'Acme Fleet' },
    { type: 'CN', value: 'Acme Device CA' },
  ]);
  const notBefore = new Date(Math.floor(Date.now() / 1000) * 1000);
  const notAfter = new Date(notBefore.getTime() + 90 * 86_400_000);
  let counter = 0;

  // Ours: fixed parts precompiled once per issuing profile.
  const template = compileTbsTemplate({
    signatureAlgorithm: 'ecdsa-with-SHA256',
    issuer: issuerName,
    extensionsBefore: [ext.keyUsage(['digitalSignature']), ext.extendedKeyUsage([OID.clientAuth])],
    extensionsAfter: [
      ext.authorityKeyIdentifier(keyIdentifier(issuerSpki)),
      ext.authorityInfoAccess(AIA),
      ext.crlDistributionPoints(CRLDP),
    ],
  });
  const encodeOne = (): Uint8Array => {
    const id = `dev-${counter++}`;
    return template(
      randomBytes(16),
      notBefore,
      notAfter,
      encodeName([
        { type: 'O', value: 'Acme Fleet' },
        { type: 'CN', value: id },
      ]),
      deviceSpki,
      [ext.subjectAltName([{ type: 'uri', value: `mqtt://devices/${id}` }], false), ext.subjectKeyIdentifier(keyIdentifier(deviceSpki))],
    );
  };
  const ours = (): Uint8Array => {
    const tbs = encodeOne();
    return encodeCertificate(tbs, 'ecdsa-with-SHA256', sign('sha256', tbs, issuerPair.privateKey));
  };

  // Library: fixed extensions and the issuer name built once, the rest per certificate.
  const libIssuer = new x509.Name(issuerName);
  const libKu = new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true);
  const libEku = new x509.ExtendedKeyUsageExtension([OID.clientAuth], false);
  const libAki = await x509.AuthorityKeyIdentifierExtension.create(issuerSpki);
  const libAia = new x509.AuthorityInfoAccessExtension(AIA);
  const libCdp = new x509.CRLDistributionPointsExtension(CRLDP);
  const library = async (): Promise<X509.X509Certificate> => {
    const id = `dev-${counter++}`;
    return x509.X509CertificateGenerator.create({
      serialNumber: randomBytes(16).toString('hex'),
      subject: new x509.Name([{ O: [{ utf8String: 'Acme Fleet' }] }, { CN: [{ utf8String: id }] }]),
      issuer: libIssuer,
      notBefore,
      notAfter,
      publicKey: deviceSpki,
      signingKey: webKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as never,
      extensions: [
        libKu,
        libEku,
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `mqtt://devices/${id}` }], false),
        await x509.SubjectKeyIdentifierExtension.create(deviceSpki),
        libAki,
        libAia,
        libCdp,
      ],
    });
  };

  return {
    x509,
    issuer: { privateKey: issuerPair.privateKey, spki: issuerSpki, webKey },
    deviceSpki,
    ours,
    oursEncodeOnly: encodeOne,
    library,
  };
}

/** Sanity check outside the timed loops: both sides produce certificates that verify. */
async function selfCheck(s: Setup): Promise<void> {
  const mine = new s.x509.X509Certificate(s.ours());
  const theirs = await s.library();
  for (const c of [mine, theirs]) {
    if (!(await c.verify({ publicKey: s.issuer.spki, signatureOnly: true }))) throw new Error('benchmark certificate does not verify');
  }
  if (mine.extensions.length !== 7 || theirs.extensions.length !== 7) throw new Error('unexpected extension count');
}

export async function benchEncoder(): Promise<EncoderBenchResult> {
  const s = await setup();
  await selfCheck(s);
  measureSync(s.ours, WARMUP_MS);
  await measure(s.library, WARMUP_MS);
  const opsPerSec = measureSync(s.ours, DURATION_MS);
  const baselineOpsPerSec = await measure(s.library, DURATION_MS);
  return {
    name: 'DER encoder + node:crypto.sign (P-256 device leaf)',
    opsPerSec,
    baselineOpsPerSec,
    baselineName: '@peculiar/x509 X509CertificateGenerator.create',
  };
}

export const description =
  "Certificate generation alone (no database): the lean DER encoder plus node:crypto.sign against @peculiar/x509's " +
  "X509CertificateGenerator.create for the same P-256 device leaf (same issuer, names and extensions; the encoder's output is " +
  "byte-compared with the library's in test/unit/x509-encoder.test.ts).";

/** The harness entry (bench/run.ts). */
export async function run(): Promise<BenchResult[]> {
  const r = await benchEncoder();
  const baseline = { name: r.baselineName, value: r.baselineOpsPerSec };
  return [
    result(r.baselineName, 'certificates/s', r.baselineOpsPerSec, baseline),
    result(r.name, 'certificates/s', r.opsPerSec, baseline),
    result('DER encoder alone (TBS, no signature)', 'TBS/s', await benchEncodeOnly(), baseline),
  ];
}

/** Encode-only rate (no signature), for the direct run's extra line. */
async function benchEncodeOnly(): Promise<number> {
  const s = await setup();
  measureSync(s.oursEncodeOnly, WARMUP_MS);
  return measureSync(s.oursEncodeOnly, DURATION_MS);
}

const entry = process.argv[1];
if (entry !== undefined && import.meta.url === pathToFileURL(entry).href) {
  const r = await benchEncoder();
  const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
  console.log(`${r.name}: ${fmt(r.opsPerSec)} certs/s`);
  console.log(`${r.baselineName}: ${fmt(r.baselineOpsPerSec)} certs/s`);
  console.log(`ratio: ${(r.opsPerSec / r.baselineOpsPerSec).toFixed(1)}x`);
  console.log(`TBS encoding alone (no signature): ${fmt(await benchEncodeOnly())} TBS/s`);
}
