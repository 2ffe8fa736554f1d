// Waiting, with one behaviour on abort everywhere: the wait ends early and resolves. A caller that must not go on
// after an abort checks `signal.aborted` itself (or uses `sleepOrThrow`).

/** Resolves after `ms`, or at once when `signal` aborts (before or during the wait). Never rejects. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Like `sleep`, but an abort rejects with the signal's reason: for work that must not continue once aborted. */
export async function sleepOrThrow(ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  await sleep(ms, signal);
  signal?.throwIfAborted();
}
