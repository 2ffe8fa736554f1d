// Publishing retried until Kafka takes it: the source never moves past an event Kafka has not acknowledged.
import { isFleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { sleep } from '../time.js';
import type { ChangeRecord, PublishedMark, Publisher } from './publisher.js';

/** Resolves when Kafka has every record; rejects only when `giveUp` aborts (the records stay unacknowledged). */
export async function publishUntilAcknowledged(publisher: Publisher, records: ChangeRecord[], log: Logger, giveUp: AbortSignal, mark?: PublishedMark): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await publisher.publish(records, mark, giveUp);
      if (attempt > 1) log.info({ attempt, records: records.length }, 'Kafka acknowledged after retrying');
      return;
    } catch (e) {
      if (giveUp.aborted || (isFleetSyncError(e) && !e.retriable)) throw e;
      // Each attempt is already kafkajs's own retries (kafka/client.ts): a second at most between them, so a broker
      // back from a restart takes the batch at once.
      const delayMs = Math.min(200 * 2 ** Math.min(attempt - 1, 5), 1_000);
      log.warn({ attempt, delayMs, records: records.length, err: (e as Error).message }, 'publishing to Kafka failed; retrying');
      await sleep(delayMs, giveUp);
      if (giveUp.aborted) throw e;
    }
  }
}
