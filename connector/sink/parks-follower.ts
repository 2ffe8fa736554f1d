// The parks-topic follower: every sink instance reads call_center_parks from the start on every start, up to its
// end, into the park directory, then keeps following it. A users event is never judged by an older view.
import { randomBytes } from 'node:crypto';
import type { Consumer, Kafka, KafkaMessage } from 'kafkajs';
import type { SchemaRegistry } from '../avro/registry.js';
import type { DecodedEnvelope } from '../events.js';
import type { Logger } from '../log.js';
import { parkFromRow, type ParkDirectory } from '../sync/parks.js';
import { sleep } from '../time.js';

export interface ParksFollower {
  /** Resolves once the directory has every park event that was on the topic when the follower started. */
  caughtUp: Promise<void>;
  stop(): Promise<void>;
}

/** Applies one call_center_parks event to the directory. */
export function mergeParkEvent(parks: ParkDirectory, env: DecodedEnvelope): void {
  if (env.op === 't') for (const p of parks.all()) parks.remove(p.park_id, p.version);
  else if (env.after) parks.merge(parkFromRow(env.after));
  else if (env.before) parks.remove(String(env.before.park_id), parkFromRow(env.before).version);
}

export function startParksFollower(deps: {
  kafka: Kafka;
  topic: string;
  groupPrefix: string;
  parks: ParkDirectory;
  registry: SchemaRegistry;
  log: Logger;
  signal: AbortSignal;
}): ParksFollower {
  const { kafka, topic, parks, registry, log } = deps;
  let consumer: Consumer | null = null;

  const decode = (message: KafkaMessage): DecodedEnvelope | null => {
    if (!message.value) return null;
    try {
      return registry.decode<DecodedEnvelope>(message.value).value;
    } catch (e) {
      // The sink's group dead-letters it; the directory goes on without it (the table is re-read per batch anyway).
      log.error({ offset: message.offset, err: (e as Error).message }, 'a call_center_parks event cannot be decoded: the directory skips it');
      return null;
    }
  };

  const caughtUp = (async () => {
    const admin = kafka.admin();
    await admin.connect();
    const ends = await admin.fetchTopicOffsets(topic).finally(() => admin.disconnect());
    const pending = new Set(ends.filter((e) => BigInt(e.high) > BigInt(e.low)).map((e) => e.partition));
    const targets = new Map(ends.map((e) => [e.partition, BigInt(e.high)]));
    // A group of its own that never commits: every sink instance sees every park, from the start, on every start.
    consumer = kafka.consumer({ groupId: `${deps.groupPrefix}.parks.${randomBytes(6).toString('hex')}`, maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    // Kafka-transactional topics end in commit markers that no handler sees: kafkajs's end-of-batch event reports
    // every fetched batch, markers included, with the offset it reached.
    consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
      if (payload.offsetLag === '0' || BigInt(payload.lastOffset) + 1n >= (targets.get(payload.partition) ?? 0n)) pending.delete(payload.partition);
    });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const message of batch.messages) {
          const env = decode(message);
          if (env) mergeParkEvent(parks, env);
        }
      },
    });
    const startedAt = Date.now();
    let warnedAt = startedAt;
    while (pending.size > 0 && !deps.signal.aborted) {
      await sleep(50, deps.signal);
      if (Date.now() - warnedAt > 30_000) {
        warnedAt = Date.now();
        log.warn({ partitions: [...pending], waitedMs: warnedAt - startedAt }, 'park directory still catching up with the call_center_parks topic');
      }
    }
    log.info({ parks: parks.all().length, enabled: parks.enabled().length }, 'park directory caught up');
  })();

  return {
    caughtUp,
    async stop() {
      await caughtUp.catch(() => {});
      await consumer?.disconnect().catch(() => {});
    },
  };
}
