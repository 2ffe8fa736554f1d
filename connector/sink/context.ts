// What the sink, the sweep and the replay share to reach the call center: one pool, one client, the park
// directory, the applier and the reconciler, wired once.
import pg from 'pg';
import { callCenterClientDepsFromConfig, createCallCenterClient, type CallCenterClient } from '../callcenter/client.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { createReconciler, type Reconciler } from '../reconcile/sweep.js';
import { createApplier, type Applier } from './applier.js';
import { createKeyedLock } from './locks.js';
import { createParkDirectory, loadParks, type ParkDirectory } from './parks.js';

export interface SyncContext {
  pool: pg.Pool;
  client: CallCenterClient;
  parks: ParkDirectory;
  applier: Applier;
  reconciler: Reconciler;
  /** Fills the park directory from the table: for processes that do not follow the call_center_parks topic. */
  loadParks(): Promise<void>;
  close(): Promise<void>;
}

export function createSyncContext(deps: { config: Config; log: Logger; metrics: Metrics; client?: CallCenterClient }): SyncContext {
  const { config, metrics } = deps;
  // Each batch in flight (one per partition) and the sweep hold a connection for their uid locks.
  const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: Math.max(16, config.TOPIC_PARTITIONS * 2 + 4) });
  pool.on('error', (e) => deps.log.warn({ err: e.message }, 'idle database connection failed'));
  const client = deps.client ?? createCallCenterClient(callCenterClientDepsFromConfig(config, deps.log, metrics));
  const parks = createParkDirectory();
  const applier = createApplier({ pool, client, parks, locks: createKeyedLock(), log: deps.log, metrics, maxInFlight: config.SINK_MAX_IN_FLIGHT_USERS });
  const reconciler = createReconciler({ pool, client, applier, parks, log: deps.log, metrics, pageSize: config.RECONCILE_PAGE_SIZE });
  return {
    pool,
    client,
    parks,
    applier,
    reconciler,
    loadParks: () => loadParks(pool, parks),
    async close() {
      if (!deps.client) await client.close();
      await pool.end().catch(() => {});
    },
  };
}
