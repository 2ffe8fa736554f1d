// The applier turns desired state into call-center calls: for a set of uids it re-reads their rows, computes what
// each (project, uid) should hold, and changes only what differs. Shared by the sink and the sweep.
import type pg from 'pg';
import type { CallCenterClient } from '../callcenter/client.js';
import { FleetSyncError, isFleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { desiredGrants, grantKey, profileOf, sameRoles, splitGrantKey, type UserRow } from './desired.js';
import type { KeyedLock } from './locks.js';
import type { ParkDirectory } from './parks.js';
import { grantsByUid, recordPendingGrants, settleGrants, usersByUid } from './store.js';

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
  /** The permanent error that stopped this uid (the caller dead-letters its events). */
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

async function inParallel<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const runners = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  });
  await Promise.all(runners);
}

export function createApplier(deps: ApplierDeps): Applier {
  const { pool, client, parks, metrics } = deps;
  const log = deps.log.child({ module: 'applier' });

  const desiredFor = async (uids: string[]) => {
    const rows = await usersByUid(pool, uids);
    return { desired: desiredGrants(rows, (id) => parks.get(id)), rows };
  };

  return {
    desiredFor,
    async syncUids(uidList, options = {}) {
      const uids = [...new Set(uidList)];
      const outcomes = new Map<string, UidOutcome>(uids.map((u) => [u, { granted: 0, revoked: 0, profiles: 0 }]));
      if (uids.length === 0) return outcomes;
      return deps.locks.withKeys(uids, async () => {
        // Read under the lock: what we apply is never older than what another batch already applied.
        const { desired, rows } = await desiredFor(uids);
        const records = await grantsByUid(pool, uids);
        const recorded = new Map(records.map((g) => [grantKey(g.project_id, g.uid), g]));
        const rowsByUid = new Map<string, UserRow[]>();
        for (const r of rows) rowsByUid.set(r.yandex_uid!, [...(rowsByUid.get(r.yandex_uid!) ?? []), r]);

        interface Change {
          projectId: string;
          uid: string;
          parkId: string;
          roleIds: string[];
        }
        const changes = new Map<string, Change[]>();
        for (const key of new Set([...desired.keys(), ...recorded.keys(), ...(options.actual?.keys() ?? [])])) {
          const { projectId, uid } = splitGrantKey(key);
          if (!outcomes.has(uid)) continue;
          const want = desired.get(key) ?? [];
          const record = recorded.get(key);
          const listed = options.actual?.get(key);
          // What the call center has: the listing when we have one, else our settled record of what we gave.
          const has = listed ?? (record && !record.pending ? record.role_ids : undefined);
          if (has !== undefined && sameRoles(has, want)) continue;
          // Nothing to grant and fleet-sync never granted anything here: not ours to touch (a hand-made grant, or nobody).
          if (want.length === 0 && !record) continue;
          const parkId = rowsByUid.get(uid)?.find((r) => parks.get(r.park_id)?.project_id === projectId)?.park_id ?? record?.park_id ?? '';
          changes.set(uid, [...(changes.get(uid) ?? []), { projectId, uid, parkId, roleIds: want }]);
        }

        const grants = [...changes.values()].flat().filter((c) => c.roleIds.length > 0);
        await recordPendingGrants(pool, grants);
        const settled: { projectId: string; uid: string; revoked: boolean }[] = [];

        const reached = new Set([...desired.keys()].map((k) => splitGrantKey(k).uid));
        const profileUids = new Set([...(options.profileChanged ?? [])].filter((u) => reached.has(u)));
        const work = [...new Set([...changes.keys(), ...profileUids])];
        await inParallel(work, deps.maxInFlight, async (uid) => {
          const outcome = outcomes.get(uid)!;
          const own = (rowsByUid.get(uid) ?? []).filter((r) => parks.get(r.park_id)?.enabled);
          const profileRow = own[0] ?? rowsByUid.get(uid)?.[0];
          const putProfile = async () => {
            if (!profileRow) throw new FleetSyncError('CALL_CENTER_REJECTED', `no database row to create call-center user ${uid} from`);
            await client.putUser(uid, profileOf(profileRow), { signal: options.signal });
            outcome.profiles++;
            metrics.applies.inc({ kind: 'profile' });
          };
          try {
            if (profileUids.has(uid) && profileRow) await putProfile();
            for (const change of changes.get(uid) ?? []) {
              try {
                await client.setRoles(change.projectId, uid, change.roleIds, { signal: options.signal });
              } catch (e) {
                if (!isFleetSyncError(e, 'CALL_CENTER_USER_MISSING')) throw e;
                // The call center does not know the user yet: create it, then grant.
                await putProfile();
                await client.setRoles(change.projectId, uid, change.roleIds, { signal: options.signal });
              }
              const revoked = change.roleIds.length === 0;
              if (revoked) outcome.revoked++;
              else outcome.granted++;
              metrics.applies.inc({ kind: revoked ? 'revoke' : 'roles' });
              settled.push({ projectId: change.projectId, uid, revoked });
            }
          } catch (e) {
            if (isFleetSyncError(e) && !e.retriable) {
              outcome.error = e;
              log.warn({ uid, code: e.code, err: e.message, details: e.details }, 'call center refused a change for good');
              return;
            }
            throw e;
          }
        });
        await settleGrants(pool, settled);
        return outcomes;
      });
    },
  };
}
