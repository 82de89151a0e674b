import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { GroupBatcher } from './group-batcher.js';

/** One signature check: the public key (an uncompressed EC point with its curve, or SPKI DER), the hash, the verify options and the key types that may sign. */
export interface VerifyJob {
  key: { ecPoint: Uint8Array; curve: 'P-256' | 'P-384' } | { spki: Uint8Array };
  hash: string | null;
  data: Uint8Array;
  signature: Uint8Array;
  options?: { dsaEncoding?: 'der' | 'ieee-p1363'; padding?: number; saltLength?: number };
  keyTypes: string[];
}

// Plain CommonJS evaluated in the worker, so it loads the same under tsx and from dist.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createPublicKey, verify, webcrypto, KeyObject } = require('node:crypto');
// WebCrypto's raw import is the cheapest way in to an EC key (~55 µs; a JWK ~85 µs, the DER
// decoder ~125 µs) and refuses a point off the curve all the same.
const publicKey = async (k) =>
  'ecPoint' in k
    ? KeyObject.from(await webcrypto.subtle.importKey('raw', k.ecPoint, { name: 'ECDSA', namedCurve: k.curve }, true, ['verify']))
    : createPublicKey({ key: Buffer.from(k.spki), format: 'der', type: 'spki' });
parentPort.on('message', async ({ id, jobs }) => {
  const results = await Promise.all(jobs.map(async (j) => {
    try {
      const key = await publicKey(j.key);
      if (!j.keyTypes.includes(key.asymmetricKeyType)) return false;
      return verify(j.hash, j.data, { key, ...(j.options || {}) }, j.signature);
    } catch {
      return false;
    }
  }));
  parentPort.postMessage({ id, results });
});
`;

/**
 * Signature checks on worker threads, off the event loop: building a public key and verifying
 * with it cost ~140-200 µs, most of an enrollment's CPU time on the loop. Jobs of one event-loop
 * turn are shared out among the workers, one message each (one wake-up per share, not per
 * signature): requests arrive in bursts, and a burst on one worker waits on itself. Never throws
 * for a bad key or signature: the answer is false.
 */
export class SignatureVerifier {
  private workers: Worker[] = [];
  private next = 0;
  private pending = new Map<number, { worker: Worker; done(results: boolean[]): void }>();
  private seq = 0;
  private readonly batcher: GroupBatcher<VerifyJob, boolean>;

  constructor(private readonly threads = Math.max(1, Math.min(2, availableParallelism()))) {
    this.batcher = new GroupBatcher((jobs) => this.dispatch(jobs), { maxBatch: 256, lanes: threads * 2 });
  }

  verify(job: VerifyJob): Promise<boolean> {
    // Own copies: a view into a pooled Buffer would take the whole pool slab with it to the worker.
    const own = (b: Uint8Array) => new Uint8Array(b);
    const key = 'ecPoint' in job.key ? { ...job.key, ecPoint: own(job.key.ecPoint) } : { spki: own(job.key.spki) };
    return this.batcher.add({ ...job, key, data: own(job.data), signature: own(job.signature) });
  }

  private worker(): Worker {
    if (this.workers.length < this.threads) {
      const w = new Worker(WORKER_SOURCE, { eval: true });
      w.on('message', ({ id, results }: { id: number; results: boolean[] }) => {
        this.pending.get(id)?.done(results);
        this.pending.delete(id);
        this.holdProcess(w);
      });
      w.on('error', () => this.replace(w));
      w.on('exit', () => this.replace(w));
      this.workers.push(w);
      return w;
    }
    return this.workers[this.next++ % this.workers.length]!;
  }

  /** A worker keeps the process alive only while it owes answers. */
  private holdProcess(w: Worker): void {
    const owes = [...this.pending.values()].some((p) => p.worker === w);
    if (owes) w.ref();
    else w.unref();
  }

  /** A worker that died takes its unanswered jobs with it: they fail closed (false), and the next batch starts a new worker. */
  private replace(w: Worker): void {
    this.workers = this.workers.filter((x) => x !== w);
    for (const [id, p] of this.pending) {
      if (p.worker !== w) continue;
      this.pending.delete(id);
      p.done([]);
    }
  }

  private async dispatch(jobs: VerifyJob[]): Promise<boolean[]> {
    const shares = Math.min(this.threads, jobs.length);
    if (shares <= 1) return this.send(jobs);
    const size = Math.ceil(jobs.length / shares);
    const parts = await Promise.all(Array.from({ length: shares }, (_, i) => this.send(jobs.slice(i * size, (i + 1) * size))));
    return parts.flat();
  }

  private send(jobs: VerifyJob[]): Promise<boolean[]> {
    const w = this.worker();
    const id = ++this.seq;
    return new Promise((resolve) => {
      this.pending.set(id, { worker: w, done: (results) => resolve(jobs.map((_, i) => results[i] === true)) });
      this.holdProcess(w);
      w.postMessage({ id, jobs });
    });
  }
}
