/**
 * Group commit for a hot path: calls made in the same event-loop turn are gathered and handed to
 * `run` as one batch, so they share its database round trips. At most `lanes` batches run at
 * once; whatever arrives meanwhile waits and leaves as the next batch, so under load batches
 * grow by themselves. `run` returns one result per item, in order; if it throws, every item of
 * that batch is rejected with the error.
 */
export class GroupBatcher<I, O> {
  private queue: { item: I; resolve(o: O): void; reject(e: unknown): void }[] = [];
  private flushScheduled = false;
  private inFlight = 0;

  constructor(
    private readonly run: (items: I[]) => Promise<O[]>,
    private readonly options: { maxBatch: number; lanes: number },
  ) {}

  add(item: I): Promise<O> {
    return new Promise((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.flushScheduled || this.queue.length === 0) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    while (this.queue.length > 0 && this.inFlight < this.options.lanes) {
      const batch = this.queue.splice(0, this.options.maxBatch);
      this.inFlight++;
      this.run(batch.map((w) => w.item))
        .then(
          (out) => batch.forEach((w, i) => w.resolve(out[i]!)),
          (e) => batch.forEach((w) => w.reject(e)),
        )
        .finally(() => {
          this.inFlight--;
          this.schedule();
        });
    }
  }
}
