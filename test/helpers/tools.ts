import { spawnSync } from 'node:child_process';

const inCi = process.env.CI === 'true' || process.env.CI === '1';

/**
 * Why a test that needs an outside command (openssl, certtool, mosquitto) cannot run here, or
 * undefined when it can. In CI nothing is skipped: a missing tool fails the test instead.
 */
export function toolSkip(cmd: string): string | undefined {
  const found = spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
  if (found || inCi) return undefined;
  return `${cmd} is not installed: skipped (CI installs it)`;
}

/** Why a test that needs a service named by an environment variable cannot run here (never in CI). */
export function envSkip(name: string, what: string): string | undefined {
  if (process.env[name] || inCi) return undefined;
  return `${name} is not set: ${what} skipped (CI sets it)`;
}
