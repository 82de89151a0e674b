/**
 * PKCS#7 certs-only, encrypted PKCS#8, PKCS#12 and the EST wire formats, checked with real
 * readers: OpenSSL 3 (no legacy provider), GnuTLS certtool (when installed) and node:crypto/tls.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { toolSkip } from '../helpers/tools.js';
import { fromPemAll, toPem } from '../../src/ca/x509/pem.js';
import { certsOnlyPkcs7 } from '../../src/ca/x509/pkcs7.js';
import { encryptedPkcs8Der, encryptedPkcs8Pem, pkcs12 } from '../../src/ca/x509/pkcs12.js';
import { csrAttrs, estCertsOnly, parseBasicAuth, serverKeygenMultipart } from '../../src/enroll/est/formats.js';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  out: Buffer;
}

function run(cmd: string, args: string[], input?: string | Uint8Array): Run {
  const r = spawnSync(cmd, args, { input, maxBuffer: 16 * 1024 * 1024 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), out: r.stdout };
}

function ok(cmd: string, args: string[], input?: string | Uint8Array): Run {
  const r = run(cmd, args, input);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed:\n${r.stderr}`);
  return r;
}

/** `sh -c script` with stdin; for the pipelines (openssl base64 -d | openssl pkcs7 ...). */
function sh(script: string, input: string | Uint8Array): Run {
  return ok('sh', ['-c', script], input);
}

let dir = '';
const f = (name: string): string => join(dir, name);
/** DER certificates root, intermediate, leaf. */
let root: Buffer;
let inter: Buffer;
let leaf: Buffer;
let leafKeyPkcs8: Buffer;

function subjects(printCertsOutput: string): string[] {
  return [...printCertsOutput.matchAll(/^subject=(.*)$/gm)].map((m) => m[1]!.trim()).sort();
}

const SUBJECTS = ['CN = Test Intermediate', 'CN = Test Root', 'CN = device-42'];

