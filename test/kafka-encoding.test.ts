// kafkajs is patched (patches/kafkajs+2.2.4.patch) where it spent most of the source's time: grouping a batch by
// partition, encoding each record, copying the request on its way up, and its checksum. These check that what the
// patched client writes is still what Kafka reads: a framed produce request decoded with kafkajs's own (unpatched)
// decoders gives back every message, in order, under a checksum computed bit by bit as CRC-32C defines it.
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
  readInt64(): { toString(): string };
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
type ProduceRequest = (args: object) => { apiKey: number; apiVersion: number; encode(): Promise<{ buffer: Buffer }> };
type CreateRequest = (args: { correlationId: number; clientId: string; request: ReturnType<ProduceRequest> }) => Promise<{ buffer: Buffer }>;

const groupMessagesPerPartition = require('kafkajs/src/producer/groupMessagesPerPartition.js') as Grouper;
const produceRequest = require('kafkajs/src/protocol/requests/produce/v3/request.js') as ProduceRequest;
const createRequest = require('kafkajs/src/protocol/request.js') as CreateRequest;
const crc32C = require('kafkajs/src/protocol/recordBatch/crc32C/crc32C.js') as (b: Buffer) => number;
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

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) one bit at a time, as its definition reads. */
function referenceCrc32C(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0x82f63b78 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** Encodes one produce request, framed as the connection sends it, and checks that it decodes back to `perPartition`. */
async function expectRoundTrip(perPartition: Message[][]): Promise<void> {
  const request = produceRequest({
    acks: -1,
    timeout: 30_000,
    compression: 0,
    transactionalId: 'fleet-sync.source.test',
    producerId: 7,
    producerEpoch: 1,
    topicData: [{ topic: 'fleet.public.users', partitions: perPartition.map((messages, partition) => ({ partition, firstSequence: 0, messages })) }],
  });
  // As the connection sends it: size, header, then the request (partitions over 16 KiB are appended by reference).
  const framed = (await createRequest({ correlationId: 42, clientId: 'fleet-sync-source', request })).buffer;
  const d = new KafkaDecoder(framed);
  expect(d.readInt32()).toBe(framed.length - 4);
  expect([d.readInt16(), d.readInt16(), d.readInt32(), d.readString()]).toEqual([request.apiKey, request.apiVersion, 42, 'fleet-sync-source']);
  expect(d.readString()).toBe('fleet-sync.source.test');
  expect(d.readInt16()).toBe(-1);
  expect(d.readInt32()).toBe(30_000);
  const topics = d.readArray((t) => ({ name: t.readString(), partitions: t.readArray((p) => ({ partition: p.readInt32(), batch: p.readBytes() })) }));
  expect(topics.map((t) => t.name)).toEqual(['fleet.public.users']);
  const decoded = topics[0]!.partitions;
  expect(decoded.map((p) => p.partition)).toEqual(perPartition.map((_, i) => i));
  for (const [i, { batch }] of decoded.entries()) {
    // baseOffset, batchLength, partitionLeaderEpoch, magic, then the CRC of everything after it.
    expect(batch.readUInt32BE(17)).toBe(referenceCrc32C(batch.subarray(21)));
    expect(batch.readInt32BE(8)).toBe(batch.length - 12);
    const { records } = await decodeRecordBatch(new KafkaDecoder(batch));
    const sent = perPartition[i]!;
    expect(records.map((r) => r.offset)).toEqual(sent.map((_, n) => String(n)));
    expect(records.map((r) => [r.key, r.value])).toEqual(sent.map((m) => [m.key, m.value]));
    expect(records.map((r) => Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, v.toString()])))).toEqual(sent.map((m) => m.headers ?? {}));
    const times = sent.map((m) => m.timestamp).filter((t) => t !== undefined);
    if (times.length === sent.length) expect(records.map((r) => r.timestamp)).toEqual(times.map(String));
  }
}

const message = fc.record(
  {
    key: fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
    value: fc.option(fc.uint8Array({ maxLength: 2_000 }).map((b) => Buffer.from(b))),
    // Header names as services write them: kafkajs decodes headers into a plain object, where `__proto__` is no key.
    headers: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9_.-]{0,11}$/), fc.string({ maxLength: 40 }), { maxKeys: 3 }),
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

  it('checksums record batches with CRC-32C, whatever their length and alignment', () => {
    expect(crc32C(Buffer.from('123456789'))).toBe(0xe3069283);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3_000 }), fc.nat(7), (bytes, skip) => {
        const view = Buffer.from(bytes).subarray(Math.min(skip, bytes.length));
        expect(crc32C(view)).toBe(referenceCrc32C(view));
      }),
      { numRuns: 2_000 },
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

  it('frames a transactional produce request that decodes back to every message', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(message, { minLength: 1, maxLength: 60 }), { minLength: 1, maxLength: 4 }), expectRoundTrip),
      { numRuns: 200 },
    );
  });

  it('frames partitions below, at and far above the size from which encoders are appended by reference', async () => {
    // Deterministic bytes: a record of 2,000 bytes of value is 2,048 bytes with its key and framing, about.
    const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) & 0xff));
    const records = (count: number, valueBytes: number, seed: number) =>
      Array.from({ length: count }, (_, i) => ({ key: bytes(16, seed + i), value: bytes(valueBytes, seed * 1_000 + i) }));
    const boundary = 16 * 1024;
    await expectRoundTrip([records(1, 100, 1), records(8, boundary / 8 - 90, 2), records(8, boundary / 8 - 60, 3), records(400, 2_000, 4)]);
    await expectRoundTrip([records(2_000, 300, 5)]);
    await expectRoundTrip([records(3, 10, 6), records(50, 2_000, 7), records(3, 10, 8)]);
  });
});
