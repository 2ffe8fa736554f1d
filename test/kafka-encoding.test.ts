// kafkajs is patched (patches/kafkajs+2.2.4.patch) where it spent most of the source's time: grouping a batch by
// partition, and encoding each record. These check that what the patched client writes is still what Kafka reads:
// a produce request decoded with kafkajs's own (unpatched) decoders gives back every message, in order.
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

const require = createRequire(import.meta.url);

interface Message {
  key: Buffer;
  value: Buffer | null;
  headers?: Record<string, string>;
  timestamp?: number;
}
interface Decoder {
  readString(): string;
  readInt16(): number;
  readInt32(): number;
  readArray<T>(read: (d: Decoder) => T): T[];
  readBytes(): Buffer;
}
interface DecodedRecord {
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, Buffer>;
  timestamp: string;
  offset: string;
}
type Grouper = (args: { topic: string; partitionMetadata: { partitionId: number }[]; messages: Message[]; partitioner: (a: { message: Message }) => number }) => Record<string, Message[]>;
type ProduceRequest = (args: object) => { encode(): Promise<{ buffer: Buffer }> };

const groupMessagesPerPartition = require('kafkajs/src/producer/groupMessagesPerPartition.js') as Grouper;
const produceRequest = require('kafkajs/src/protocol/requests/produce/v3/request.js') as ProduceRequest;
const KafkaDecoder = require('kafkajs/src/protocol/decoder.js') as new (buffer: Buffer) => Decoder;
const decodeRecordBatch = require('kafkajs/src/protocol/recordBatch/v0/decoder.js') as (d: Decoder) => Promise<{ records: DecodedRecord[] }>;
const Encoder = require('kafkajs/src/protocol/encoder.js') as new () => { writeVarLong(v: number): { buffer: Buffer }; writeVarInt(v: number): { buffer: Buffer } };

/** Kafka's varint (zigzag, then base-128 little-endian groups), computed with BigInt as the protocol defines it. */
function referenceVarLong(value: number): Buffer {
  let v = BigInt.asUintN(64, (BigInt(value) << 1n) ^ (BigInt(value) >> 63n));
  const bytes: number[] = [];
  while (v >= 0x80n) {
    bytes.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  bytes.push(Number(v));
  return Buffer.from(bytes);
}

const message = fc.record(
  {
    key: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
    value: fc.option(fc.uint8Array({ maxLength: 2_000 }).map((b) => Buffer.from(b))),
    headers: fc.dictionary(fc.string({ minLength: 1, maxLength: 12 }), fc.string({ maxLength: 40 }), { maxKeys: 3 }),
    timestamp: fc.integer({ min: 1_600_000_000_000, max: 1_900_000_000_000 }),
  },
  { requiredKeys: ['key', 'value'] },
);

describe('kafkajs as patched', () => {
  it('writes varints and varlongs as the Kafka protocol defines them', () => {
    const edges = [0, 1, -1, 63, 64, -64, -65, 2 ** 30, -(2 ** 30) - 1, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1, 2 ** 45, Number.MAX_SAFE_INTEGER];
    for (const v of edges) expect(new Encoder().writeVarLong(v).buffer).toEqual(referenceVarLong(v));
    fc.assert(
      fc.property(fc.maxSafeInteger(), fc.integer(), (long, int) => {
        expect(new Encoder().writeVarLong(long).buffer).toEqual(referenceVarLong(long));
        expect(new Encoder().writeVarInt(int).buffer).toEqual(referenceVarLong(int));
      }),
      { numRuns: 5_000 },
    );
  });

  it('keeps every message of a batch, in order, on the partition the partitioner chose', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ key: fc.uint8Array({ minLength: 1, maxLength: 4 }).map((b) => Buffer.from(b)), value: fc.constant(null) }), { maxLength: 500 }), fc.integer({ min: 1, max: 12 }), (messages, partitions) => {
        const partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({ partitionId }));
        const grouped = groupMessagesPerPartition({ topic: 't', partitionMetadata, messages, partitioner: ({ message: m }) => m.key[0]! % partitions });
        for (let p = 0; p < partitions; p++) {
          expect(grouped[p] ?? []).toEqual(messages.filter((m) => m.key[0]! % partitions === p));
        }
      }),
      { numRuns: 500 },
    );
  });

  it('encodes a transactional produce request that decodes back to every message', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(message, { minLength: 1, maxLength: 60 }), { minLength: 1, maxLength: 4 }), async (perPartition) => {
        const request = produceRequest({
          acks: -1,
          timeout: 30_000,
          compression: 0,
          transactionalId: 'fleet-sync.source.test',
          producerId: 7,
          producerEpoch: 1,
          topicData: [{ topic: 'fleet.public.users', partitions: perPartition.map((messages, partition) => ({ partition, firstSequence: 0, messages })) }],
        });
        const d = new KafkaDecoder((await request.encode()).buffer);
        expect(d.readString()).toBe('fleet-sync.source.test');
        expect(d.readInt16()).toBe(-1);
        expect(d.readInt32()).toBe(30_000);
        const topics = d.readArray((t) => ({ name: t.readString(), partitions: t.readArray((p) => ({ partition: p.readInt32(), batch: p.readBytes() })) }));
        expect(topics.map((t) => t.name)).toEqual(['fleet.public.users']);
        const decoded = topics[0]!.partitions;
        expect(decoded.map((p) => p.partition)).toEqual(perPartition.map((_, i) => i));
        for (const [i, { batch }] of decoded.entries()) {
          const { records } = await decodeRecordBatch(new KafkaDecoder(batch));
          const sent = perPartition[i]!;
          expect(records.map((r) => r.offset)).toEqual(sent.map((_, n) => String(n)));
          expect(records.map((r) => [r.key, r.value])).toEqual(sent.map((m) => [m.key, m.value]));
          expect(records.map((r) => Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, v.toString()])))).toEqual(sent.map((m) => m.headers ?? {}));
          const times = sent.map((m) => m.timestamp).filter((t) => t !== undefined);
          if (times.length === sent.length) expect(records.map((r) => r.timestamp)).toEqual(times.map(String));
        }
      }),
      { numRuns: 200 },
    );
  });
});