function spkiPemOfCert(certPath: string): string {
  return ok('openssl', ['x509', '-in', certPath, '-noout', '-pubkey']).stdout;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mqtt-ca-pkcs-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2'];
  ok('openssl', ['req', '-x509', ...ec, '-keyout', f('root.key'), '-out', f('root.pem'), '-subj', '/CN=Test Root']);
  ok('openssl', [
    'req',
    ...ec,
    '-keyout',
    f('inter.key'),
    '-out',
    f('inter.pem'),
    '-subj',
    '/CN=Test Intermediate',
    '-CA',
    f('root.pem'),
    '-CAkey',
    f('root.key'),
    '-addext',
    'basicConstraints=critical,CA:TRUE',
  ]);
  ok('openssl', [
    'req',
    ...ec,
    '-keyout',
    f('leaf.key'),
    '-out',
    f('leaf.pem'),
    '-subj',
    '/CN=device-42',
    '-CA',
    f('inter.pem'),
    '-CAkey',
    f('inter.key'),
    '-addext',
    'basicConstraints=critical,CA:FALSE',
  ]);
  const der = (name: string): Buffer => {
    const certs = fromPemAll(readFileSync(f(name), 'utf8'));
    assert.equal(certs.length, 1);
    return certs[0]!;
  };
  root = der('root.pem');
  inter = der('inter.pem');
  leaf = der('leaf.pem');
  leafKeyPkcs8 = createPrivateKey(readFileSync(f('leaf.key'))).export({ type: 'pkcs8', format: 'der' });
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('certsOnlyPkcs7', () => {
  it('lists the three subjects in openssl pkcs7 -print_certs', () => {
    const p7 = certsOnlyPkcs7([leaf, inter, root]);
    const r = ok('openssl', ['pkcs7', '-inform', 'DER', '-print_certs', '-noout'], p7);
    assert.deepEqual(subjects(r.stdout), SUBJECTS);
  });

  it('is byte-identical to openssl crl2pkcs7 -nocrl fed the DER-sorted certificates', () => {
    const sorted = [leaf, inter, root].sort(Buffer.compare);
    writeFileSync(f('sorted.pem'), sorted.map((c) => toPem(c)).join(''));
    const ref = ok('openssl', ['crl2pkcs7', '-nocrl', '-certfile', f('sorted.pem'), '-outform', 'DER']).out;
    assert.deepEqual(certsOnlyPkcs7([root, leaf, inter]), ref);
    assert.deepEqual(certsOnlyPkcs7([inter, root, leaf]), ref, 'input order does not matter');
  });

  it('has the degenerate SignedData shape (version 1, no digests, no content, no signers)', () => {
    const parsed = ok('openssl', ['asn1parse', '-inform', 'DER'], certsOnlyPkcs7([leaf])).stdout;
    const lines = parsed.split('\n').map((l) => l.replace(/^\s*\d+:d=\d+\s+hl=\d+\s+l=\s*\d+\s+/, '').trim());
    assert.equal(lines[1], 'prim: OBJECT            :pkcs7-signedData');
    assert.match(parsed, /d=3\s+hl=2 l=\s*1 prim: INTEGER\s+:01/);
    assert.match(parsed, /d=3\s+hl=2 l=\s*0 cons: SET/); // digestAlgorithms
    assert.match(parsed, /d=3\s+hl=2 l=\s*11 cons: SEQUENCE\s*\n.*d=4.*OBJECT\s+:pkcs7-data/);
    assert.match(parsed.trimEnd(), /d=3\s+hl=2 l=\s*0 cons: SET\s*$/); // signerInfos, last
  });

  it('reads in GnuTLS certtool --p7-info', { skip: toolSkip('certtool') }, () => {
    writeFileSync(f('chain.p7b'), certsOnlyPkcs7([leaf, inter, root]));
    const r = ok('certtool', ['--p7-info', '--inder', '--infile', f('chain.p7b')]);
    assert.match(r.stdout, /Number of certificates: 3/);
    assert.equal((r.stdout.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length, 3);
  });

  it('rejects an empty list and non-certificates', () => {
    assert.throws(() => certsOnlyPkcs7([]), RangeError);
    assert.throws(() => certsOnlyPkcs7([Buffer.from('nope')]), TypeError);
    assert.throws(() => certsOnlyPkcs7([Buffer.concat([leaf, Buffer.of(0)])]), TypeError);
  });
});

describe('estCertsOnly', () => {
  it('is CRLF-wrapped base64 that openssl base64 -d | openssl pkcs7 reads', () => {
    const body = estCertsOnly([leaf, inter, root]);
    assert.ok(body.endsWith('\r\n'));
    const lines = body.slice(0, -2).split('\r\n');
    assert.ok(
      lines.every((l) => /^[A-Za-z0-9+/=]{1,64}$/.test(l)),
      'lines of at most 64 base64 characters',
    );
    assert.ok(lines.slice(0, -1).every((l) => l.length === 64));
    assert.ok(!body.replace(/\r\n/g, '').includes('\n'), 'no bare LF');
    const r = sh('openssl base64 -d | openssl pkcs7 -inform DER -print_certs -noout', body);
    assert.deepEqual(subjects(r.stdout), SUBJECTS);
    assert.deepEqual(Buffer.from(body, 'base64'), certsOnlyPkcs7([leaf, inter, root]));
  });
});

describe('encryptedPkcs8Pem', () => {
  it('is PBES2 / PBKDF2-HMAC-SHA256 (16-byte salt, 100,000 iterations) / AES-256-CBC', () => {
    const pem = encryptedPkcs8Pem(leafKeyPkcs8, 'correct horse');
    assert.match(pem, /^-----BEGIN ENCRYPTED PRIVATE KEY-----\n[\s\S]+\n-----END ENCRYPTED PRIVATE KEY-----\n$/);
    const a = ok('openssl', ['asn1parse'], pem).stdout;
    assert.match(a, /OBJECT\s+:PBES2/);
    assert.match(a, /OBJECT\s+:PBKDF2/);
    assert.match(a, /OBJECT\s+:hmacWithSHA256/);
    assert.match(a, /OBJECT\s+:aes-256-cbc/);
    assert.match(a, /d=5\s+hl=2 l=\s*16 prim: OCTET STRING\s+\[HEX DUMP\]:[0-9A-F]{32}\n/, '16-byte salt');
    assert.match(a, /INTEGER\s+:0186A0/, '100000 iterations');
    assert.match(a, /d=4\s+hl=2 l=\s*16 prim: OCTET STRING/, '16-byte IV');
  });

  it('opens with openssl pkey -passin and with node:crypto, and nothing opens it with a wrong password', () => {
    const pem = encryptedPkcs8Pem(leafKeyPkcs8, 'correct horse');
    writeFileSync(f('enc.pem'), pem);
    const pub = ok('openssl', ['pkey', '-in', f('enc.pem'), '-passin', 'pass:correct horse', '-pubout']).stdout;
    assert.equal(pub, spkiPemOfCert(f('leaf.pem')));
    assert.notEqual(run('openssl', ['pkey', '-in', f('enc.pem'), '-passin', 'pass:wrong', '-noout']).status, 0);

    const key = createPrivateKey({ key: pem, format: 'pem', passphrase: 'correct horse' });
    assert.deepEqual(key.export({ type: 'pkcs8', format: 'der' }), leafKeyPkcs8);
    assert.throws(() => createPrivateKey({ key: pem, format: 'pem', passphrase: 'wrong' }));
  });

  it('handles other key types, non-ASCII passwords and a custom iteration count', () => {
    const { privateKey } = generateKeyPairSync('ed25519');
    const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
    const der = encryptedPkcs8Der(pkcs8, 'pässwörd ✓', { iterations: 2048 });
    const back = createPrivateKey({ key: der, format: 'der', type: 'pkcs8', passphrase: 'pässwörd ✓' });
    assert.deepEqual(back.export({ type: 'pkcs8', format: 'der' }), pkcs8);
    assert.match(ok('openssl', ['asn1parse', '-inform', 'DER'], der).stdout, /INTEGER\s+:0800/);
    writeFileSync(f('ed.der'), der);
    ok('openssl', ['pkey', '-inform', 'DER', '-in', f('ed.der'), '-passin', 'pass:pässwörd ✓', '-noout']);
  });

  it('rejects bad input', () => {
    assert.throws(() => encryptedPkcs8Pem(leafKeyPkcs8, ''), RangeError);
    assert.throws(() => encryptedPkcs8Pem(Buffer.from('30020500', 'hex'), 'pw'), TypeError);
    assert.throws(() => encryptedPkcs8Pem(leafKeyPkcs8, 'pw', { iterations: 1000 }), RangeError);
  });
});

describe('pkcs12', () => {
  const password = 'pässwörd: 1';
  let p12: Buffer;
  before(() => {
    p12 = pkcs12({ privateKeyPkcs8: leafKeyPkcs8, certificate: leaf, chain: [inter, root], password, friendlyName: 'device 42' });
    writeFileSync(f('bundle.p12'), p12);
  });

  it('openssl pkcs12 -info verifies the MAC and shows the key, the three certs and the algorithms', () => {
    const r = ok('openssl', ['pkcs12', '-in', f('bundle.p12'), '-info', '-nodes', '-passin', `pass:${password}`]);
    const info = r.stderr; // openssl writes the structure summary to stderr
    assert.match(info, /MAC: sha256, Iteration 100000/);
    assert.match(info, /MAC length: 32, salt length: 16/);
    assert.match(info, /Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 100000, PRF hmacWithSHA256/);
    assert.equal((info.match(/Certificate bag/g) ?? []).length, 3);
    assert.doesNotMatch(info, /Encrypted data/, 'certificates are in a plain Data bag');
    assert.deepEqual(subjects(r.stdout), SUBJECTS);
    assert.equal((r.stdout.match(/-----BEGIN PRIVATE KEY-----/g) ?? []).length, 1);
    assert.equal((r.stdout.match(/friendlyName: device 42/g) ?? []).length, 2, 'on the leaf bag and the key bag');
    const keyIds = [...r.stdout.matchAll(/localKeyID: ([0-9A-F ]+)/g)].map((m) => m[1]!.trim());
    assert.equal(keyIds.length, 2);
    assert.equal(keyIds[0], keyIds[1], 'the key and the leaf share localKeyId');
    // The leaf comes first, with the attributes.
    const firstCert = fromPemAll(r.stdout)[0]!;
    assert.deepEqual(firstCert, leaf);
  });

  it('holds the key of the certificate (openssl pkey -pubout compare)', () => {
    const keyPem = ok('openssl', ['pkcs12', '-in', f('bundle.p12'), '-nocerts', '-nodes', '-passin', `pass:${password}`]).stdout;
    writeFileSync(f('extracted.key'), keyPem);
    const pub = ok('openssl', ['pkey', '-in', f('extracted.key'), '-pubout']).stdout;
    assert.equal(pub, spkiPemOfCert(f('leaf.pem')));
  });

  it('fails with a wrong password', () => {
    const r = run('openssl', ['pkcs12', '-in', f('bundle.p12'), '-info', '-nodes', '-passin', 'pass:wrong']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /mac verify/i);
  });

  it('node:tls loads it as a pfx (and refuses a wrong passphrase)', () => {
    assert.doesNotThrow(() => createSecureContext({ pfx: p12, passphrase: password }));
    assert.throws(() => createSecureContext({ pfx: p12, passphrase: 'wrong' }), /mac verify/i);
  });

  it('reads in GnuTLS certtool --p12-info', { skip: toolSkip('certtool') }, () => {
    const r = ok('certtool', ['--p12-info', '--inder', '--infile', f('bundle.p12'), '--password', password]);
    assert.match(r.stdout, /MAC: SHA256/);
    assert.match(r.stdout, /Type: PKCS #8 Encrypted key/);
    assert.match(r.stdout, /Schema: PBES2-AES256-CBC/);
    assert.equal((r.stdout.match(/-----BEGIN CERTIFICATE-----/g) ?? []).length, 3);
    assert.notEqual(run('certtool', ['--p12-info', '--inder', '--infile', f('bundle.p12'), '--password', 'wrong']).status, 0);
  });

  it('takes custom iteration counts, no friendlyName and an empty chain', () => {
    const small = pkcs12({
      privateKeyPkcs8: leafKeyPkcs8,
      certificate: leaf,
      chain: [],
      password: 'pw',
      iterations: 2048,
      macIterations: 2048,
    });
    const r = ok('openssl', ['pkcs12', '-info', '-nodes', '-passin', 'pass:pw'], small);
    assert.match(r.stderr, /MAC: sha256, Iteration 2048\n/);
    assert.match(r.stderr, /Iteration 2048, PRF hmacWithSHA256/);
    assert.equal((r.stderr.match(/Certificate bag/g) ?? []).length, 1);
    assert.doesNotMatch(r.stdout, /friendlyName/);
  });

  it('rejects a key that does not match the certificate, bad iteration counts and an empty password', () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'der' });
    assert.throws(() => pkcs12({ privateKeyPkcs8: other, certificate: leaf, chain: [], password: 'pw' }), /does not match/);
    assert.throws(
      () => pkcs12({ privateKeyPkcs8: leafKeyPkcs8, certificate: leaf, chain: [], password: 'pw', macIterations: 1 }),
      RangeError,
    );
    assert.throws(() => pkcs12({ privateKeyPkcs8: leafKeyPkcs8, certificate: leaf, chain: [], password: '' }), RangeError);
    assert.throws(() => pkcs12({ privateKeyPkcs8: leafKeyPkcs8, certificate: leaf, chain: [Buffer.of(1, 2)], password: 'pw' }), TypeError);
  });
});

