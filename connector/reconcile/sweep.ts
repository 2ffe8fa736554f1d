// The reconciliation sweep: per park, what the call center has against what the database says, repairing only
// the differences. It is also a park's backfill when the park is turned on. Each correction means the stream
// missed something, so it is logged as a warning and counted.
import type pg from 'pg';
import type { CallCenterClient } from '../callcenter/client.js';
import type { Logger } from '../log.js';
import { FleetSyncError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { latestToggle, pruneAudit, type AuditCause } from '../audit/trail.js';
import type { Applier, Listing, SyncOptions, UidOutcome } from '../sync/applier.js';
import { grantKey, sameRoles } from '../sync/desired.js';
import { SWEEP_PAGES_IN_FLIGHT } from '../sync/context.js';
import { readPark } from '../sync/parks.js';
import { dryRunSweep } from './dry-run.js';
import type { Reconciler, SweepCounts, SweepOptions, SweepReason } from '../sync/reconciler.js';
import { databaseNowMs, grantedUids, pruneTombstones, uidsOfPark, usersOfPark } from '../sync/store.js';
import { parksWithWork } from '../sync/work-queue.js';

export interface ReconcilerDeps {
  pool: pg.Pool;
  client: CallCenterClient;
  applier: Applier;
  log: Logger;
  metrics: Metrics;
  pageSize: number;
  /** Audit rows older than this are pruned by the interval sweep. */
  auditRetentionDays: number;
}

/** One sweep run: what it was asked with, and what every applier call of it is given. */
interface Run extends SweepOptions {
  apply: SyncOptions;
  pagesInFlight: number;
}

/** Sweeps whose writes are the work asked for (a backfill, a revocation, the state after a truncate), not drift. */
const WORK_SWEEPS = new Set<SweepReason>(['park_on', 'park_off', 'truncate']);

/**
 * Pages of a park's users checked at once by its sweep (each locks at most the applier's chunk of uids at a time):
 * a backfill, a revocation or an operator's sweep is the work asked for and goes as fast as PostgreSQL allows; the
 * interval's sweep is background work that the stream's changes must not wait behind, one page at a time.
 */
const pagesInFlight = (reason: SweepReason) => (reason === 'interval' ? 1 : SWEEP_PAGES_IN_FLIGHT);

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
  const { pool, client, applier, metrics } = deps;
  const log = deps.log.child({ module: 'reconcile' });

  const reconcilePark: Reconciler['reconcilePark'] = async (parkId, reason, options = {}) => {
    const { dryRun } = options;
    // The park as the table has it now (or as a dry run's toggle would write it); the applier reads it again under
    // each uid's lock.
    const park = dryRun ? (dryRun.park ?? (await readPark(pool, parkId))) : await readPark(pool, parkId);
    const counts = zero();
    const projectId = park?.project_id ?? '';
    // A dry run writes nothing, not even its run.
    const runId = dryRun
      ? 'dry-run'
      : (await pool.query<{ id: string }>('INSERT INTO reconcile_runs (park_id, project_id, reason) VALUES ($1, $2, $3) RETURNING id', [parkId, projectId, reason])).rows[0]!.id;
    const toggle = reason === 'park_on' || reason === 'park_off' ? await latestToggle(pool, parkId) : undefined;
    const cause: AuditCause = { kind: 'sweep', run_id: runId, reason, park_id: parkId, ...(toggle ? { toggle } : {}) };
    // One attempt per call: a uid the call center does not take is parked for the retry loop at once, so the sweep
    // never holds a chunk of uid locks through retries and timeouts that the stream's batches wait behind.
    const run: Run = { ...options, pagesInFlight: pagesInFlight(reason), apply: { cause, maxAttempts: 1, ...(options.signal ? { signal: options.signal } : {}), ...(dryRun ? { dryRun } : {}) } };
    const started = Date.now();
    const plog = log.child({ park_id: parkId, project_id: projectId, reason, run: runId });
    try {
      if (!park) {
        // The park's sync row is gone (deleted, or the table truncated): off with revoke (SPEC §5). Its project
        // is no longer known, but fleet-sync's records name the project of every grant it made or adopted.
        await revokeRecorded(parkId, counts, run);
      } else if (!park.enabled) {
        if (park.revoke_on_disable) {
          // Off with revoke: every user the park managed (its rows, adopted or granted) and every grant in its
          // project that no enabled park still earns, loses its access there. Nobody else's access is touched.
          // Asked again until none is left: the stream may have recorded one meanwhile.
          for (let round = 0; round < 5; round++) {
            options.signal?.throwIfAborted();
            // Every user of the park is decided again (a uid in two parks of one project may be recorded under the
            // other, in a project this park was mapped to before), with fleet-sync's records of the park.
            const members = await uidsOfPark(pool, parkId);
            const granted = await grantedUids(pool, { parkId, projectId });
            // What the project holds now: a member holding nothing there, and never recorded, is named for no call.
            const listing = park.project_id ? await listProject(park.project_id, run) : undefined;
            const holders = listing ? members.filter((uid) => (listing.roles.get(grantKey(park.project_id, uid))?.length ?? 0) > 0) : [];
            const managed = holders.map((uid) => grantKey(park.project_id, uid));
            const uids = [...new Set([...granted, ...members])];
            const outcomes = await applier.syncUids(uids, { managed, managedBy: parkId, ...(listing ? { listing: pick(listing, park.project_id, uids) } : {}), ...run.apply });
            tally(counts, outcomes);
            if (![...outcomes.values()].some((o) => o.revoked > 0)) break;
          }
        } else if (park.project_id) {
          // Off without revoke: the park's last pass. What it granted in its project stays, but a user disabled,
          // deleted or moved before the toggle (an event the stream may read only after it) loses what the last
          // mapping no longer gives; and what it granted in a project it was mapped to before goes.
          const granted = await grantedUids(pool, { parkId });
          const named = granted.map((uid) => grantKey(park.project_id, uid));
          // Every user of its rows is decided again too: one that is also a user of an enabled park in the project
          // holds exactly what that park gives (its record may name the other park).
          const uids = [...new Set([...granted, ...(await uidsOfPark(pool, parkId))])];
          tally(counts, await applier.syncUids(uids, { managed: named, managedBy: parkId, ...run.apply }));
        }
      } else {
        // Grants this park gave in another project first (its mapping moved): they never wait for the new project,
        // which may be down.
        const moved = [...new Set([...(await grantedUids(pool, { parkId })), ...(await uidsRecordedElsewhere(parkId, park.project_id))])];
        tally(counts, await applier.syncUids(moved, run.apply));
        await sweepEnabled(park.project_id, parkId, counts, plog, run);
      }
      if (dryRun) return counts; // what it would do is the dry run's; nothing was done
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
      if (!dryRun) await recordRun(runId, counts, (e as Error).message).catch(() => {});
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

  /**
   * Users of the park fleet-sync holds a grant for in another project than the park's: a project the park was
   * mapped to before (the record may name another park of the uid's in that project).
   */
  async function uidsRecordedElsewhere(parkId: string, projectId: string): Promise<string[]> {
    const { rows } = await pool.query<{ uid: string }>(
      `SELECT DISTINCT u.yandex_uid AS uid FROM users u JOIN call_center_grants g ON g.uid = u.yandex_uid
       WHERE u.park_id = $1 AND g.managed AND g.project_id <> $2`,
      [parkId, projectId],
    );
    return rows.map((r) => r.uid);
  }

  /**
   * A park that has no sync row any more: every uid fleet-sync recorded for it, and every user of its rows (a uid in
   * two parks of one project may be recorded under the other), is decided again without it, in every project.
   */
  async function revokeRecorded(parkId: string, counts: SweepCounts, run: Run) {
    for (let round = 0; round < 5; round++) {
      const uids = [...new Set([...(await grantedUids(pool, { parkId })), ...(await uidsOfPark(pool, parkId))])];
      const outcomes = await applier.syncUids(uids, run.apply);
      tally(counts, outcomes);
      if (![...outcomes.values()].some((o) => o.revoked > 0)) break;
    }
  }

  /** What the call center has in the project, by grantKey, and when the listing began (the database's clock). */
  async function listProject(projectId: string, options: SweepOptions): Promise<Listing & { roles: Map<string, string[]> }> {
    const takenAtMs = await databaseNowMs(pool);
    const actual = new Map<string, string[]>();
    let cursor: string | undefined;
    do {
      const page = await client.listProjectUsers(projectId, cursor === undefined ? { limit: 1000 } : { limit: 1000, cursor }, { signal: options.signal });
      for (const u of page.users) actual.set(grantKey(projectId, u.uid), u.role_ids);
      cursor = page.nextCursor;
      options.onProgress?.();
    } while (cursor);
    return { roles: actual, takenAtMs };
  }

  async function sweepEnabled(projectId: string, parkId: string, counts: SweepCounts, plog: Logger, run: Run) {
    const listing = await listProject(projectId, run);
    const actual = listing.roles;

    const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM users WHERE park_id = $1', [parkId]);
    const total = Number(rows[0]!.n);
    let afterId: string | null = null;
    let lastReport = Date.now();
    const seen = new Set<string>();
    /** One page: which of its uids drifted or are not recorded yet, and those decided again under their locks. */
    const checkPage = async (uids: string[]) => {
      const { desired, records } = await applier.desiredFor(uids, run.dryRun?.park);
      const recorded = new Set(records.filter((g) => g.managed && g.project_id === projectId).map((g) => g.uid));
      const drifted: string[] = [];
      const inSync: string[] = [];
      for (const uid of uids) {
        const key = grantKey(projectId, uid);
        if (sameRoles(desired.get(key) ?? [], actual.get(key) ?? [])) {
          counts.in_sync++;
          inSync.push(uid);
        } else drifted.push(uid);
      }
      // Users found holding exactly what the rules give, with no record yet, are adopted: from now on they are
      // managed like any other. Like a correction, that is decided again under the uid's lock, where a listing
      // older than fleet-sync's last call for the uid is not trusted (the stream may have deleted or revoked the
      // user since the listing).
      const toApply = [...drifted, ...inSync.filter((uid) => !recorded.has(uid))];
      if (toApply.length > 0) tally(counts, await applier.syncUids(toApply, { listing: pick(listing, projectId, toApply), ...run.apply }));
      run.onProgress?.();
    };
    // Pages are read in order and checked pagesInFlight at a time: a page's reads, locks and writes wait on
    // PostgreSQL. A uid on two pages (two rows of the park) is decided by each under its lock, one after the other.
    const inFlight = new Set<Promise<void>>();
    // A page that failed: no page is started after it, and the sweep fails with it once the running ones are done.
    const failures: unknown[] = [];
    try {
      for (;;) {
        // A sweep stopped (its member is stopping, or a newer request for the park supersedes it) stops between pages.
        run.signal?.throwIfAborted();
        if (failures.length > 0) break;
        const page = await usersOfPark(pool, parkId, afterId, deps.pageSize);
        if (page.length === 0) break;
        afterId = page.at(-1)!.id;
        const uids = [...new Set(page.filter((u) => u.yandex_uid).map((u) => u.yandex_uid!))];
        counts.skipped_no_uid += page.length - page.filter((u) => u.yandex_uid).length;
        counts.checked += page.length;
        for (const uid of uids) seen.add(uid);
        const work: Promise<void> = checkPage(uids)
          .catch((error: unknown) => {
            failures.push(error);
          })
          .finally(() => inFlight.delete(work));
        inFlight.add(work);
        if (inFlight.size >= run.pagesInFlight) await Promise.race(inFlight);
        if (Date.now() - lastReport > 2_000) {
          lastReport = Date.now();
          plog.info({ done: counts.checked, total, percent: Math.round((100 * counts.checked) / Math.max(total, 1)) }, 'sweep progress');
        }
      }
    } finally {
      await Promise.all(inFlight);
    }
    if (failures.length > 0) throw failures[0];
    // Holders in the project who are not (or no longer) this park's users: only those fleet-sync granted are ours.
    const others = [...actual.keys()].map((k) => k.slice(projectId.length + 1)).filter((uid) => !seen.has(uid));
    if (others.length > 0) {
      tally(counts, await applier.syncUids(others, { listing: pick(listing, projectId, others), ...run.apply }));
    }
  }

  /** Forgets what is kept only for a while: tombstones of revoked grants, and audit rows past their retention. */
  async function prune() {
    await pruneTombstones(pool);
    const pruned = await pruneAudit(pool, deps.auditRetentionDays);
    if (pruned > 0) log.info({ rows: pruned, retentionDays: deps.auditRetentionDays }, 'audit trail pruned');
  }

  return {
    reconcilePark,
    dryRunPark: (parkId, reason, park) => dryRunSweep(reconcilePark, parkId, reason, park),
    prune,
    async sweepAll(reason, options = {}) {
      await prune();
      const parks = await parksWithWork(pool);
      const results = new Map<string, SweepCounts>();
      for (const park_id of parks) {
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

/** The listing of these uids only; a uid the listing did not show holds nothing there. */
function pick(listing: Listing, projectId: string, uids: string[]): Listing {
  const roles = new Map<string, readonly string[]>();
  for (const uid of uids) roles.set(grantKey(projectId, uid), listing.roles.get(grantKey(projectId, uid)) ?? []);
  return { roles, takenAtMs: listing.takenAtMs };
}
