// Creates topics that are missing, with the configured partitions, replication factor and cleanup policy, and
// returns once they are served.
import type { Admin } from 'kafkajs';
import type { Config } from '../config.js';
import { sleep } from '../time.js';

type TopicConfig = Pick<Config, 'TOPIC_PARTITIONS' | 'TOPIC_REPLICATION_FACTOR' | 'TOPIC_CLEANUP_POLICY'>;

/**
 * Returns the topics it created, once every topic asked for is served (its partitions answer offset requests).
 * Another process creating the same topics at the same moment is retried, not fatal.
 */
export async function ensureTopics(admin: Admin, config: TopicConfig, topics: string[], cleanupPolicy: string = config.TOPIC_CLEANUP_POLICY): Promise<string[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      const created = await createMissing(admin, config, topics, cleanupPolicy);
      await waitUntilServed(admin, topics);
      return created;
    } catch (e) {
      if (attempt >= 5) throw e;
      await sleep(200 * attempt);
    }
  }
}

/**
 * A topic that another process created a moment ago may have no partition leader yet (a fresh broker takes a while):
 * an offset request then fails with a retriable NOT_LEADER error, which would stop a sink reading where the topic ends.
 */
async function waitUntilServed(admin: Admin, topics: string[], timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const topic of topics) {
    for (;;) {
      try {
        await admin.fetchTopicOffsets(topic);
        break;
      } catch (e) {
        if (!(e as { retriable?: boolean }).retriable || Date.now() > deadline) throw e;
        await sleep(100);
      }
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
