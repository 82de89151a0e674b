/** bench/load.mjs, the HTTP load generator, run as its own process: its result line, parsed. */
import { spawn } from 'node:child_process';
import { join } from 'node:path';

export interface LoadResult {
  count: number;
  errors: number;
  statuses: Record<string, number>;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  exhausted: boolean;
}

/** Arguments as bench/load.mjs documents them. */
export function load(args: string[]): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(import.meta.dirname, 'load.mjs'), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as LoadResult) : reject(new Error(`load generator exited ${code}`))));
  });
}
