// The publisher turns change events into Kafka records and ships them; kafkajs stays behind this interface
// so the client can be swapped (or made transactional) without touching the stream.
import { CompressionTypes, type Admin, type Message, type Producer } from 'kafkajs';
import type { SchemaRegistry } from '../avro/registry.js';
import type { Config } from '../config.js';
import { FleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import { createKafka } from '../kafka/client.js';
import { fastDefaultPartitioner } from '../kafka/partitioner.js';
import { CAPTURED_TABLES, topicFor, type CapturedTable, type ChangeEvent } from './events.js';

export interface ChangeRecord {
  topic: string;
  /** Set only for a truncate, which goes to every partition so it is ordered after each key's earlier changes. */
  partition?: number;
  key: Buffer;
  value: Buffer | null;
}

export interface Publisher {
  /** Creates the captured tables' topics when missing; returns their partition counts. */
  ensureTopics(): Promise<Record<CapturedTable, number>>;
  /** Resolves once Kafka acknowledged every record (acks=all); rejects with a retriable error otherwise. */
  publish(records: ChangeRecord[]): Promise<void>;
  close(): Promise<void>;
}

/** One change event → its records: the event, plus a tombstone after a delete (so compaction can forget the key). */
export function toRecords(event: ChangeEvent, registry: SchemaRegistry, prefix: string, partitions: Record<CapturedTable, number>): ChangeRecord[] {
  const topic = topicFor(prefix, event.table);
  const key = registry.encode(event.table, 'key', event.key);
  const value = registry.encode(event.table, 'value', {
    before: event.before,
    after: event.after,
    op: event.op,
    ts_ms: event.ts_ms,
    source: event.source,
  });
  if (event.op === 't') {
    return Array.from({ length: partitions[event.table] }, (_, partition) => ({ topic, partition, key, value }));
  }
  if (event.op === 'd') return [{ topic, key, value }, { topic, key, value: null }];
  return [{ topic, key, value }];
}

export function createKafkaPublisher(deps: { config: Config; log: Logger }): Publisher {
  const { config } = deps;
  const log = deps.log.child({ module: 'publisher' });
  const kafka = createKafka(config, log, '-source');
  let producer: Producer | null = null;
  let admin: Admin | null = null;

  const connectedProducer = async (): Promise<Producer> => {
    if (producer) return producer;
    const p = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      // Same partition for a key as kafkajs's DefaultPartitioner, without its 64-bit Long arithmetic.
      createPartitioner: fastDefaultPartitioner,
      retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 5_000 },
    });
    await p.connect();
    producer = p;
    return p;
  };

  return {
    async ensureTopics() {
      admin ??= kafka.admin();
      await admin.connect();
      const topics = CAPTURED_TABLES.map((t) => topicFor(config.TOPIC_PREFIX, t));
      const existing = new Set(await admin.listTopics());
      const missing = topics.filter((t) => !existing.has(t));
      const created = missing.length > 0 && await admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((topic) => ({
          topic,
          numPartitions: config.TOPIC_PARTITIONS,
          replicationFactor: config.TOPIC_REPLICATION_FACTOR,
          configEntries: [{ name: 'cleanup.policy', value: config.TOPIC_CLEANUP_POLICY }],
        })),
      });
      if (created) log.info({ topics: missing }, 'topics created');
      // Connected now, so the first change does not wait for the producer's handshake and idempotence id.
      await connectedProducer();
      const metadata = await admin.fetchTopicMetadata({ topics });
      const partitions = {} as Record<CapturedTable, number>;
      for (const t of metadata.topics) {
        partitions[t.name.slice(config.TOPIC_PREFIX.length + '.public.'.length) as CapturedTable] = t.partitions.length;
      }
      return partitions;
    },
    async publish(records) {
      if (records.length === 0) return;
      // A ChangeRecord is a kafkajs Message already (kafkajs ignores the extra `topic`): no copy per record.
      const byTopic = new Map<string, Message[]>();
      for (const r of records) {
        let list = byTopic.get(r.topic);
        if (!list) byTopic.set(r.topic, (list = []));
        list.push(r);
      }
      try {
        const p = await connectedProducer();
        await p.sendBatch({
          acks: -1,
          compression: CompressionTypes.None,
          topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
        });
      } catch (e) {
        // The producer may be wedged after a broker outage: start a fresh one for the retry.
        const stale = producer;
        producer = null;
        await stale?.disconnect().catch(() => {});
        throw new FleetSyncError('KAFKA_UNAVAILABLE', `Kafka did not acknowledge ${records.length} records: ${(e as Error).message}`, { cause: e });
      }
    },
    async close() {
      await producer?.disconnect().catch(() => {});
      await admin?.disconnect().catch(() => {});
      producer = null;
      admin = null;
    },
  };
}
