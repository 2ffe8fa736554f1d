// Creates topics that are missing, with the configured partitions, replication factor and cleanup policy.
import type { Admin } from 'kafkajs';
import type { Config } from '../config.js';

type TopicConfig = Pick<Config, 'TOPIC_PARTITIONS' | 'TOPIC_REPLICATION_FACTOR' | 'TOPIC_CLEANUP_POLICY'>;

/** Returns the topics it created. Another process creating the same topics at the same moment is retried, not fatal. */
export async function ensureTopics(admin: Admin, config: TopicConfig, topics: string[], cleanupPolicy: string = config.TOPIC_CLEANUP_POLICY): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await createMissing(admin, config, topics, cleanupPolicy);
    } catch (e) {
      if (attempt >= 5) throw e;
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
}

async function createMissing(admin: Admin, config: TopicConfig, topics: string[], cleanupPolicy: string): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((t) => !existing.has(t));
  if (missing.length === 0) return [];
  await admin.createTopics({
    waitForLeaders: true,
    topics: missing.map((topic) => ({
      topic,
      numPartitions: config.TOPIC_PARTITIONS,
      replicationFactor: config.TOPIC_REPLICATION_FACTOR,
      configEntries: [{ name: 'cleanup.policy', value: cleanupPolicy }],
    })),
  });
  return missing;
}

export const deadLetterTopic = (prefix: string) => `${prefix}.callcenter.dlq`;
