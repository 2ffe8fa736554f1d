// The consumer group's generation this member works in, as an AbortSignal that ends when a heartbeat says the group
// has moved on (a rebalance, or this member dropped from the group). kafkajs rejoins only once every batch in flight
// has returned, so one slow batch would hold the whole group's rebalance for up to its rebalance timeout: the batches
// listen to this signal instead, stop, commit nothing (their events go to the partition's next owner), and the
// member rejoins at once.
import type { Consumer } from 'kafkajs';

/** Heartbeat errors after which this member's generation is over (kafkajs names them by the protocol's types). */
const ENDS_GENERATION = new Set(['REBALANCE_IN_PROGRESS', 'ILLEGAL_GENERATION', 'UNKNOWN_MEMBER_ID', 'FENCED_INSTANCE_ID']);

export function endsGeneration(e: unknown): boolean {
  return ENDS_GENERATION.has(String((e as { type?: unknown } | null)?.type ?? ''));
}

export interface Generation {
  /** The generation joined last: aborted (with the heartbeat's error as reason) once the group moved on. */
  signal(): AbortSignal;
  /** A heartbeat failed: ends the generation if the error says the group moved on; other failures change nothing. */
  heartbeatFailed(e: unknown): void;
}

export function trackGeneration(consumer: Consumer): Generation {
  let current = new AbortController();
  consumer.on(consumer.events.GROUP_JOIN, () => {
    current = new AbortController();
  });
  return {
    signal: () => current.signal,
    heartbeatFailed(e) {
      if (endsGeneration(e) && !current.signal.aborted) current.abort(e);
    },
  };
}
