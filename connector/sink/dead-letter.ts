// The dead-letter writer: an event the sink cannot apply for good (a permanent refusal of the call center, or a
// message it cannot decode) goes to `<prefix>.callcenter.dlq` as it was, with the reason in headers.
import type { Kafka, KafkaMessage, Producer } from 'kafkajs';
import { fastDefaultPartitioner } from '../kafka/partitioner.js';
import type { Metrics } from '../metrics.js';

export interface DeadLetterReason {
  code: string;
  message: string;
  attempts: number;
}

export interface DeadLetterWriter {
  connect(): Promise<void>;
  /** Resolves once the dead-letter topic has the message (acks=all): only then may its offset be committed. */
  send(message: KafkaMessage, origin: { topic: string; partition: number }, reason: DeadLetterReason): Promise<void>;
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
    async send(message, origin, reason) {
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
