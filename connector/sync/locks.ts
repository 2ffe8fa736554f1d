// Per-uid mutual exclusion inside one process: two partitions may carry rows of one uid (one user, two parks),
// and a stale read applied after a fresh one would undo it.
export interface KeyedLock {
  /**
   * Runs `work` while holding every key; keys are taken in sorted order so two callers never deadlock. When `signal`
   * aborts while a key is awaited, the wait ends with the signal's reason and nothing runs: a batch of a group that
   * is rebalancing stops at once instead of after the sweep chunk it waits behind.
   */
  withKeys<T>(keys: Iterable<string>, work: () => Promise<T>, signal?: AbortSignal): Promise<T>;
}

export function createKeyedLock(): KeyedLock {
  const tails = new Map<string, Promise<void>>();
  return {
    async withKeys(keys, work, signal) {
      signal?.throwIfAborted();
      const sorted = [...new Set(keys)].sort();
      const releases: (() => void)[] = [];
      // One listener for the whole call, however many keys it waits for.
      let onAbort: (() => void) | undefined;
      const aborted = signal
        ? new Promise<never>((_, reject) => {
            onAbort = () => reject(signal.reason);
            signal.addEventListener('abort', onAbort, { once: true });
          })
        : undefined;
      aborted?.catch(() => {});
      try {
        for (const key of sorted) {
          const previous = tails.get(key) ?? Promise.resolve();
          let release!: () => void;
          const mine = new Promise<void>((r) => (release = r));
          // The next caller waits for the holder before this one too: a caller that stops waiting (its release
          // runs at once) never lets anyone past a holder.
          const tail = previous.then(() => mine);
          tails.set(key, tail);
          releases.push(() => {
            release();
            // Forgotten once it has settled: a caller that stopped waiting leaves its tail until the holder is done.
            void tail.then(() => {
              if (tails.get(key) === tail) tails.delete(key);
            });
          });
          await (aborted ? Promise.race([previous, aborted]) : previous);
        }
        // Every key held: the work listens to the signal on its own.
        if (onAbort) signal!.removeEventListener('abort', onAbort);
        return await work();
      } finally {
        if (onAbort) signal!.removeEventListener('abort', onAbort);
        for (const r of releases) r();
      }
    },
  };
}
