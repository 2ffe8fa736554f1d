// Runs the api: its pool and readiness probes, listening on API_HOST:API_PORT, and a graceful close.
import pg from 'pg';
import type { Config } from '../connector/config.js';
import type { Logger } from '../connector/log.js';
import { createMetrics, type Metrics } from '../connector/metrics.js';
import { buildApp } from './app.js';
import type { DryRunner } from './routes/parks.js';
import { callCenterProbe, kafkaProbe } from './readiness.js';
import type { ReadinessCheck } from './routes/health.js';

const PROBE_TIMEOUT_MS = 2_000;

export interface RunningApi {
  /** Stops accepting connections, lets in-flight requests finish, then ends the pool and the Kafka probe. */
  close(): Promise<void>;
  /** e.g. http://127.0.0.1:8080 */
  url: string;
}

export interface StartApiDeps {
  config: Config;
  log: Logger;
  metrics?: Metrics;
  /** The toggles' dry runs: the sweep, run so that it changes nothing (the command's main wires it). */
  dryRun?: DryRunner;
  /** Readiness of the stages running beside the api in one process (`all`): e.g. a source that is not streaming. */
  stageReadiness?: Record<string, ReadinessCheck>;
}

export async function startApi(deps: StartApiDeps): Promise<RunningApi> {
  const { config, log } = deps;
  const metrics = deps.metrics ?? createMetrics();
  const apiLog = log.child({ module: 'api' });
  const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: 10, connectionTimeoutMillis: 5_000 });
  // An idle client losing its connection emits here; without a listener that would crash the process.
  pool.on('error', (err) => apiLog.warn({ err }, 'idle database connection failed'));
  const kafka = kafkaProbe(config, apiLog, PROBE_TIMEOUT_MS);
  const app = await buildApp({
    ...(deps.dryRun ? { dryRun: deps.dryRun } : {}),
    config,
    pool,
    log,
    metrics,
    readiness: { kafka: () => kafka.check(), callCenter: callCenterProbe(config, PROBE_TIMEOUT_MS), ...deps.stageReadiness },
    readinessTimeoutMs: PROBE_TIMEOUT_MS + 500,
  });
  try {
    await app.listen({ host: config.API_HOST, port: config.API_PORT });
  } catch (e) {
    await app.close();
    await Promise.allSettled([pool.end(), kafka.close()]);
    throw e;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : config.API_PORT;
  const host = config.API_HOST === '0.0.0.0' || config.API_HOST === '::' ? '127.0.0.1' : config.API_HOST;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  apiLog.info({ url }, 'api listening');

  let closing: Promise<void> | undefined;
  return {
    url,
    close() {
      closing ??= (async () => {
        await app.close();
        await Promise.allSettled([pool.end(), kafka.close()]);
        apiLog.info('api closed');
      })();
      return closing;
    },
  };
}
