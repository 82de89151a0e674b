import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], input?: string | Buffer): RunResult {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'mqttca-x509-'));
}

export function writeTemp(dir: string, name: string, content: string | Buffer): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

/** `openssl verify -x509_strict` of leaf against root with the intermediates untrusted. */
export function opensslVerify(rootPem: string, intermediatesPem: string[], leafPem: string, extra: string[] = []): RunResult {
  const dir = tempDir();
  const args = ['verify', '-x509_strict', '-CAfile', writeTemp(dir, 'root.pem', rootPem), ...extra];
  if (intermediatesPem.length) args.push('-untrusted', writeTemp(dir, 'inter.pem', intermediatesPem.join('')));
  args.push(writeTemp(dir, 'leaf.pem', leafPem));
  return run('openssl', args);
}

/**
 * gnutls: `certtool --verify-chain` over leaf, intermediates..., root (the chain as a whole, ending
 * self-signed), then `certtool --verify` of the same file against the root as the trust anchor.
 */
export function certtoolVerifyChain(chainPems: string[]): RunResult {
  const dir = tempDir();
  const chain = writeTemp(dir, 'chain.pem', chainPems.join(''));
  const whole = run('certtool', ['--verify-chain', '--infile', chain]);
  if (whole.status !== 0) return whole;
  const anchored = run('certtool', [
    '--verify',
    '--load-ca-certificate',
    writeTemp(dir, 'root.pem', chainPems[chainPems.length - 1]!),
    '--infile',
    chain,
  ]);
  return { status: anchored.status, stdout: whole.stdout + anchored.stdout, stderr: whole.stderr + anchored.stderr };
}

/** A CSR made by OpenSSL for a fresh key of the given kind. Returns the key and CSR PEMs. */
export function opensslCsr(keyArgs: string[], subject = '/CN=ignored', extraArgs: string[] = []): { keyPem: string; csrPem: string } {
  const dir = tempDir();
  const keyPath = join(dir, 'key.pem');
  const gen = run('openssl', ['genpkey', ...keyArgs, '-out', keyPath]);
  if (gen.status !== 0) throw new Error(gen.stderr);
  const csrPath = join(dir, 'csr.pem');
  const req = run('openssl', ['req', '-new', '-key', keyPath, '-subj', subject, '-out', csrPath, ...extraArgs]);
  if (req.status !== 0) throw new Error(req.stderr);
  return { keyPem: run('cat', [keyPath]).stdout, csrPem: run('cat', [csrPath]).stdout };
}

export const KEY_ARGS = {
  p256: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  p384: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
  p521: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521'],
  ed25519: ['-algorithm', 'ED25519'],
  rsa1024: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
  rsa2048: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
} as const;

/** Like run(), without blocking the event loop: for clients of a server running in this process. */
export function runAsync(cmd: string, args: string[], input?: string | Buffer): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.end(input);
  });
}
