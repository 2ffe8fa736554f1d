// ensureTopics returns only once its topics are served: a topic another process created a moment ago on a fresh
// broker answers offset requests with a retriable NOT_LEADER for a while, which must not reach the caller.
import type { Admin } from 'kafkajs';
import { KafkaJSProtocolError } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { ensureTopics } from '../connector/kafka/topics.js';

const config = { TOPIC_PARTITIONS: 3, TOPIC_REPLICATION_FACTOR: -1, TOPIC_CLEANUP_POLICY: 'compact,delete' as const };

// kafkajs's own error for it, as its protocol layer builds it (retriable).
const notLeader = () =>
  new KafkaJSProtocolError(Object.assign(new Error('This server is not the leader for that topic-partition'), { type: 'NOT_LEADER_FOR_PARTITION', code: 6, retriable: true }));

/** A broker where the topics exist but their partitions have no leader for the first `unservedAnswers` requests. */
function brokerWithoutLeaders(existing: string[], unservedAnswers: number) {
  let asked = 0;
  const admin = {
    listTopics: async () => existing,
    createTopics: async () => true,
    fetchTopicOffsets: async (topic: string) => {
      asked++;
      if (asked <= unservedAnswers) throw notLeader();
      return [{ partition: 0, offset: '0', high: '0', low: '0', topic }];
    },
  } as unknown as Admin;
  return { admin, asked: () => asked };
}

describe('ensureTopics', () => {
  it('waits through NOT_LEADER answers for topics that exist, and then returns', async () => {
    const broker = brokerWithoutLeaders(['t.public.users', 't.public.roles'], 3);
    await expect(ensureTopics(broker.admin, config, ['t.public.users', 't.public.roles'])).resolves.toEqual([]);
    expect(broker.asked()).toBe(5);
  });
});
