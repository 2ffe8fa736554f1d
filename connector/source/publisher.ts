// The publisher turns change events into Kafka records and ships them; kafkajs stays behind this interface
// so the client can be swapped (or made transactional) without touching the stream.
import { CompressionTypes, type Admin, type Message, type Producer } from 'kafkajs';
import type { SchemaRegistry } from '../avro/registry.js';
import type { Config } from '../config.js';
import { FleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { sleep } from '../time.js';
import { createKafka } from '../kafka/client.js';
import { fastDefaultPartitioner } from '../kafka/partitioner.js';
import { ensureTopics } from '../kafka/topics.js';
import { CAPTURED_TABLES, positionAfter, topicFor, type CapturedTable, type ChangeEvent, type StreamPosition } from '../events.js';

export interface ChangeRecord {
  topic: string;
  /** Set only for a truncate, which goes to every partition so it is ordered after each key's earlier changes. */
  partition?: number;
  key: Buffer;
  value: Buffer | null;
}

/** A record's bytes as the broker counts them against its size limits, framing aside: key and value. */
export function recordSize(r: ChangeRecord): number {
  return r.key.length + (r.value?.length ?? 0);
}

/** The last event a publish carried, stored with it atomically (exactly-once): a restart skips up to it. */
export interface PublishedMark {
  /** The snapshot the stream started from: a mark of an older slot never applies to a new one. */
  scope: string;
  position: StreamPosition;
}

export interface Publisher {
  /** Creates the captured tables' topics when missing; returns their partition counts. */
  ensureTopics(): Promise<Record<CapturedTable, number>>;
  /**
   * Resolves once Kafka acknowledged every record (acks=all); rejects with a retriable error otherwise. With
   * exactly-once, the records and the mark commit in one Kafka transaction, or neither does.
   */
  publish(records: ChangeRecord[], mark?: PublishedMark, signal?: AbortSignal): Promise<void>;
  /** The mark of the last committed publish (exactly-once only; null otherwise or when there is none). */
  lastMark(): Promise<PublishedMark | null>;
  close(): Promise<void>;
}

// Topic names per prefix and table, made once: a name built per record is a new string to hash per record.
const topicNames = new Map<string, Record<string, string>>();
function topicOf(prefix: string, table: CapturedTable): string {
  let names = topicNames.get(prefix);
  if (!names) topicNames.set(prefix, (names = {}));
  return (names[table] ??= topicFor(prefix, table));
}

/** One change event → its records: the event, plus a tombstone after a delete (so compaction can forget the key). */
export function toRecords(event: ChangeEvent, registry: SchemaRegistry, prefix: string, partitions: Record<CapturedTable, number>): ChangeRecord[] {
  const topic = topicOf(prefix, event.table);
  const key = registry.encode(event.table, 'key', event.key);
  // The event is the envelope (before, after, op, ts_ms, source) plus fields the encoder does not read: no copy.
  const value = registry.encode(event.table, 'value', event);
  if (event.op === 't') {
    return Array.from({ length: partitions[event.table] }, (_, partition) => ({ topic, partition, key, value }));
  }
  if (event.op === 'd') return [{ topic, key, value }, { topic, key, value: null }];
  return [{ topic, key, value }];
}

export function createKafkaPublisher(deps: { config: Config; log: Logger }): Publisher {
  const { config } = deps;
  const log = deps.log.child({ module: 'publisher' });
  const kafka = createKafka(config, deps.log, '-source');
  const exactlyOnce = config.CDC_EXACTLY_ONCE;
  // One transactional id per slot: a restarted or standby source fences the one before it, whose open
  // transaction the broker aborts. The mark lives in the offsets of a group of the same name, committed in the
  // same transaction as the events (Kafka's transactional offset commit), on a one-partition topic of its own.
  const transactionalId = `fleet-sync.source.${config.TOPIC_PREFIX}.${config.CDC_SLOT}`;
  const markTopic = `${config.TOPIC_PREFIX}.fleet_sync.source_marks`;
  let producer: Producer | null = null;
  let admin: Admin | null = null;

  const connectedAdmin = async (): Promise<Admin> => {
    if (admin) return admin;
    const a = kafka.admin();
    await a.connect();
    admin = a;
    return a;
  };

  const connectedProducer = async (): Promise<Producer> => {
    if (producer) return producer;
    const p = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      ...(exactlyOnce ? { transactionalId } : {}),
      // Same partition for a key as kafkajs's DefaultPartitioner, without its 64-bit Long arithmetic.
      createPartitioner: fastDefaultPartitioner,
      // A transaction begun right after the previous commit often meets CONCURRENT_TRANSACTIONS while the broker
      // writes the commit markers: retried after 300 ms by default (kafkajs), which was the p99 latency. At most a
      // second apart, as the client's (kafka/client.ts), ≈9 s in all.
      retry: { retries: 15, initialRetryTime: 10, maxRetryTime: 1_000 },
    });
    await p.connect();
    if (exactlyOnce) {
      // kafkajs registers the transactional id only at the first transaction: do it now, so that a zombie with
      // the same id is fenced (its open transaction aborted, a commit in flight finished) before the mark is read.
      const fence = await p.transaction();
      await fence.abort();
    }
    producer = p;
    return p;
  };

  /** The Kafka error types along an error's causes. */
  const kafkaTypes = (e: unknown): string[] => {
    const types: string[] = [];
    for (let c: unknown = e; c; c = (c as { cause?: unknown; originalError?: unknown }).cause ?? (c as { originalError?: unknown }).originalError) {
      const type = (c as { type?: string }).type;
      if (type) types.push(type);
      if (c === (c as { cause?: unknown }).cause) break;
    }
    return types;
  };
  /** Another source with this slot's transactional id took over: this one must stop, not fight it. */
  const fenced = (e: unknown) => kafkaTypes(e).some((t) => t === 'INVALID_PRODUCER_EPOCH' || t === 'PRODUCER_FENCED');
  /** The broker refuses this principal (its transactional id, a topic, the cluster): no retry mends that. */
  const refused = (e: unknown) => kafkaTypes(e).find((t) => t.endsWith('_AUTHORIZATION_FAILED'));
  /** The broker refuses the records' size (a topic's max.message.bytes): the same records would be refused again. */
  const tooLarge = (e: unknown) => kafkaTypes(e).find((t) => t === 'MESSAGE_TOO_LARGE' || t === 'RECORD_LIST_TOO_LARGE');

  const dropProducer = async () => {
    // The producer may be wedged after a broker outage: start a fresh one (which fences its own past) for the retry.
    const stale = producer;
    producer = null;
    await stale?.disconnect().catch(() => {});
  };

  async function lastMark(): Promise<PublishedMark | null> {
    if (!exactlyOnce) return null;
    // Fence first: a zombie's open transaction (and its mark) must be aborted before the mark is read.
    await connectedProducer();
    const a = await connectedAdmin();
    const [topic] = await a.fetchOffsets({ groupId: transactionalId, topics: [markTopic] });
    const metadata = topic?.partitions.find((p) => p.partition === 0)?.metadata;
    if (!metadata) return null;
    try {
      const parsed = JSON.parse(metadata) as { scope: string; lsn: string; seq: number };
      return { scope: parsed.scope, position: { lsn: BigInt(parsed.lsn), seq: Number(parsed.seq) } };
    } catch {
      log.error({ group: transactionalId, metadata }, 'the stream mark is unreadable: ignoring it (events since the last confirmed LSN may repeat)');
      return null;
    }
  }

  /** The last mark, asked for until the broker answers; rejects only when `signal` aborts (nothing is re-sent then). */
  async function markWhenAnswered(signal?: AbortSignal): Promise<PublishedMark | null> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await lastMark();
      } catch (e) {
        await dropProducer();
        if (signal?.aborted) throw new FleetSyncError('KAFKA_UNAVAILABLE', `the stream mark could not be read back: ${(e as Error).message}`, { cause: e });
        // Each attempt is already kafkajs's own retries: a second at most between them, so a broker back is asked at once.
        const delayMs = Math.min(200 * 2 ** Math.min(attempt - 1, 5), 1_000);
        log.warn({ attempt, delayMs, err: (e as Error).message }, 'reading the stream mark back after a lost commit answer; retrying');
        await sleep(delayMs, signal);
      }
    }
  }

  return {
    async ensureTopics() {
      const a = await connectedAdmin();
      const topics = CAPTURED_TABLES.map((t) => topicFor(config.TOPIC_PREFIX, t));
      const created = await ensureTopics(a, config, topics);
      if (exactlyOnce) created.push(...(await ensureTopics(a, { ...config, TOPIC_PARTITIONS: 1 }, [markTopic], 'compact')));
      if (created.length > 0) log.info({ topics: created }, 'topics created');
      // Connected now, so the first change does not wait for the producer's handshake (and, transactional, so a
      // zombie's transaction is fenced off before anyone reads the last mark).
      await connectedProducer();
      const metadata = await a.fetchTopicMetadata({ topics });
      const partitions = {} as Record<CapturedTable, number>;
      for (const t of metadata.topics) {
        partitions[t.name.slice(config.TOPIC_PREFIX.length + '.public.'.length) as CapturedTable] = t.partitions.length;
      }
      return partitions;
    },
    async publish(records, mark, signal) {
      if (records.length === 0) return;
      // A ChangeRecord is a kafkajs Message already (kafkajs ignores the extra `topic`): no copy per record.
      const byTopic = new Map<string, Message[]>();
      for (const r of records) {
        let list = byTopic.get(r.topic);
        if (!list) byTopic.set(r.topic, (list = []));
        list.push(r);
      }
      const batch = { acks: -1, compression: CompressionTypes.None, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) };
      try {
        const p = await connectedProducer();
        if (!exactlyOnce) {
          await p.sendBatch(batch);
          return;
        }
        const transaction = await p.transaction();
        try {
          await transaction.sendBatch(batch);
          if (mark) {
            const metadata = JSON.stringify({ scope: mark.scope, lsn: mark.position.lsn.toString(), seq: mark.position.seq });
            // `metadata` is the offset commit's own field (TxnOffsetCommit); kafkajs passes it through untyped.
            const partition = { partition: 0, offset: '0', metadata };
            await transaction.sendOffsets({ consumerGroupId: transactionalId, topics: [{ topic: markTopic, partitions: [partition] }] });
          }
          await transaction.commit();
        } catch (e) {
          await transaction.abort().catch(() => {});
          throw e;
        }
      } catch (e) {
        await dropProducer();
        const denied = refused(e);
        if (denied) throw new FleetSyncError('KAFKA_NOT_AUTHORIZED', `Kafka refused the source's producer (${denied}): grant its principal access`, { cause: e });
        const refusedSize = tooLarge(e);
        if (refusedSize) {
          // Refused before any commit: nothing of this batch is in Kafka, and the slot still holds every event of it.
          const largest = records.reduce((top, r) => (recordSize(r) > recordSize(top) ? r : top));
          const largestBytes = recordSize(largest);
          throw new FleetSyncError(
            'KAFKA_RECORD_TOO_LARGE',
            `Kafka refused ${records.length} records as too large (${refusedSize}); the largest is ${largestBytes} bytes, for ${largest.topic}: ` +
              `raise that topic's max.message.bytes (and the broker's message.max.bytes) above it, or lower CDC_MAX_BATCH_BYTES (${config.CDC_MAX_BATCH_BYTES}) ` +
              `below the topics' limit; nothing was published or confirmed past it`,
            { cause: e },
          );
        }
        if (exactlyOnce && fenced(e)) {
          throw new FleetSyncError('SOURCE_FENCED', `another source took over slot ${config.CDC_SLOT} (Kafka fenced this producer)`, { cause: e });
        }
        // A commit whose answer was lost may have landed: the mark tells (read after fencing our own past). Until
        // the broker answers, nobody knows, and a re-send could publish every event twice: keep asking.
        if (exactlyOnce && mark) {
          const landed = await markWhenAnswered(signal);
          if (landed && landed.scope === mark.scope && !positionAfter(mark.position, landed.position)) {
            log.warn({ records: records.length }, 'the transaction committed although its answer was lost');
            return;
          }
        }
        throw new FleetSyncError('KAFKA_UNAVAILABLE', `Kafka did not acknowledge ${records.length} records: ${(e as Error).message}`, { cause: e });
      }
    },
    lastMark,
    async close() {
      await producer?.disconnect().catch(() => {});
      await admin?.disconnect().catch(() => {});
      producer = null;
      admin = null;
    },
  };
}
