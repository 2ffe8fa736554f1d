// The applier turns desired state into call-center calls: for a set of uids it re-reads their rows, computes what
// each (project, uid) should hold, and changes only what differs. Shared by the sink, the sweep and the replay.
//
// Who is managed (SPEC §5): in the project of an enabled park, every user of that park — any row of the park with
// a yandex_uid, whatever its role or state — holds exactly what the rules give. fleet-sync also keeps managing a
// (project, uid) it recorded (granted or adopted) until it has taken that access away, and one an event or a
// revocation names (a delete, a move out). Everyone else in a project is the call-center team's and never touched.
import type pg from 'pg';
import type { CallCenterClient } from '../callcenter/client.js';
import { FleetSyncError, isFleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { desiredGrants, grantKey, profileOf, rolesInPark, sameRoles, splitGrantKey, type ParkSync, type UserRow } from './desired.js';
import type { KeyedLock } from './locks.js';
import { mergeParkRows, type ParkDirectory } from './parks.js';
import { lockUids, recordPendingGrants, settleGrants, uidState, usersByUid, type GrantRecord, type SettledGrant } from './store.js';
import { clearRetries, parkUids, type ParkedEvent, type ParkedUid, type RetryRow } from './work-queue.js';

export interface SyncOptions {
  /** uids whose profile changed: PUT the profile before roles. */
  profileChanged?: ReadonlySet<string>;
  /** What the call center holds now (from a listing), by grantKey; overrides fleet-sync's own record as "what it has". */
  actual?: ReadonlyMap<string, readonly string[]>;
  /**
   * (project, uid) keys fleet-sync manages though no row of an enabled park may show them now: an event's old row
   * (a delete, a move out, a changed uid), or the users of a park turned off with revoke.
   */
  managed?: Iterable<string>;
  /** The events behind a uid, kept with it if it is parked (dead-lettered if the call center later refuses it for good). */
  eventsOf?: (uid: string) => ParkedEvent[];
  /** uids locked and applied at once for this call, when fewer than the applier's own chunk (ApplierDeps.lockChunk). */
  lockChunk?: number;
  signal?: AbortSignal;
}

export interface UidOutcome {
  /** Role sets written, by kind. */
  granted: number;
  revoked: number;
  profiles: number;
  /** The first permanent error of this uid (the caller dead-letters its events); the uid's other changes were still tried. */
  error?: FleetSyncError;
  /** The call center did not take a change for now: the uid is parked in call_center_retries and retried apart. */
  parked?: FleetSyncError;
  /**
   * With `error`: the uid's parked row, left in place. The retry loop dead-letters its events before it forgets
   * it, so an event whose offset was committed when it was parked is never lost.
   */
  refusedRetry?: RetryRow;
}

export interface Applier {
  /**
   * Brings each uid's grants in every project to what the database says. A change the call center refuses for
   * now is parked durably (call_center_retries) before this resolves, so the caller may move on; a database
   * failure rejects (nothing is lost: redo the call).
   */
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
  /** Waits between the retries of a parked uid. */
  retryBackoff: { baseMs: number; maxDelayMs: number };
  /** uids locked and applied at once: each holds a slot of PostgreSQL's shared lock table while it is applied. */
  lockChunk?: number;
}

interface Change {
  projectId: string;
  uid: string;
  parkId: string;
  roleIds: string[];
  /** The uid is a user of an enabled park mapped to the project (its record stays, even with []). */
  member: boolean;
}

/** What one chunk of uids must do, computed under their locks. */
interface Plan {
  changes: Map<string, Change[]>;
  rowsByUid: Map<string, UserRow[]>;
  profiles: Set<string>;
  /** In-sync keys whose record changes without a call: members adopted, non-members holding nothing forgotten. */
  adopted: SettledGrant[];
  retries: RetryRow[];
  /** Projects named for each uid by the caller or a parked retry: kept if the uid is parked again. */
  namedProjects: Map<string, Set<string>>;
}

/** A chunk of 256 uids holds at most 256 of the lock table's slots (stock: 64 × max_connections in all). */
const DEFAULT_LOCK_CHUNK = 256;

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

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Decides, per (project, uid), what must be written: pure over what was read under the locks. A key that is not
 * managed (a uid that is no user of the project's enabled parks, that fleet-sync never recorded and nobody named)
 * is left alone, whatever it holds.
 */
export function planChanges(input: {
  uids: ReadonlySet<string>;
  rows: readonly UserRow[];
  records: readonly GrantRecord[];
  desired: ReadonlyMap<string, string[]>;
  named: ReadonlySet<string>;
  actual?: ReadonlyMap<string, readonly string[]>;
  parks: Pick<ParkDirectory, 'get'>;
}): { changes: Map<string, Change[]>; adopted: SettledGrant[] } {
  const { desired, parks } = input;
  const recorded = new Map(input.records.map((g) => [grantKey(g.project_id, g.uid), g]));
  const changes = new Map<string, Change[]>();
  const adopted: SettledGrant[] = [];
  const keys = new Set([...desired.keys(), ...recorded.keys(), ...input.named, ...(input.actual?.keys() ?? [])]);
  for (const key of keys) {
    const { projectId, uid } = splitGrantKey(key);
    if (!input.uids.has(uid)) continue;
    const want = desired.get(key) ?? [];
    const record = recorded.get(key);
    const member = desired.has(key);
    const named = input.named.has(key);
    if (!member && !record && !named) continue; // not ours: the call-center team's own people
    // What the call center has: the listing when there is one, else fleet-sync's settled record of what it gave.
    // A pending record means a call of fleet-sync's may have landed after the listing was taken: neither is trusted.
    const listed = record?.pending ? undefined : input.actual?.get(key);
    const has = listed ?? (record && !record.pending ? record.role_ids : undefined);
    const frozen = member ? undefined : frozenPark(projectId, uid, record, input.rows, parks);
    if (frozen) {
      // A park turned off without revoke keeps what it had, and grants nothing more. A key named by an event (one
      // committed while the park was on, read late) or by the park's last pass still loses what the park's last
      // mapping no longer gives: a user disabled, deleted or moved before the toggle keeps no access.
      if (!named) continue;
      const want = frozenWant(uid, frozen, input.rows);
      if (has !== undefined && sameRoles(has, want)) continue;
      if (want.length > 0 && (has === undefined || !want.every((r) => has.includes(r)))) continue;
      changes.set(uid, [...(changes.get(uid) ?? []), { projectId, uid, parkId: frozen.park_id, roleIds: want, member: false }]);
      continue;
    }
    const parkId =
      input.rows.find((r) => r.yandex_uid === uid && parks.get(r.park_id)?.enabled && parks.get(r.park_id)?.project_id === projectId)?.park_id ?? record?.park_id ?? '';
    if (has !== undefined && sameRoles(has, want)) {
      // In sync. A member fleet-sync had no record of is adopted; a record of a uid that holds nothing and is no
      // member any more is forgotten (the uid is the call-center team's again).
      if ((member && !record) || (!member && record && want.length === 0)) adopted.push({ projectId, uid, parkId, roleIds: want, member });
      continue;
    }
    changes.set(uid, [...(changes.get(uid) ?? []), { projectId, uid, parkId, roleIds: want, member }]);
  }
  return { changes, adopted };
}

/**
 * The park turned off without revoke that holds a non-member's (project, uid): the one its record names, or a park
 * of the uid's rows mapped to the project. Undefined when no such park holds it (the ordinary rules apply).
 */
function frozenPark(
  projectId: string,
  uid: string,
  record: GrantRecord | undefined,
  rows: readonly UserRow[],
  parks: Pick<ParkDirectory, 'get'>,
): ParkSync | undefined {
  const isFrozen = (p: ParkSync | undefined): p is ParkSync => Boolean(p && !p.enabled && !p.revoke_on_disable && p.project_id === projectId);
  const byRecord = record ? parks.get(record.park_id) : undefined;
  if (record && byRecord && !byRecord.enabled && !byRecord.revoke_on_disable) return byRecord;
  if (record) return undefined;
  for (const r of rows) {
    const p = parks.get(r.park_id);
    if (r.yandex_uid === uid && isFrozen(p)) return p;
  }
  return undefined;
}

/** What the uid's rows of a park turned off without revoke earn by the park's last mapping. */
function frozenWant(uid: string, park: ParkSync, rows: readonly UserRow[]): string[] {
  const asOn = { ...park, enabled: true };
  const roles = new Set(rows.filter((r) => r.yandex_uid === uid && r.park_id === park.park_id).flatMap((r) => rolesInPark(r, asOn)));
  return [...roles].sort();
}

export function createApplier(deps: ApplierDeps): Applier {
  const { pool, client, parks, metrics } = deps;
  const log = deps.log.child({ module: 'applier' });
  const lockChunk = deps.lockChunk ?? DEFAULT_LOCK_CHUNK;

  const desiredFor = async (uids: string[]) => {
    const rows = await usersByUid(pool, uids);
    return { desired: desiredGrants(rows, (id) => parks.get(id)), rows };
  };

  const plan = async (uids: string[], named: ReadonlySet<string>, options: SyncOptions): Promise<Plan> => {
    const { rows, records, retries, parkRows, parkIds } = await uidState(pool, uids);
    // The parks as the table has them now: the call_center_parks topic may not have reached the directory yet,
    // and a user's change committed after its park's must be judged by the park's new state.
    mergeParkRows(parks, parkRows, parkIds);
    const desired = desiredGrants(rows, (id) => parks.get(id));
    const namedProjects = new Map<string, Set<string>>();
    const allNamed = new Set<string>();
    const name = (projectId: string, uid: string) => {
      allNamed.add(grantKey(projectId, uid));
      namedProjects.set(uid, (namedProjects.get(uid) ?? new Set()).add(projectId));
    };
    const inChunk = new Set(uids);
    for (const key of named) {
      const { projectId, uid } = splitGrantKey(key);
      if (inChunk.has(uid)) name(projectId, uid);
    }
    for (const r of retries) for (const projectId of r.projects) name(projectId, r.uid);
    const { changes, adopted } = planChanges({ uids: inChunk, rows, records, desired, named: allNamed, ...(options.actual ? { actual: options.actual } : {}), parks });
    const rowsByUid = new Map<string, UserRow[]>();
    for (const r of rows) rowsByUid.set(r.yandex_uid!, [...(rowsByUid.get(r.yandex_uid!) ?? []), r]);
    const reached = new Set([...desired.keys()].map((k) => splitGrantKey(k).uid));
    const asked = new Set([...(options.profileChanged ?? []), ...retries.filter((r) => r.profile).map((r) => r.uid)]);
    const profiles = new Set([...asked].filter((u) => reached.has(u)));
    return { changes, rowsByUid, profiles, adopted, retries, namedProjects };
  };

  /** One chunk under its locks: plan, record what will be granted, call, settle, park what failed for now. */
  const syncChunk = async (uids: string[], named: ReadonlySet<string>, outcomes: Map<string, UidOutcome>, options: SyncOptions) => {
    const locks = await lockUids(pool, uids);
    try {
      const { changes, rowsByUid, profiles, adopted, retries, namedProjects } = await plan(uids, named, options);
      // Every change, revocations too, is recorded pending before its call: if the call lands and the settle does
      // not (the database went away), the record must not keep claiming what the call center held before.
      await recordPendingGrants(pool, [...changes.values()].flat());
      const settled: SettledGrant[] = [...adopted];
      const parked: ParkedUid[] = [];

      /** Every change of one uid: revocations first, then its profile, then grants; each refusal on its own. */
      const applyUid = async (uid: string) => {
        const outcome = outcomes.get(uid)!;
        const fail = (e: unknown) => {
          if (!isFleetSyncError(e)) throw e; // of no known kind: the whole call is redone
          if (e.retriable) {
            outcome.parked ??= e;
            return;
          }
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
          settled.push({ projectId: change.projectId, uid, parkId: change.parkId, roleIds: change.roleIds, member: change.member });
        };
        const ordered = changes.get(uid) ?? [];
        // Revocations first, each on its own: a refusal elsewhere must never leave access in place.
        for (const change of ordered.filter((c) => c.roleIds.length === 0)) await setRoles(change).catch(fail);
        if (profiles.has(uid) && profileRow) await putProfile().catch(fail);
        for (const change of ordered.filter((c) => c.roleIds.length > 0)) await setRoles(change).catch(fail);
        if (outcome.parked) {
          const projects = new Set([...(namedProjects.get(uid) ?? []), ...ordered.map((c) => c.projectId)]);
          parked.push({ uid, projects: [...projects], profile: profiles.has(uid), error: outcome.parked.message, events: options.eventsOf?.(uid) ?? [] });
        }
      };

      try {
        await inParallel([...new Set([...changes.keys(), ...profiles])], deps.maxInFlight, applyUid);
      } finally {
        // Whatever the call center accepted is recorded, even when another uid's failure ends the call.
        await settleGrants(pool, settled);
      }
      // Durable before the caller moves on (commits an offset, finishes a sweep): the retry loop takes it from here.
      await parkUids(pool, parked, deps.retryBackoff);
      if (parked.length > 0) log.warn({ uids: parked.length, err: parked[0]!.error }, 'call center did not take some changes: parked for a retry apart');
      // A parked uid that is now done is forgotten; one refused for good stays for the retry loop to dead-letter.
      const done: RetryRow[] = [];
      for (const r of retries) {
        const outcome = outcomes.get(r.uid)!;
        if (outcome.error) outcome.refusedRetry = r;
        else if (!outcome.parked) done.push(r);
      }
      await clearRetries(pool, done.map((r) => ({ uid: r.uid, generation: r.generation })));
      if (locks.lost()) {
        throw new FleetSyncError('DATABASE_UNAVAILABLE', 'the connection holding the uid locks failed: the changes are redone under new locks');
      }
    } finally {
      await locks.release();
    }
  };

  return {
    desiredFor,
    async syncUids(uidList, options = {}) {
      const uids = [...new Set(uidList)];
      const outcomes = new Map<string, UidOutcome>(uids.map((u) => [u, { granted: 0, revoked: 0, profiles: 0 }]));
      const named = new Set(options.managed ?? []);
      // One writer per uid: in this process (the keyed lock, no connection held while waiting), and across
      // processes (advisory locks: another sink member, the sweep, a replay). A stale read applied after a fresh
      // one would undo it. Chunks bound the locks held at once; each chunk is released before the next is taken,
      // so two callers never wait on each other in a cycle.
      for (const chunk of chunks(uids, Math.min(lockChunk, options.lockChunk ?? lockChunk))) {
        await deps.locks.withKeys(chunk, () => syncChunk(chunk, named, outcomes, options));
      }
      return outcomes;
    },
  };
}
