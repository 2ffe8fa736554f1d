// A dry run of a park's sweep: what it would grant, change, adopt and revoke, computed by the sweep itself from
// the database and the call center's listing, with nothing written and no call that writes. The api's toggles
// (`dry_run: true`) and `fleet-sync reconcile --park P --dry-run` answer with it.
import type { PlannedChange } from '../sync/applier.js';
import type { ParkSync } from '../sync/desired.js';
import { DRY_RUN_LISTED, emptyDryRunReport, type DryRunReport, type Reconciler, type SweepReason } from '../sync/reconciler.js';

const byUidThenProject = (a: PlannedChange, b: PlannedChange) =>
  a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : a.projectId < b.projectId ? -1 : a.projectId > b.projectId ? 1 : 0;

export async function dryRunSweep(reconcilePark: Reconciler['reconcilePark'], parkId: string, reason: SweepReason, park?: ParkSync): Promise<DryRunReport> {
  // A (project, uid) is decided once by the real sweep too: its first pass makes the call, a later one finds it in
  // sync. The first plan of a key stands.
  const planned = new Map<string, PlannedChange>();
  await reconcilePark(parkId, reason, {
    dryRun: {
      ...(park ? { park } : {}),
      record(change) {
        const key = `${change.projectId}\u0000${change.uid}`;
        if (!planned.has(key)) planned.set(key, change);
      },
    },
  });
  const report = emptyDryRunReport(parkId, reason, true);
  for (const c of [...planned.values()].sort(byUidThenProject)) {
    report.counts[c.kind]++;
    const list = report[c.kind];
    if (list.length < DRY_RUN_LISTED) {
      list.push({ uid: c.uid, project_id: c.projectId, park_id: c.parkId, roles_before: c.rolesBefore ? [...c.rolesBefore].sort() : null, roles_after: [...c.rolesAfter].sort() });
    }
  }
  return report;
}
