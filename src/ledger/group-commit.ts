// Group commit for a store whose commits are serialised anyway: calls made while a batch is being
// committed wait and go together in the next batch, so N concurrent callers cost one transaction
// (one WAL flush) instead of N. Calls made in the same turn of the event loop leave together.

export interface GroupCommitOptions {
  /** At most this many submitted items per batch. */
  readonly maxBatch: number;
}

export interface GroupCommit<I, O> {
  /** Queues an item; settles with the item's own result once its batch is committed. */
  submit(item: I): Promise<O>;
  /** Resolves once everything submitted so far has settled (for close). */
  drain(): Promise<void>;
}

interface Pending<I, O> {
  readonly item: I;
  resolve(value: O): void;
  reject(error: unknown): void;
}

/**
 * `commit` gets a batch and returns one settled result per item, in order, so that one item's
 * failure can stay its own; if it throws, every item of the batch fails with that error.
 */
export function createGroupCommit<I, O>(
  commit: (items: readonly I[]) => Promise<readonly PromiseSettledResult<O>[]>,
  options: GroupCommitOptions,
): GroupCommit<I, O> {
  let queued: Pending<I, O>[] = [];
  let inFlight: Promise<void> | undefined;
  let scheduled = false;

  const run = async (batch: readonly Pending<I, O>[]) => {
    try {
      const results = await commit(batch.map((p) => p.item));
      batch.forEach((p, i) => {
        const r = results[i];
        if (r === undefined) p.reject(new Error("the batch returned no result for this item"));
        else if (r.status === "fulfilled") p.resolve(r.value);
        else p.reject(r.reason);
      });
    } catch (error) {
      for (const p of batch) p.reject(error);
    }
  };

  const send = () => {
    scheduled = false;
    if (inFlight !== undefined || queued.length === 0) return;
    const batch = queued.slice(0, options.maxBatch);
    queued = queued.slice(batch.length);
    inFlight = run(batch).finally(() => {
      inFlight = undefined;
      send();
    });
  };

  return {
    submit(item) {
      return new Promise<O>((resolve, reject) => {
        queued.push({ item, resolve, reject });
        if (inFlight === undefined && !scheduled) {
          scheduled = true;
          setImmediate(send);
        }
      });
    },
    async drain() {
      while (inFlight !== undefined || queued.length > 0) {
        await (inFlight ?? new Promise((r) => setImmediate(r)));
      }
    },
  };
}
