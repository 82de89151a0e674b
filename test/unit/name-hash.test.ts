/**
 * OpenSSL's name hash (the file names of `openssl rehash`, Erlang's ssl_crl_hash_dir) against
 * OpenSSL itself: `openssl x509 -hash` and `openssl crl -hash` on names in mixed case, with runs
 * of white space, multi-valued RDNs, non-ASCII text and the string types other CAs use.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import 'reflect-metadata';
import { fromPemAll } from '../../src/ca/x509/pem.js';
import { parseCertificate } from '../../src/ca/x509/inspect.js';
import { opensslNameHash } from '../../src/ca/x509/name-hash.js';
import { run, tempDir, writeTemp } from '../helpers/openssl.js';
import { toolSkip } from '../helpers/tools.js';

const SUBJECTS = [
  '/CN=Fleet Root',
  '/C=DE/O=Acme  GmbH/OU=  Meters /CN=Issuing CA 1',
  '/CN=a+O=b+OU=C   D',
  '/O=ÄÖü Straße/CN=MiXeD\tCase',
  '/DC=com/DC=Example/CN=x',
  '/CN=UPPER lower/serialNumber=AB12',
];

describe('opensslNameHash', { skip: toolSkip('openssl') }, () => {
  for (const mask of ['utf8only', 'default', 'pkix']) {
    it(`matches openssl x509 -hash and openssl crl -hash (string_mask ${mask})`, () => {
      const dir = tempDir();
      const conf = writeTemp(
        dir,
        'req.cnf',
        `[req]\ndistinguished_name = dn\nstring_mask = ${mask}\nutf8 = yes\n[dn]\n[ca]\ndefault_ca = x\n[x]\ndatabase = ${dir}/index.txt\ndefault_md = sha256\ndefault_crl_days = 1\n`,
      );
      writeTemp(dir, 'index.txt', '');
      for (const [i, subj] of SUBJECTS.entries()) {
        const key = `${dir}/k${i}.pem`;
        const cert = `${dir}/c${i}.pem`;
        const made = run('openssl', [
          'req',
          '-config',
          conf,
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-keyout',
          key,
          '-out',
          cert,
          '-subj',
          subj,
          '-multivalue-rdn',
          '-days',
          '1',
        ]);
        assert.equal(made.status, 0, made.stderr);
        const certHash = run('openssl', ['x509', '-in', cert, '-noout', '-hash']).stdout.trim();
        const parsed = parseCertificate(fromPemAll(readFileSync(cert, 'utf8'))[0]!);
        assert.equal(opensslNameHash(parsed.subjectDer), certHash, `${subj} (${mask})`);
        const crl = `${dir}/crl${i}.pem`;
        const signed = run('openssl', ['ca', '-config', conf, '-gencrl', '-keyfile', key, '-cert', cert, '-out', crl]);
        assert.equal(signed.status, 0, signed.stderr);
        assert.equal(run('openssl', ['crl', '-in', crl, '-noout', '-hash']).stdout.trim(), certHash, 'a CRL is named by its issuer');
      }
    });
  }
});
