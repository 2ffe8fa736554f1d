// Per-uid mutual exclusion inside one process: two partitions may carry rows of one uid (one user, two parks),
// and a stale read applied after a fresh one would undo it.
export interface KeyedLock {
  /** Runs `work` while holding every key; keys are taken in sorted order so two callers never deadlock. */
  withKeys<T>(keys: Iterable<string>, work: () => Promise<T>): Promise<T>;
}

export function createKeyedLock(): KeyedLock {
  const tails = new Map<string, Promise<void>>();
  return {
    async withKeys(keys, work) {
      const sorted = [...new Set(keys)].sort();
      const releases: (() => void)[] = [];
      try {
        for (const key of sorted) {
          const previous = tails.get(key) ?? Promise.resolve();
          let release!: () => void;
          const mine = new Promise<void>((r) => (release = r));
          const tail = previous.then(() => mine);
          tails.set(key, tail);
          releases.push(() => {
            release();
            if (tails.get(key) === tail) tails.delete(key);
          });
          await previous;
        }
        return await work();
      } finally {
        for (const r of releases) r();
      }
    },
  };
}