describe('csrAttrs', () => {
  it('encodes bare OIDs that openssl asn1parse shows', () => {
    const b64 = csrAttrs({ oids: ['1.2.840.10045.4.3.2', '1.2.840.113549.1.9.14'] });
    const a = ok('openssl', ['asn1parse', '-inform', 'DER'], Buffer.from(b64, 'base64')).stdout;
    assert.match(a, /d=0.*cons: SEQUENCE/);
    assert.match(a, /d=1.*OBJECT\s+:ecdsa-with-SHA256/);
    assert.match(a, /d=1.*OBJECT\s+:Extension Request/);
  });

  it('encodes attributes with value sets (RFC 7030 4.5.2 example shape)', () => {
    // { ecPublicKey, { secp384r1 } } and { extensionRequest, { macAddress OID } }
    const secp384r1 = Buffer.from('06052b81040022', 'hex');
    const b64 = csrAttrs({
      oids: ['1.2.840.10045.4.3.3'],
      attributes: [
        { type: '1.2.840.10045.2.1', values: [secp384r1] },
        { type: '1.2.840.113549.1.9.14', values: [Buffer.from('06072b060101010116', 'hex')] },
      ],
    });
    const a = ok('openssl', ['asn1parse', '-inform', 'DER'], Buffer.from(b64, 'base64')).stdout;
    assert.match(a, /d=1.*OBJECT\s+:ecdsa-with-SHA384/);
    assert.match(a, /d=1.*cons: SEQUENCE\s*\n.*d=2.*OBJECT\s+:id-ecPublicKey\s*\n.*d=2.*cons: SET\s*\n.*d=3.*OBJECT\s+:secp384r1/);
    assert.match(a, /d=2.*OBJECT\s+:Extension Request\s*\n.*d=2.*cons: SET\s*\n.*d=3.*OBJECT\s+:1\.3\.6\.1\.1\.1\.1\.22/);
  });

  it('encodes an empty set as an empty SEQUENCE and rejects bad input', () => {
    assert.equal(csrAttrs({}), 'MAA=\r\n');
    assert.throws(() => csrAttrs({ oids: ['not.an.oid'] }), TypeError);
    assert.throws(() => csrAttrs({ attributes: [{ type: '1.2.3', values: [] }] }), RangeError);
    assert.throws(() => csrAttrs({ attributes: [{ type: '1.2.3', values: [Buffer.of(4, 5, 0)] }] }), TypeError);
  });
});

