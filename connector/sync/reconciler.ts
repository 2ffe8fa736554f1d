// What a sweep reports and how the stages ask for one. The sweep itself is a stage (connector/reconcile); the
// sink, the replay and the api know it only through this contract.
import type { DryRun } from './applier.js';
import type { ParkSync } from './desired.js';

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
  /** Compute what the sweep would change and hand it to the dry run; change nothing (no row, no call that writes). */
  dryRun?: DryRun;
  /** Called between pages: a long sweep inside a consumer uses it to heartbeat. */
  onProgress?: () => void;
}

/** One change a dry run lists. */
export interface DryRunItem {
  uid: string;
  project_id: string;
  park_id: string;
  /** null: fleet-sync does not know what the call center holds (the call would be made all the same). */
  roles_before: string[] | null;
  roles_after: string[];
}

/** Changes a dry run lists per kind; its counts cover all. */
export const DRY_RUN_LISTED = 100;

/** What a park's sweep would do, computed by the sweep itself with nothing written and no call that writes. */
export interface DryRunReport {
  dry_run: true;
  park_id: string;
  /** The sweep it stands for: park_on, park_off, or manual (a reconcile). */
  reason: SweepReason;
  /** False when a toggle would write nothing (the park is already so): the real one starts no sweep. */
  changes_settings: boolean;
  counts: { granted: number; changed: number; adopted: number; revoked: number };
  granted: DryRunItem[];
  changed: DryRunItem[];
  adopted: DryRunItem[];
  revoked: DryRunItem[];
}

export function emptyDryRunReport(parkId: string, reason: SweepReason, changesSettings: boolean): DryRunReport {
  return { dry_run: true, park_id: parkId, reason, changes_settings: changesSettings, counts: { granted: 0, changed: 0, adopted: 0, revoked: 0 }, granted: [], changed: [], adopted: [], revoked: [] };
}

export interface Reconciler {
  reconcilePark(parkId: string, reason: SweepReason, options?: SweepOptions): Promise<SweepCounts>;
  /**
   * The park's sweep as a dry run. `park` stands in for the park's row (the settings a toggle would write);
   * without it the row is read as it is (a reconcile's dry run).
   */
  dryRunPark(parkId: string, reason: SweepReason, park?: ParkSync): Promise<DryRunReport>;
  /** Forgets what is kept only for a while (tombstones of revoked grants, audit rows past their retention). */
  prune(): Promise<void>;
  /** Every park that syncs, plus parks turned off that fleet-sync still holds grants for; prunes first. */
  sweepAll(reason: SweepReason, options?: { signal?: AbortSignal }): Promise<Map<string, SweepCounts>>;
}
