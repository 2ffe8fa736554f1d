// The one place kafkajs is configured: broker list, client id, and its log lines routed into pino.
import { Kafka, logLevel, type LogEntry } from 'kafkajs';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';

const LEVELS: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

/** kafkajs's retries: how many, and how far apart (ms). */
export type KafkaRetry = { retries: number; initialRetryTime: number; maxRetryTime: number };

// Attempts at most a second apart (as the Java client's reconnect and retry backoffs): a broker back from a restart
// is used within a second, not after a wait grown to 5 s. About as long in all (≈5 s) as before.
const RETRY: KafkaRetry = { retries: 8, initialRetryTime: 100, maxRetryTime: 1_000 };

/** `retry` replaces the default retries of everything the client does (its connections and metadata included). */
export function createKafka(config: Pick<Config, 'KAFKA_BROKERS' | 'KAFKA_CLIENT_ID'>, log: Logger, clientSuffix = '', retry: KafkaRetry = RETRY): Kafka {
  const kafkaLog = log.child({ module: 'kafkajs' });
  return new Kafka({
    clientId: `${config.KAFKA_CLIENT_ID}${clientSuffix}`,
    brokers: config.KAFKA_BROKERS,
    connectionTimeout: 3_000,
    requestTimeout: 30_000,
    retry,
    // kafkajs logs retriable hiccups at ERROR; they are warnings to an operator while we retry.
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ level, log: entry }: LogEntry) => {
        const { message, ...fields } = entry;
        // The source re-sends a batch itself after the producer gives up, so this warning is noise to an operator.
        if (message.startsWith('Limiting retries for the idempotent producer')) return kafkaLog.debug(fields, message);
        // A transaction begun while the broker still writes the previous one's markers is retried at once: routine.
        if (String(fields.error ?? message).includes('another concurrent operation on the same transaction')) return kafkaLog.debug(fields, message);
        kafkaLog[level === logLevel.ERROR ? 'warn' : (LEVELS[level] ?? 'info')](fields, message);
      },
  });
}
