// The reconciliation sweep: per park, what the call center has against what the database says, repairing only
// the differences. It is also a park's backfill when the park is turned on. Each correction means the stream
// missed something, so it is logged as a warning and counted.
import type pg from 'pg';
import type { CallCenterClient } from '../callcenter/client.js';
import type { Logger } from '../log.js';
import { FleetSyncError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { Applier, UidOutcome } from '../sync/applier.js';
import { grantKey, sameRoles } from '../sync/desired.js';
import { loadParks, refreshPark, type ParkDirectory } from '../sync/parks.js';
import type { Reconciler, SweepCounts, SweepOptions, SweepReason } from '../sync/reconciler.js';
import { grantedUids, uidsOfPark, unrecordedUids, usersOfPark } from '../sync/store.js';

export interface ReconcilerDeps {
  pool: pg.Pool;
  client: CallCenterClient;
  applier: Applier;
  parks: ParkDirectory;
  log: Logger;
  metrics: Metrics;
  pageSize: number;
}

/** Sweeps whose writes are the work asked for (a backfill, a revocation, the state after a truncate), not drift. */
const WORK_SWEEPS = new Set<SweepReason>(['park_on', 'park_off', 'truncate']);

const zero = (): SweepCounts => ({ checked: 0, in_sync: 0, corrected_profiles: 0, corrected_grants: 0, revoked: 0, skipped_no_uid: 0, failed: 0 });

function tally(counts: SweepCounts, outcomes: Map<string, UidOutcome>): void {
  for (const o of outcomes.values()) {
    counts.corrected_grants += o.granted;
    counts.revoked += o.revoked;
    counts.corrected_profiles += o.profiles;
    // Refused for good, or parked for a retry apart: either way not done by this sweep.
    if (o.error || o.parked) counts.failed++;
  }
}

export function createReconciler(deps: ReconcilerDeps): Reconciler {
  const { pool, client, applier, parks, metrics } = deps;
  const log = deps.log.child({ module: 'reconcile' });

  const reconcilePark: Reconciler['reconcilePark'] = async (parkId, reason, options = {}) => {
    const park = await refreshPark(pool, parks, parkId);
    const counts = zero();
    const projectId = park?.project_id ?? '';
    const { rows } = await pool.query<{ id: string }>(
      'INSERT INTO reconcile_runs (park_id, project_id, reason) VALUES ($1, $2, $3) RETURNING id',
      [parkId, projectId, reason],
    );
    const runId = rows[0]!.id;
    const started = Date.now();
    const plog = log.child({ park_id: parkId, project_id: projectId, reason, run: runId });
    try {
      if (!park) throw new FleetSyncError('PARK_NOT_FOUND', `park ${parkId} has no call_center_parks row`);
      if (!park.enabled) {
        // Off with revoke: every user the park managed (its rows, adopted or granted) and every grant in its
        // project that no enabled park still earns, loses its access there. Nobody else's access is touched.
        // Asked again until none is left: the stream may have recorded one meanwhile.
        for (let round = 0; park.revoke_on_disable && round < 5; round++) {
          const members = park.project_id ? await uidsOfPark(pool, parkId) : [];
          const granted = await grantedUids(pool, { parkId, projectId });
          const managed = members.map((uid) => grantKey(park.project_id, uid));
          // What the project holds now: a member holding nothing there, and never recorded, needs nothing.
          const listed = park.project_id ? await listProject(park.project_id, options) : new Map<string, string[]>();
          const holders = members.filter((uid) => (listed.get(grantKey(park.project_id, uid))?.length ?? 0) > 0);
          const uids = [...new Set([...granted, ...holders])];
          const actual = park.project_id ? pick(listed, park.project_id, uids) : undefined;
          const outcomes = await applier.syncUids(uids, { managed, ...(actual ? { actual } : {}), signal: options.signal });
          tally(counts, outcomes);
          if (![...outcomes.values()].some((o) => o.revoked > 0)) break;
        }
        if (!park.revoke_on_disable && park.project_id) {
          // Off without revoke: the park's last pass. What it granted stays, but a user disabled, deleted or moved
          // before the toggle (an event the stream may read only after it) loses what the last mapping no longer gives.
          const granted = await grantedUids(pool, { parkId });
          const named = granted.map((uid) => grantKey(park.project_id, uid));
          tally(counts, await applier.syncUids(granted, { managed: named, signal: options.signal }));
        }
      } else {
        await sweepEnabled(park.project_id, parkId, counts, plog, options);
        // Grants this park gave in another project: its mapping moved.
        tally(counts, await applier.syncUids(await grantedUids(pool, { parkId }), { signal: options.signal }));
      }
      const corrections = counts.corrected_grants + counts.corrected_profiles + counts.revoked;
      // The sweep of a toggle or a truncate does that change's work: its writes are expected, not drift.
      const drift = WORK_SWEEPS.has(reason) ? 0 : corrections;
      if (drift > 0) {
        metrics.sweepCorrections.inc({ kind: 'grant' }, counts.corrected_grants);
        metrics.sweepCorrections.inc({ kind: 'profile' }, counts.corrected_profiles);
        metrics.sweepCorrections.inc({ kind: 'revoke' }, counts.revoked);
      }
      const message = drift > 0 ? 'sweep corrected drift' : corrections > 0 ? `sweep did the work of ${reason}` : 'sweep found everything in sync';
      plog[drift > 0 ? 'warn' : 'info']({ ...counts, durationMs: Date.now() - started }, message);
      await recordRun(runId, counts, null);
      return counts;
    } catch (e) {
      await recordRun(runId, counts, (e as Error).message).catch(() => {});
      throw e;
    }
  };

  async function recordRun(runId: string, c: SweepCounts, error: string | null) {
    await pool.query(
      `UPDATE reconcile_runs SET finished_at = now(), checked = $2, in_sync = $3, corrected_profiles = $4, corrected_grants = $5,
       revoked = $6, skipped_no_uid = $7, failed = $8, error = $9 WHERE id = $1`,
      [runId, c.checked, c.in_sync, c.corrected_profiles, c.corrected_grants, c.revoked, c.skipped_no_uid, c.failed, error],
    );
  }

  /** What the call center has in the project, by grantKey. */
  async function listProject(projectId: string, options: SweepOptions): Promise<Map<string, string[]>> {
    const actual = new Map<string, string[]>();
    let cursor: string | undefined;
    do {
      const page = await client.listProjectUsers(projectId, cursor === undefined ? { limit: 1000 } : { limit: 1000, cursor }, { signal: options.signal });
      for (const u of page.users) actual.set(grantKey(projectId, u.uid), u.role_ids);
      cursor = page.nextCursor;
      options.onProgress?.();
    } while (cursor);
    return actual;
  }

  async function sweepEnabled(projectId: string, parkId: string, counts: SweepCounts, plog: Logger, options: SweepOptions) {
    const actual = await listProject(projectId, options);

    const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM users WHERE park_id = $1', [parkId]);
    const total = Number(rows[0]!.n);
    let afterId: string | null = null;
    let lastReport = Date.now();
    const seen = new Set<string>();
    for (;;) {
      const page = await usersOfPark(pool, parkId, afterId, deps.pageSize);
      if (page.length === 0) break;
      afterId = page.at(-1)!.id;
      const uids = [...new Set(page.filter((u) => u.yandex_uid).map((u) => u.yandex_uid!))];
      counts.skipped_no_uid += page.length - page.filter((u) => u.yandex_uid).length;
      counts.checked += page.length;
      const { desired } = await applier.desiredFor(uids);
      const drifted: string[] = [];
      const inSync: string[] = [];
      for (const uid of uids) {
        seen.add(uid);
        const key = grantKey(projectId, uid);
        if (sameRoles(desired.get(key) ?? [], actual.get(key) ?? [])) {
          counts.in_sync++;
          inSync.push(uid);
        } else drifted.push(uid);
      }
      // Users found holding exactly what the rules give, with no record yet, are adopted: from now on they are
      // managed like any other. Like a correction, that is decided again under the uid's lock (the stream may have
      // deleted or revoked the user since the listing, and its record must not be written back).
      const unrecorded = new Set(await unrecordedUids(pool, projectId, inSync));
      const toApply = [...drifted, ...inSync.filter((uid) => unrecorded.has(uid))];
      if (toApply.length > 0) tally(counts, await applier.syncUids(toApply, { actual: pick(actual, projectId, toApply), signal: options.signal }));
      options.onProgress?.();
      if (Date.now() - lastReport > 2_000) {
        lastReport = Date.now();
        plog.info({ done: counts.checked, total, percent: Math.round((100 * counts.checked) / Math.max(total, 1)) }, 'sweep progress');
      }
    }
    // Holders in the project who are not (or no longer) this park's users: only those fleet-sync granted are ours.
    const others = [...actual.keys()].map((k) => k.slice(projectId.length + 1)).filter((uid) => !seen.has(uid));
    if (others.length > 0) {
      tally(counts, await applier.syncUids(others, { actual: pick(actual, projectId, others), signal: options.signal }));
    }
  }

  return {
    reconcilePark,
    async sweepAll(reason, options = {}) {
      // Every park, fresh: a uid's grants depend on all the parks its rows are in, not only the one swept.
      await loadParks(pool, parks);
      const { rows } = await pool.query<{ park_id: string }>(
        `SELECT park_id FROM call_center_parks WHERE enabled
         UNION SELECT DISTINCT g.park_id FROM call_center_grants g JOIN call_center_parks p USING (park_id) WHERE NOT p.enabled AND p.revoke_on_disable`,
      );
      const results = new Map<string, SweepCounts>();
      for (const { park_id } of rows) {
        if (options.signal?.aborted) break;
        try {
          results.set(park_id, await reconcilePark(park_id, reason, options));
        } catch (e) {
          log.error({ park_id, err: (e as Error).message }, 'sweep of a park failed');
        }
      }
      return results;
    },
  };
}

function pick(actual: Map<string, string[]>, projectId: string, uids: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const uid of uids) out.set(grantKey(projectId, uid), actual.get(grantKey(projectId, uid)) ?? []);
  return out;
}
