// The dead-letter writer: an event the sink cannot apply for good (a permanent refusal of the call center, or a
// message it cannot decode) goes to `<prefix>.callcenter.dlq` as it was, with the reason in headers.
import type { Kafka, KafkaMessage, Producer } from 'kafkajs';
import { fastDefaultPartitioner } from '../kafka/partitioner.js';
import type { ParkedEvent } from '../sync/work-queue.js';
import type { Metrics } from '../metrics.js';

export interface DeadLetterReason {
  code: string;
  message: string;
  attempts: number;
}

/** What the writer needs of a message: a consumed one, or one kept with a parked uid. */
export type DeadMessage = Pick<KafkaMessage, 'key' | 'value' | 'headers' | 'offset'>;

export interface DeadLetterWriter {
  connect(): Promise<void>;
  /**
   * Resolves once the dead-letter topic has the message (acks=all): only then may its offset be committed. `extra`
   * headers add what the message does not say itself (the uid and projects of a parked change).
   */
  send(message: DeadMessage, origin: { topic: string; partition: number }, reason: DeadLetterReason, extra?: Record<string, string>): Promise<void>;
  close(): Promise<void>;
}

export function createDeadLetterWriter(deps: { kafka: Kafka; topic: string; metrics: Metrics }): DeadLetterWriter {
  let producer: Producer | null = null;
  return {
    async connect() {
      const p = deps.kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: fastDefaultPartitioner });
      await p.connect();
      producer = p;
    },
    async send(message, origin, reason, extra = {}) {
      if (!producer) throw new Error('dead-letter writer used before connect()');
      const headers: Record<string, string | Buffer> = {};
      for (const [k, v] of Object.entries(message.headers ?? {})) if (v !== undefined) headers[k] = Array.isArray(v) ? String(v[0]) : (v as Buffer | string);
      await producer.send({
        topic: deps.topic,
        acks: -1,
        messages: [
          {
            key: message.key,
            value: message.value,
            headers: {
              ...headers,
              'fleet-sync.error.code': reason.code,
              'fleet-sync.error.message': reason.message,
              'fleet-sync.attempts': String(reason.attempts),
              'fleet-sync.original.topic': origin.topic,
              'fleet-sync.original.partition': String(origin.partition),
              'fleet-sync.original.offset': message.offset,
              'fleet-sync.failed.at': new Date().toISOString(),
              ...extra,
            },
          },
        ],
      });
      deps.metrics.deadLetters.inc({ topic: origin.topic });
    },
    async close() {
      await producer?.disconnect().catch(() => {});
      producer = null;
    },
  };
}

/** A consumed message as it is kept with a parked uid. */
export function parkedEvent(message: KafkaMessage, origin: { topic: string; partition: number }): ParkedEvent {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(message.headers ?? {})) {
    const one = Array.isArray(v) ? v[0] : v;
    if (one !== undefined) headers[k] = Buffer.from(one).toString('base64');
  }
  return {
    topic: origin.topic,
    partition: origin.partition,
    offset: message.offset,
    key: message.key ? message.key.toString('base64') : null,
    value: message.value ? message.value.toString('base64') : null,
    headers,
  };
}

/** A kept event as the writer sends it: its own bytes, as they were on their topic. */
export function fromParkedEvent(event: ParkedEvent): DeadMessage {
  const headers: Record<string, Buffer> = {};
  for (const [k, v] of Object.entries(event.headers)) headers[k] = Buffer.from(v, 'base64');
  return {
    key: event.key === null ? null : Buffer.from(event.key, 'base64'),
    value: event.value === null ? null : Buffer.from(event.value, 'base64'),
    headers,
    offset: event.offset,
  };
}
