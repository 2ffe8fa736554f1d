// Work the sink keeps apart from its partitions so that nothing holds them: parked uids (a call the call center
// did not take for now) and parks waiting for their sweep (the backfill, or the revocation). Each is durable in
// PostgreSQL before the offsets of its events are committed, and taken with a lease, so a crashed sink member's
// work is taken up again by another.
import { setMaxListeners } from 'node:events';
import type pg from 'pg';
import { isFleetSyncError, isKnownFailure } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { Applier, UidOutcome } from '../sync/applier.js';
import { RETRY_CHUNKS_IN_FLIGHT, SWEEP_WORKERS } from '../sync/context.js';
import type { Reconciler, SweepReason } from '../sync/reconciler.js';
import {
  claimDueParkSweep,
  claimDueRetries,
  claimIntervalSweep,
  clearRetries,
  countRetries,
  deferParkSweep,
  finishParkSweep,
  forgetRetryEvents,
  releaseParkSweep,
  renewParkSweep,
} from '../sync/work-queue.js';
import { sleep } from '../time.js';
import { fromParkedEvent, type DeadLetterWriter } from './dead-letter.js';

export interface RetryLoopsDeps {
  pool: pg.Pool;
  /** Where a parked uid's events go when the call center refuses the uid for good. */
  deadLetters: DeadLetterWriter;
  applier: Applier;
  reconciler: Reconciler;
  log: Logger;
  metrics: Metrics;
  signal: AbortSignal;
  backoff: { baseMs: number; maxDelayMs: number };
  /** How often to look for due work when there was none. */
  pollMs?: number;
  /**
   * Seconds between the group's interval passes over every park (RECONCILE_INTERVAL_S): one member claims each
   * pass and asks for the parks' sweeps, which every member's sweep workers share. Absent: no interval pass.
   */
  intervalS?: number;
}

export interface RetryLoops {
  /** Something was just parked or requested: look now rather than at the next poll. */
  wake(): void;
  /** Settles when both loops have stopped (after the signal aborts); they never stop on their own. */
  done: Promise<void>;
}

const RETRY_BATCH = 500;
const RETRY_LEASE_MS = 15_000;
const RETRY_LOCK_CHUNK = 32;

// A sweep's lease is renewed every third of it while it runs (a large park's backfill takes minutes), and runs out
// soon after a sink member dies with it: a revocation it held waits at most this long for another member. Two
// members sweeping one park at once (a renewal missed) only repeat work: every decision is taken under uid locks.
const SWEEP_LEASE_MS = 15_000;

// How often a member looks whether the group's interval pass is due: a tenth of the interval, within these bounds.
const SCHEDULE_POLL_MIN_MS = 250;
const SCHEDULE_POLL_MAX_MS = 5_000;

/** A poll wait that a wake() ends early; a wake() while not waiting makes the next wait return at once. */
function waker(signal: AbortSignal) {
  let kick: (() => void) | null = null;
  let pending = false;
  return {
    async idle(ms: number) {
      if (!pending) await Promise.race([sleep(ms, signal), new Promise<void>((r) => (kick = r))]);
      kick = null;
      pending = false;
    },
    wake() {
      pending = true;
      kick?.();
    },
  };
}

