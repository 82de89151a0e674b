/**
 * One piece of work per key at a time in this process: a caller that asks while the work for its key
 * is under way gets the same promise; once it settles, the next call starts anew.
 */
export class SingleFlight<K, V> {
  private readonly running = new Map<K, Promise<V>>();

  run(key: K, work: () => Promise<V>): Promise<V> {
    let p = this.running.get(key);
    if (!p) {
      p = work().finally(() => this.running.delete(key));
      this.running.set(key, p);
    }
    return p;
  }
}

/**
 * A read that began after the call: a caller that asks while a read is under way waits for the
 * next one (shared by everyone who asked meanwhile), because the one under way may have read too
 * early for it. So at most two reads are in the air, however many callers there are.
 */
export class FreshRead<V> {
  private running: Promise<V> | undefined;
  private waiting: Promise<V> | undefined;

  constructor(private readonly read: () => Promise<V>) {}

  get(): Promise<V> {
    if (!this.running) return this.start();
    this.waiting ??= this.running.then(settled, settled).then(() => {
      this.waiting = undefined;
      return this.start();
    });
    return this.waiting;
  }

  private start(): Promise<V> {
    const p: Promise<V> = this.read().finally(() => {
      if (this.running === p) this.running = undefined;
    });
    this.running = p;
    return p;
  }
}

const settled = () => undefined;
