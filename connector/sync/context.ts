// What the sink, the sweep and the replay share to reach the call center: one pool, one client and the applier
// (which reads park settings from the table under each uid's lock: there is no park cache to share). A command's main builds it once and hands it to its stages.
import pg from 'pg';
import { callCenterClientDepsFromConfig, createCallCenterClient, type CallCenterClient } from '../callcenter/client.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { createApplier, type Applier } from './applier.js';
import { createKeyedLock } from './locks.js';

/** Lock chunks of one stream batch applied at once (each holds a connection for its uid locks). */
export const BATCH_CHUNKS_IN_FLIGHT = 2;
/** Lock chunks of one retry round of parked uids applied at once. */
export const RETRY_CHUNKS_IN_FLIGHT = 4;
/** Park sweeps one sink member runs at once, and the pages each checks at once (a backfill's; the interval's is 1). */
export const SWEEP_WORKERS = 3;
export const SWEEP_PAGES_IN_FLIGHT = 4;

export interface SyncContext {
  pool: pg.Pool;
  client: CallCenterClient;
  applier: Applier;
  close(): Promise<void>;
}

export function createSyncContext(deps: { config: Config; log: Logger; metrics: Metrics; client?: CallCenterClient }): SyncContext {
  const { config, metrics } = deps;
  // Every lock chunk in flight holds a connection for its uid locks: each partition's batch, the retry round, the
  // park sweeps' pages; and a few more for the queries outside them (claims, progress, the schedule).
  const lockConnections = config.TOPIC_PARTITIONS * BATCH_CHUNKS_IN_FLIGHT + RETRY_CHUNKS_IN_FLIGHT + SWEEP_WORKERS * SWEEP_PAGES_IN_FLIGHT;
  const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: lockConnections + 6 });
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
