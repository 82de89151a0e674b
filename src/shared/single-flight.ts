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
