// Runs the sweep of every syncing park on an interval inside a long-running process.
import { setMaxListeners } from 'node:events';
import type { Logger } from '../log.js';
import { sleep } from '../time.js';
import type { Reconciler } from '../sync/reconciler.js';

export interface SweepLoop {
  done: Promise<void>;
  stop(): Promise<void>;
}

export function startSweepLoop(deps: { reconciler: Reconciler; intervalS: number; log: Logger; immediately?: boolean }): SweepLoop {
  const log = deps.log.child({ module: 'reconcile' });
  const stopping = new AbortController();
  // Every call a sweep makes (up to SINK_MAX_IN_FLIGHT_USERS at once) listens to this signal.
  setMaxListeners(0, stopping.signal);
  const done = (async () => {
    if (!deps.immediately) await sleep(deps.intervalS * 1000, stopping.signal);
    while (!stopping.signal.aborted) {
      const started = Date.now();
      try {
        const results = await deps.reconciler.sweepAll('interval', { signal: stopping.signal });
        log.info({ parks: results.size, durationMs: Date.now() - started }, 'sweep done');
      } catch (e) {
        if (!stopping.signal.aborted) log.error({ err: (e as Error).message }, 'sweep failed');
      }
      await sleep(deps.intervalS * 1000, stopping.signal);
    }
  })();
  return {
    done,
    async stop() {
      stopping.abort();
      await done;
    },
  };
}
