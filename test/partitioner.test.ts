import fc from 'fast-check';
import { Partitioners } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { fastDefaultPartitioner, murmur2 } from '../connector/kafka/partitioner.js';

const metadata = (n: number) => Array.from({ length: n }, (_, partitionId) => ({ partitionId, leader: 1, replicas: [1], isr: [1], offlineReplicas: [], partitionErrorCode: 0 }));

describe('the source partitioner', () => {
  it("matches Kafka's murmur2 test value", () => {
    expect(murmur2(Buffer.from('21'))).toBe(-973932308);
  });

  it('puts every key on the partition kafkajs (and the Java client) would', () => {
    const ours = fastDefaultPartitioner();
    const theirs = Partitioners.DefaultPartitioner();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 80 }), fc.integer({ min: 1, max: 64 }), (bytes, partitions) => {
        const args = { topic: 't', partitionMetadata: metadata(partitions), message: { key: Buffer.from(bytes), value: null } };
        expect(ours(args)).toBe(theirs(args));
      }),
      { numRuns: 5_000 },
    );
  });

  it('honours an explicit partition (a truncate goes to each one)', () => {
    expect(fastDefaultPartitioner()({ topic: 't', partitionMetadata: metadata(3), message: { key: Buffer.from('k'), value: null, partition: 2 } })).toBe(2);
  });
});
