// What the sink, the sweep and the replay share to reach the call center: one pool, one client and the applier
// (which reads park settings from the table under each uid's lock: there is no park cache to share). A command's main builds it once and hands it to its stages.
import pg from 'pg';
import { callCenterClientDepsFromConfig, createCallCenterClient, type CallCenterClient } from '../callcenter/client.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { createApplier, type Applier } from './applier.js';
import { createKeyedLock } from './locks.js';

export interface SyncContext {
  pool: pg.Pool;
  client: CallCenterClient;
  applier: Applier;
  close(): Promise<void>;
}

export function createSyncContext(deps: { config: Config; log: Logger; metrics: Metrics; client?: CallCenterClient }): SyncContext {
  const { config, metrics } = deps;
  // Each batch in flight (one per partition), each park sweep running and the retry loop hold a connection for their uid locks.
  const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: Math.max(16, config.TOPIC_PARTITIONS * 2 + 10) });
  pool.on('error', (e) => deps.log.warn({ err: e.message }, 'idle database connection failed'));
  const client = deps.client ?? createCallCenterClient(callCenterClientDepsFromConfig(config, deps.log, metrics));
  const applier = createApplier({
    pool,
    client,
    locks: createKeyedLock(),
    log: deps.log,
    metrics,
    maxInFlight: config.SINK_MAX_IN_FLIGHT_USERS,
    retryBackoff: { baseMs: config.CALL_CENTER_RETRY_BASE_MS, maxDelayMs: config.SINK_RETRY_MAX_DELAY_MS },
  });
  return {
    pool,
    client,
    applier,
    async close() {
      if (!deps.client) await client.close();
      await pool.end().catch(() => {});
    },
  };
}
