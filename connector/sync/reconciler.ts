// What a sweep reports and how the stages ask for one. The sweep itself is a stage (connector/reconcile); the
// sink, the replay and the api know it only through this contract.

/** Why a park was swept: a backfill (park_on), a revocation (park_off), the interval, an operator, a replay, a truncate of users. */
export type SweepReason = 'park_on' | 'park_off' | 'interval' | 'manual' | 'replay' | 'truncate';

export interface SweepCounts {
  checked: number;
  in_sync: number;
  corrected_profiles: number;
  corrected_grants: number;
  revoked: number;
  skipped_no_uid: number;
  failed: number;
}

export interface SweepOptions {
  signal?: AbortSignal;
  /** Called between pages: a long sweep inside a consumer uses it to heartbeat. */
  onProgress?: () => void;
}

export interface Reconciler {
  reconcilePark(parkId: string, reason: SweepReason, options?: SweepOptions): Promise<SweepCounts>;
  /** Every park that syncs, plus parks turned off with revoke that still have grants. */
  sweepAll(reason: SweepReason, options?: { signal?: AbortSignal }): Promise<Map<string, SweepCounts>>;
}
