// Builds what a command's stages share, once: the sync context (pool, call-center client, park directory, applier)
// and the reconciler over it. The command mains, the tests' pipeline and the benchmarks wire through here.
import type { CallCenterClient } from './callcenter/client.js';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { createReconciler } from './reconcile/sweep.js';
import { createSyncContext, type SyncContext } from './sync/context.js';
import type { Reconciler } from './sync/reconciler.js';

export interface SyncStack {
  sync: SyncContext;
  reconciler: Reconciler;
  close(): Promise<void>;
}

export function createSyncStack(deps: { config: Config; log: Logger; metrics: Metrics; client?: CallCenterClient }): SyncStack {
  const sync = createSyncContext(deps);
  const reconciler = createReconciler({ ...sync, log: deps.log, metrics: deps.metrics, pageSize: deps.config.RECONCILE_PAGE_SIZE, auditRetentionDays: deps.config.AUDIT_RETENTION_DAYS });
  return { sync, reconciler, close: () => sync.close() };
}
