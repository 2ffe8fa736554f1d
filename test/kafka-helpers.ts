// Reads topics from the start into memory for assertions, decoding values with schemas/.
import { Kafka, logLevel, type Consumer } from 'kafkajs';
import { loadSchemaRegistry } from '../connector/avro/registry.js';
import { uniqueName } from './helpers.js';

export interface ReadMessage<T = Record<string, unknown>> {
  topic: string;
  partition: number;
  offset: string;
  key: Record<string, unknown> | null;
  /** null for a tombstone. */
  value: T | null;
  headers: Record<string, string>;
  /** Set when the key or value could not be decoded (then both are null): the bytes as they were. */
  raw?: { key: Buffer | null; value: Buffer | null };
}

const registry = loadSchemaRegistry();

export interface TopicReader<T = Record<string, unknown>> {
  messages: ReadMessage<T>[];
  /** What the reader ran into (crashes, group troubles), to explain a wait that timed out. */
  trouble: string[];
  /** Per topic-partition: the messages read, the next offset to read and the partition's high watermark. */
  progress(): Promise<string>;
  stop(): Promise<void>;
}

/** A consumer of its own group that collects every message of `topics` from the beginning. */
export async function readTopics<T = Record<string, unknown>>(brokers: string, topics: string[]): Promise<TopicReader<T>> {
  // Retries as often as fleet-sync's own clients (kafkajs's default backoff grows to 30 s a try): after a broker
  // restart the reader's new group waits for its coordinator to load, and should read as soon as it has.
  const kafka = new Kafka({ clientId: 'test-reader', brokers: brokers.split(','), logLevel: logLevel.NOTHING, retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 2_000 } });
  const admin = kafka.admin();
  await admin.connect();
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((t) => !existing.has(t));
  if (missing.length) await admin.createTopics({ topics: missing.map((topic) => ({ topic, numPartitions: 3 })), waitForLeaders: true });
  await admin.disconnect();
  const consumer: Consumer = kafka.consumer({ groupId: uniqueName('reader'), maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topics, fromBeginning: true });
  const messages: ReadMessage<T>[] = [];
  const trouble: string[] = [];
  consumer.on(consumer.events.CRASH, (e) => void trouble.push(`crash (restart ${e.payload.restart}): ${e.payload.error.message}`));
  consumer.on(consumer.events.GROUP_JOIN, () => void trouble.push('joined the group'));
  await consumer.run({
    eachBatch: async ({ batch }) => {
      for (const m of batch.messages) {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(m.headers ?? {})) headers[k] = String(v);
        const base = { topic: batch.topic, partition: batch.partition, offset: m.offset, headers };
        try {
          messages.push({
            ...base,
            key: m.key ? (registry.decode(m.key).value as Record<string, unknown>) : null,
            value: m.value === null ? null : (registry.decode(m.value).value as T),
          });
        } catch {
          messages.push({ ...base, key: null, value: null, raw: { key: m.key, value: m.value } });
        }
      }
    },
  });
  const progress = async () => {
    const probe = kafka.admin();
    await probe.connect();
    try {
      const lines: string[] = [];
      for (const topic of topics) {
        for (const o of await probe.fetchTopicOffsets(topic)) {
          const read = messages.filter((m) => m.topic === topic && m.partition === o.partition);
          lines.push(`${topic}[${o.partition}]: read ${read.length}, last offset read ${read.at(-1)?.offset ?? '-'}, high watermark ${o.high}`);
        }
      }
      return `${lines.join('; ')}; reader: ${trouble.join(', ') || 'no trouble'}`;
    } finally {
      await probe.disconnect();
    }
  };
  return { messages, trouble, progress, stop: () => consumer.disconnect() };
}