export function startRetryLoops(deps: RetryLoopsDeps): RetryLoops {
  const { pool, applier, reconciler, metrics, signal } = deps;
  const log = deps.log.child({ module: 'retries' });
  const pollMs = deps.pollMs ?? 250;
  const retryWaker = waker(signal);
  const sweepWaker = waker(signal);

  /** A failure of the loop itself (the database unreachable, or a defect): logged, counted when unknown, retried. */
  const trouble = async (what: string, e: unknown, attempt: number) => {
    if (signal.aborted) return;
    if (isKnownFailure(e)) log.warn({ err: (e as Error).message, attempt }, `${what} failed; retrying`);
    else {
      metrics.unexpectedErrors.inc({ stage: 'sink' });
      log.error({ err: e, attempt }, `${what} failed with an unexpected error; retrying`);
    }
    await sleep(Math.min(200 * 2 ** Math.min(attempt, 6), 10_000), signal);
  };

  /**
   * A parked uid the call center now refuses for good: its events (their offsets were committed when it was
   * parked) go to the dead-letter topic, or, for a change a sweep or a replay parked, a record naming the uid;
   * only then is it forgotten.
   */
  const deadLetterRefused = async (outcomes: Map<string, UidOutcome>): Promise<number> => {
    let refused = 0;
    for (const [uid, outcome] of outcomes) {
      const row = outcome.refusedRetry;
      if (!outcome.error || !row) continue;
      refused++;
      const reason = { code: outcome.error.code, message: outcome.error.message, attempts: row.attempts + 1 };
      const extra = { 'fleet-sync.uid': uid, 'fleet-sync.projects': row.projects.join(',') };
      for (const event of row.events) await deps.deadLetters.send(fromParkedEvent(event), event, reason, extra);
      if (row.events.length === 0) await deps.deadLetters.send({ key: Buffer.from(uid), value: null, headers: {}, offset: '-1' }, { topic: '', partition: -1 }, reason, extra);
      log.warn({ uid, code: reason.code, err: reason.message, events: row.events.length }, 'a parked uid was refused for good: dead-lettered');
      // The uid may have been parked again meanwhile (another of its changes failed for now): it stays for that
      // retry, without the events just dead-lettered.
      await forgetRetryEvents(pool, uid, row.events);
      await clearRetries(pool, [{ uid, generation: row.generation }]);
    }
    return refused;
  };

  const retries = (async () => {
    let lastCount = 0;
    for (let attempt = 1; !signal.aborted; ) {
      try {
        const uids = await claimDueRetries(pool, RETRY_BATCH, RETRY_LEASE_MS);
        if (uids.length > 0) {
          // Small chunks: a uid's lock is held while its calls are tried, and a stream batch touching one of these
          // uids waits for its chunk, not for a whole round of a project that is still down.
          // A parked uid's call is often slow (a backoff, a Retry-After): chunks side by side keep a round from
          // waiting on each chunk's slowest uid in turn.
          const outcomes = await applier.syncUids(uids, { cause: { kind: 'retry', attempts: 0, events: [] }, lockChunk: RETRY_LOCK_CHUNK, chunksInFlight: RETRY_CHUNKS_IN_FLIGHT, signal });
          const parked = [...outcomes.values()].filter((o) => o.parked).length;
          const refused = await deadLetterRefused(outcomes);
          log.info({ uids: uids.length, done: uids.length - parked - refused, parked, refused }, 'retried parked uids');
        }
        if (Date.now() - lastCount > 1_000) {
          lastCount = Date.now();
          metrics.parkedUids.set(await countRetries(pool));
        }
        attempt = 1;
        if (uids.length < RETRY_BATCH) await retryWaker.idle(pollMs);
      } catch (e) {
        await trouble('retrying parked uids', e, attempt++);
      }
    }
  })();

  // Interval sweeps this member runs: one at a time, so the pass never takes every worker (a toggle's sweep finds
  // one free) nor loads PostgreSQL beyond what the stream's changes can wait behind; the group's members share it.
  let intervalSweeps = 0;
  const sweepWorker = async () => {
    for (let attempt = 1; !signal.aborted; ) {
      try {
        // The slot is taken before the claim, so two workers claiming at once cannot both take an interval sweep.
        const mayTakeInterval = intervalSweeps === 0;
        if (mayTakeInterval) intervalSweeps++;
        let request: Awaited<ReturnType<typeof claimDueParkSweep>>;
        try {
          request = await claimDueParkSweep(pool, SWEEP_LEASE_MS, { interval: mayTakeInterval });
        } finally {
          if (mayTakeInterval) intervalSweeps--;
        }
        attempt = 1;
        if (!request) {
          await sweepWaker.idle(pollMs);
          continue;
        }
        const interval = request.reason === 'interval';
        if (interval) intervalSweeps++;
        const sweepLog = log.child({ park_id: request.park_id, reason: request.reason });
        sweepLog.info(request.reason === 'interval' ? "sweeping the park for the group's interval pass" : 'park changed: sweeping it');
        // A park asked for again while its sweep runs (turned off during its own backfill) stops this sweep at the
        // next renewal: the newer request runs at once with the newer settings instead of waiting for the old one.
        const superseded = new AbortController();
        const sweepSignal = AbortSignal.any([signal, superseded.signal]);
        setMaxListeners(0, sweepSignal);
        const renew = setInterval(
          () =>
            void renewParkSweep(pool, request, SWEEP_LEASE_MS)
              .then((current) => {
                if (!current) superseded.abort();
              })
              .catch(() => {}),
          SWEEP_LEASE_MS / 3,
        );
        try {
          await reconciler.reconcilePark(request.park_id, request.reason as SweepReason, { signal: sweepSignal });
          await finishParkSweep(pool, request);
        } catch (e) {
          if (superseded.signal.aborted && !signal.aborted) {
            sweepLog.info('park asked for again while being swept: the newer request runs now');
            await finishParkSweep(pool, request);
            continue;
          }
          if (signal.aborted) {
            // Stopping: the sweep is given back now rather than when its lease runs out.
            await releaseParkSweep(pool, request).catch(() => {});
            break;
          }
          if (isFleetSyncError(e) && !e.retriable) {
            // A refusal retrying cannot mend (recorded in reconcile_runs): the interval sweep tries the park again.
            sweepLog.error({ code: e.code, err: e.message }, 'sweep of a changed park failed for good; the interval sweep retries it');
            await finishParkSweep(pool, request);
          } else {
            sweepLog.warn({ err: (e as Error).message }, 'sweep of a changed park failed; retrying it later');
            await deferParkSweep(pool, request, (e as Error).message, deps.backoff);
          }
        } finally {
          clearInterval(renew);
          if (interval) intervalSweeps--;
        }
      } catch (e) {
        await trouble('sweeping changed parks', e, attempt++);
      }
    }
  };
  // Park sweeps one member runs at once: a park turned off is swept while another park's long backfill runs.
  const sweeps = Promise.all(Array.from({ length: SWEEP_WORKERS }, sweepWorker));

  /**
   * The group's interval pass: whichever member finds it due first asks for every park's sweep (durably, with the
   * schedule moved on in the same transaction) and prunes; the sweeps themselves go to whichever workers are free.
   */
  const schedule = (async () => {
    const { intervalS } = deps;
    if (intervalS === undefined) return;
    const pollMs = Math.min(SCHEDULE_POLL_MAX_MS, Math.max(SCHEDULE_POLL_MIN_MS, intervalS * 100));
    for (let attempt = 1; !signal.aborted; ) {
      try {
        const parks = await claimIntervalSweep(pool, intervalS);
        attempt = 1;
        if (parks) {
          log.info({ parks: parks.length, intervalS }, 'interval sweep of every park asked for');
          sweepWaker.wake();
          await reconciler.prune();
        }
        await sleep(pollMs, signal);
      } catch (e) {
        await trouble('scheduling the interval sweep', e, attempt++);
      }
    }
  })();

  return {
    wake() {
      retryWaker.wake();
      sweepWaker.wake();
    },
    done: Promise.all([retries, sweeps, schedule]).then(() => {}),
  };
}
