// The applier turns desired state into call-center calls: for a set of uids it re-reads their rows, computes what
// each (project, uid) should hold, and changes only what differs. Shared by the sink, the sweep and the replay.
import type pg from 'pg';
import type { CallCenterClient } from '../callcenter/client.js';
import { FleetSyncError, isFleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { desiredGrants, grantKey, profileOf, sameRoles, splitGrantKey, type UserRow } from './desired.js';
import type { KeyedLock } from './locks.js';
import { loadParks, type ParkDirectory } from './parks.js';
import { grantsByUid, lockUids, recordPendingGrants, settleGrants, usersByUid, type SettledGrant } from './store.js';

export interface SyncOptions {
  /** uids whose profile changed: PUT the profile before roles. */
  profileChanged?: ReadonlySet<string>;
  /** What the call center holds now (from a listing), by grantKey; overrides fleet-sync's own record as "what it has". */
  actual?: ReadonlyMap<string, readonly string[]>;
  signal?: AbortSignal;
}

export interface UidOutcome {
  /** Role sets written, by kind. */
  granted: number;
  revoked: number;
  profiles: number;
  /** The first permanent error of this uid (the caller dead-letters its events); the uid's other changes were still tried. */
  error?: FleetSyncError;
}

export interface Applier {
  /** Brings each uid's grants in every project to what the database says; transient failures are retried without end. */
  syncUids(uids: Iterable<string>, options?: SyncOptions): Promise<Map<string, UidOutcome>>;
  /** What the database says each (project, uid) of these uids should hold, keyed by grantKey. */
  desiredFor(uids: string[]): Promise<{ desired: Map<string, string[]>; rows: UserRow[] }>;
}

export interface ApplierDeps {
  pool: pg.Pool;
  client: CallCenterClient;
  parks: ParkDirectory;
  locks: KeyedLock;
  log: Logger;
  metrics: Metrics;
  maxInFlight: number;
}

interface Change {
  projectId: string;
  uid: string;
  parkId: string;
  roleIds: string[];
}

/** Runs `work` over items, `limit` at a time; after a failure takes no new item, waits for the running ones, rethrows. */
async function inParallel<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | null = null;
  const runner = async () => {
    while (next < items.length && !failure) {
      try {
        await work(items[next++]!);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, runner));
  if (failure) throw (failure as { error: unknown }).error;
}

const permanent = (e: unknown): e is FleetSyncError => isFleetSyncError(e) && !e.retriable;

export function createApplier(deps: ApplierDeps): Applier {
  const { pool, client, parks, metrics } = deps;
  const log = deps.log.child({ module: 'applier' });

  const desiredFor = async (uids: string[]) => {
    const rows = await usersByUid(pool, uids);
    return { desired: desiredGrants(rows, (id) => parks.get(id)), rows };
  };

  /** What must change for these uids: the keys whose roles differ from what the call center has. */
  const plan = async (uids: string[], outcomes: Map<string, UidOutcome>, options: SyncOptions) => {
    const [rows, records] = await Promise.all([usersByUid(pool, uids), grantsByUid(pool, uids)]);
    // The parks as the table has them now: the call_center_parks topic may not have reached the directory yet,
    // and a user's change committed after its park's must be judged by the park's new state.
    await loadParks(pool, parks, [...new Set([...rows.map((r) => r.park_id), ...records.map((g) => g.park_id)])]);
    const desired = desiredGrants(rows, (id) => parks.get(id));
    const recorded = new Map(records.map((g) => [grantKey(g.project_id, g.uid), g]));
    const rowsByUid = new Map<string, UserRow[]>();
    for (const r of rows) rowsByUid.set(r.yandex_uid!, [...(rowsByUid.get(r.yandex_uid!) ?? []), r]);
    const changes = new Map<string, Change[]>();
    for (const key of new Set([...desired.keys(), ...recorded.keys(), ...(options.actual?.keys() ?? [])])) {
      const { projectId, uid } = splitGrantKey(key);
      if (!outcomes.has(uid)) continue;
      const want = desired.get(key) ?? [];
      const record = recorded.get(key);
      const listed = options.actual?.get(key);
      // What the call center has: the listing when there is one, else fleet-sync's settled record of what it gave.
      const has = listed ?? (record && !record.pending ? record.role_ids : undefined);
      if (has !== undefined && sameRoles(has, want)) continue;
      // Nothing to grant and fleet-sync never granted anything here: not ours to touch (a hand-made grant, or nobody).
      if (want.length === 0 && !record) continue;
      // A park turned off without revoke keeps what it had: only turning it off with revoke takes that away.
      const recordPark = record ? parks.get(record.park_id) : undefined;
      if (want.length === 0 && !desired.has(key) && recordPark && !recordPark.enabled && !recordPark.revoke_on_disable) continue;
      const parkId = rowsByUid.get(uid)?.find((r) => parks.get(r.park_id)?.enabled && parks.get(r.park_id)?.project_id === projectId)?.park_id ?? record?.park_id ?? '';
      changes.set(uid, [...(changes.get(uid) ?? []), { projectId, uid, parkId, roleIds: want }]);
    }
    const reached = new Set([...desired.keys()].map((k) => splitGrantKey(k).uid));
    const profiles = new Set([...(options.profileChanged ?? [])].filter((u) => reached.has(u)));
    return { changes, rowsByUid, profiles };
  };

  return {
    desiredFor,
    async syncUids(uidList, options = {}) {
      const uids = [...new Set(uidList)];
      const outcomes = new Map<string, UidOutcome>(uids.map((u) => [u, { granted: 0, revoked: 0, profiles: 0 }]));
      if (uids.length === 0) return outcomes;
      // One writer per uid: in this process (the keyed lock, no connection held while waiting), and across
      // processes (advisory locks: another sink member, the sweep, a replay). A stale read applied after a fresh
      // one would undo it.
      return deps.locks.withKeys(uids, async () => {
        const unlock = await lockUids(pool, uids);
        try {
          const { changes, rowsByUid, profiles } = await plan(uids, outcomes, options);
          await recordPendingGrants(pool, [...changes.values()].flat().filter((c) => c.roleIds.length > 0));
          const settled: SettledGrant[] = [];
          try {
            await inParallel([...new Set([...changes.keys(), ...profiles])], deps.maxInFlight, async (uid) => {
              const outcome = outcomes.get(uid)!;
              const fail = (e: unknown) => {
                if (!permanent(e)) throw e;
                outcome.error ??= e;
                log.warn({ uid, code: e.code, err: e.message, details: e.details }, 'call center refused a change for good');
              };
              const rowsOfUid = rowsByUid.get(uid) ?? [];
              const profileRow = rowsOfUid.find((r) => parks.get(r.park_id)?.enabled) ?? rowsOfUid[0];
              let profileSent = false;
              const putProfile = async () => {
                if (!profileRow) throw new FleetSyncError('CALL_CENTER_REJECTED', `no database row to create call-center user ${uid} from`);
                await client.putUser(uid, profileOf(profileRow), { signal: options.signal });
                profileSent = true;
                outcome.profiles++;
                metrics.applies.inc({ kind: 'profile' });
              };
              const setRoles = async (change: Change) => {
                try {
                  await client.setRoles(change.projectId, uid, change.roleIds, { signal: options.signal });
                } catch (e) {
                  if (!isFleetSyncError(e, 'CALL_CENTER_USER_MISSING')) throw e;
                  // The call center does not know the user: create it, then grant. A second 404 is not transient.
                  if (profileSent) throw new FleetSyncError('CALL_CENTER_REJECTED', e.message, { details: e.details });
                  await putProfile();
                  await client.setRoles(change.projectId, uid, change.roleIds, { signal: options.signal });
                }
                const revoked = change.roleIds.length === 0;
                if (revoked) outcome.revoked++;
                else outcome.granted++;
                metrics.applies.inc({ kind: revoked ? 'revoke' : 'roles' });
                settled.push({ projectId: change.projectId, uid, parkId: change.parkId, roleIds: change.roleIds });
              };
              // Revocations first, each on its own: a refusal elsewhere must never leave access in place.
              const ordered = [...(changes.get(uid) ?? [])].sort((a, b) => a.roleIds.length - b.roleIds.length);
              for (const change of ordered.filter((c) => c.roleIds.length === 0)) await setRoles(change).catch(fail);
              if (profiles.has(uid) && profileRow) await putProfile().catch(fail);
              for (const change of ordered.filter((c) => c.roleIds.length > 0)) await setRoles(change).catch(fail);
            });
          } finally {
            // Whatever the call center accepted is recorded, even when another uid's failure ends the batch.
            await settleGrants(pool, settled);
          }
          return outcomes;
        } finally {
          await unlock();
        }
      });
    },
  };
}