describe('serverKeygenMultipart', () => {
  function parseMultipart(contentType: string, body: string): { headers: Record<string, string>; content: string }[] {
    const m = /^multipart\/mixed; boundary=([0-9A-Za-z'()+_,\-./:=?]{1,70})$/.exec(contentType);
    assert.ok(m, `content type: ${contentType}`);
    const delimiter = `--${m[1]!}`;
    assert.ok(body.startsWith(`${delimiter}\r\n`));
    assert.ok(body.endsWith(`\r\n${delimiter}--\r\n`));
    assert.ok(!body.replace(/\r\n/g, '').includes('\n'), 'CRLF line endings only');
    const inner = body.slice(0, body.length - `${delimiter}--\r\n`.length - 2);
    return inner
      .split(`${delimiter}\r\n`)
      .slice(1)
      .map((raw) => {
        const part = raw.endsWith('\r\n') ? raw.slice(0, -2) : raw;
        const sep = part.indexOf('\r\n\r\n');
        assert.ok(sep > 0);
        const headers: Record<string, string> = {};
        for (const line of part.slice(0, sep).split('\r\n')) {
          const colon = line.indexOf(':');
          headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
        }
        return { headers, content: part.slice(sep + 4) };
      });
  }

  it('has a pkcs8 part and a certs-only part that openssl reads', () => {
    const { contentType, body } = serverKeygenMultipart({ privateKeyPkcs8: leafKeyPkcs8, certificate: leaf });
    const parts = parseMultipart(contentType, body);
    assert.equal(parts.length, 2);
    const [keyPart, certPart] = parts as [(typeof parts)[0], (typeof parts)[0]];

    assert.equal(keyPart.headers['content-type'], 'application/pkcs8');
    assert.equal(keyPart.headers['content-transfer-encoding'], 'base64');
    const keyDer = Buffer.from(keyPart.content, 'base64');
    assert.deepEqual(keyDer, leafKeyPkcs8);
    writeFileSync(f('mp.key'), keyDer);
    assert.equal(ok('openssl', ['pkey', '-inform', 'DER', '-in', f('mp.key'), '-pubout']).stdout, spkiPemOfCert(f('leaf.pem')));

    assert.equal(certPart.headers['content-type'], 'application/pkcs7-mime; smime-type=certs-only');
    assert.equal(certPart.headers['content-transfer-encoding'], 'base64');
    const r = sh('openssl base64 -d | openssl pkcs7 -inform DER -print_certs -noout', `${certPart.content}\n`);
    assert.deepEqual(subjects(r.stdout), ['CN = device-42']);
  });

  it('uses a fresh random boundary each time', () => {
    const a = serverKeygenMultipart({ privateKeyPkcs8: leafKeyPkcs8, certificate: leaf });
    const b = serverKeygenMultipart({ privateKeyPkcs8: leafKeyPkcs8, certificate: leaf });
    assert.notEqual(a.contentType, b.contentType);
  });
});

describe('parseBasicAuth', () => {
  const basic = (s: string): string => `Basic ${Buffer.from(s, 'utf8').toString('base64')}`;

  it('splits at the first colon and decodes UTF-8', () => {
    assert.deepEqual(parseBasicAuth(basic('device-42:s3:cr:et')), { user: 'device-42', password: 's3:cr:et' });
    assert.deepEqual(parseBasicAuth(basic('jürgen:pässwörd')), { user: 'jürgen', password: 'pässwörd' });
    assert.deepEqual(parseBasicAuth(`bAsIc  ${Buffer.from('a:').toString('base64')} `), { user: 'a', password: '' });
    assert.deepEqual(parseBasicAuth(basic(':x')), { user: '', password: 'x' });
  });

  it('returns undefined for anything else', () => {
    for (const h of [
      undefined,
      '',
      'Basic',
      'Basic ',
      'Bearer abc',
      basic('no-colon'),
      'Basic !!!!',
      'Basic YWJj', // "abc", no colon
      'Basic YTpi=', // bad length
      `Basic ${Buffer.from([0x61, 0x3a, 0xff]).toString('base64')}`, // invalid UTF-8
      basic('a:b\nc'),
      `${basic('a:b')} extra`,
    ]) {
      assert.equal(parseBasicAuth(h), undefined, String(h));
    }
  });
});
