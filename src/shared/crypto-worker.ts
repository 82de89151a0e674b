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
const publicKey = async (j) =>
  j.curve
    ? KeyObject.from(await webcrypto.subtle.importKey('raw', j.key, { name: 'ECDSA', namedCurve: j.curve }, true, ['verify']))
    : createPublicKey({ key: j.key, format: 'der', type: 'spki' });
// One message a share: the jobs' fields as JSON, their bytes in one transferred buffer, in order.
parentPort.on('message', async ({ id, meta, bytes }) => {
  const all = new Uint8Array(bytes);
  let at = 0;
  const take = (n) => all.subarray(at, (at += n));
  const jobs = JSON.parse(meta).map((j) => ({ ...j, key: take(j.k), data: take(j.d), signature: take(j.s) }));
  const results = await Promise.all(jobs.map(async (j) => {
    try {
      const key = await publicKey(j);
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
 * signature): requests arrive in bursts, and a burst on one worker waits on itself. A share's
 * bytes travel as one transferred buffer, not three cloned typed arrays a job (~7 µs of the event
 * loop a verify against ~8-9 here; most of postMessage's time in profiles is the worker's wake-up,
 * which this does not change). Never throws for a bad key or signature: the answer is false.
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
    return this.batcher.add(job);
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
      const { meta, bytes } = pack(jobs);
      w.postMessage({ id, meta, bytes }, [bytes]);
    });
  }
}

/** A share of jobs as one message: their fields as JSON, and their keys, data and signatures copied, in order, into one buffer to transfer. */
function pack(jobs: VerifyJob[]): { meta: string; bytes: ArrayBuffer } {
  const keyOf = (j: VerifyJob) => ('ecPoint' in j.key ? j.key.ecPoint : j.key.spki);
  let size = 0;
  for (const j of jobs) size += keyOf(j).length + j.data.length + j.signature.length;
  const bytes = new Uint8Array(size);
  let at = 0;
  const meta = jobs.map((j) => {
    const key = keyOf(j);
    for (const part of [key, j.data, j.signature]) {
      bytes.set(part, at);
      at += part.length;
    }
    return {
      curve: 'curve' in j.key ? j.key.curve : undefined,
      hash: j.hash,
      options: j.options,
      keyTypes: j.keyTypes,
      k: key.length,
      d: j.data.length,
      s: j.signature.length,
    };
  });
  return { meta: JSON.stringify(meta), bytes: bytes.buffer };
}
