// Readiness probes of the api's neighbours: Kafka (cluster metadata) and the call center (any answer below 500).
import { Kafka, logLevel, type Admin } from 'kafkajs';
import { request } from 'undici';
import type { Config } from '../connector/config.js';
import type { Logger } from '../connector/log.js';

export interface KafkaProbe {
  check(): Promise<void>;
  close(): Promise<void>;
}

/** One admin client, connected on first use and reused; after a failure it reconnects on the next probe. */
export function kafkaProbe(config: Config, log: Logger, timeoutMs: number): KafkaProbe {
  const kafka = new Kafka({
    clientId: `${config.KAFKA_CLIENT_ID}-api`,
    brokers: config.KAFKA_BROKERS,
    connectionTimeout: timeoutMs,
    requestTimeout: timeoutMs,
    // A probe answers now: the retry belongs to whoever polls /readyz. The probe's answer already says why it failed.
    retry: { retries: 0 },
    logLevel: logLevel.NOTHING,
  });
  let admin: Admin | undefined;
  return {
    async check() {
      try {
        if (!admin) {
          admin = kafka.admin();
          await admin.connect();
        }
        await admin.describeCluster();
      } catch (e) {
        const failed = admin;
        admin = undefined;
        await failed?.disconnect().catch((err: unknown) => log.debug({ err }, 'kafka probe disconnect failed'));
        throw e;
      }
    },
    async close() {
      await admin?.disconnect();
      admin = undefined;
    },
  };
}

/** GET of a user that never exists: a 404 (or any answer below 500) proves the call center is up and answering. */
export function callCenterProbe(config: Config, timeoutMs: number): () => Promise<void> {
  const url = new URL('/v1/users/__readiness_probe__', config.CALL_CENTER_URL);
  return async () => {
    const res = await request(url, {
      method: 'GET',
      headers: { authorization: `Bearer ${config.CALL_CENTER_TOKEN}` },
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
    });
    await res.body.dump();
    if (res.statusCode >= 500) throw new Error(`call center answered ${res.statusCode}`);
  };
}
