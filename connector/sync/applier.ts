// The applier turns desired state into call-center calls: for a set of uids it re-reads their rows, computes what
// each (project, uid) should hold, and changes only what differs. Shared by the sink, the sweep and the replay.
//
// The rule (SPEC §8): every decision about a (project, uid) is taken under that uid's lock from state at least as
// new as what it decides.
// - Park settings are read from call_center_parks in the same statement as the uid's rows and records, after the
//   lock is taken: newer than any event being applied. No event is dropped on the word of a cache; a park that
//   has no row is off with revoke.
// - What the call center holds comes from fleet-sync's own settled record of its last call, or from a listing
//   that began after that record last changed. A listing older than the record (a call landed after it) is not
//   trusted; with neither, the call is made (setting a role set is idempotent).
// - fleet-sync remembers every (project, uid) it granted or adopted (call_center_grants) until it has taken that
//   access away, so a user, park or park row deleted since is still revoked.
//
// Who is managed (SPEC §5): in the project of an enabled park, every user of that park — any row of the park with
// a yandex_uid, whatever its role or state — holds exactly what the rules give. fleet-sync also keeps managing a
// (project, uid) it recorded until it has taken that access away, and one an event or a revocation names (a
// delete, a move out). Everyone else in a project is the call-center team's and never touched.
import type pg from 'pg';
import { capEvents, type AuditCause, type AuditEntry, type EventCause } from '../audit/trail.js';
import type { CallCenterClient } from '../callcenter/client.js';
import { FleetSyncError, isFleetSyncError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { desiredGrants, grantKey, profileOf, rolesInPark, sameRoles, splitGrantKey, type ParkSync, type UserRow } from './desired.js';
import type { KeyedLock } from './locks.js';
import { parkView, type ParkView } from './parks.js';
import { lockUids, recordPendingGrants, settleGrants, TOMBSTONE_KEEP_MS, uidState, type GrantRecord, type SettledGrant } from './store.js';
import { clearRetries, parkUids, type ParkedEvent, type ParkedUid, type RetryRow } from './work-queue.js';

/** A user row an event carried (its old or new row): the park it names is judged as the table has it now. */
export interface TouchedRow {
  parkId: string;
  uid: string;
  /** The event's commit time: a park turned off after it still settles the uid (the event was the park's). */
  commitTsMs: number | null;
}

/** What the call center held in one project, as listed, and when the listing began (the database's clock). */
export interface Listing {
  roles: ReadonlyMap<string, readonly string[]>;
  takenAtMs: number;
}

/** What a dry run would do to one (project, uid): its roles before (null: not known) and after. */
export interface PlannedChange {
  projectId: string;
  uid: string;
  parkId: string;
  rolesBefore: readonly string[] | null;
  rolesAfter: readonly string[];
  kind: 'granted' | 'changed' | 'adopted' | 'revoked';
}

/**
 * A dry run: the decisions are computed from the same reads as a real pass, and handed to `record` instead of
 * being made: no lock, no record, no call, no parking. `park` stands in for the park's row (the settings a toggle
 * would write).
 */
export interface DryRun {
  park?: ParkSync;
  record(change: PlannedChange): void;
}

export interface SyncOptions {
  /**
   * Why these uids are applied, for the audit trail: the events (per uid), the sweep run, the retry loop, the
   * replay. A uid with a parked retry taken by the retry loop gets that row's attempts and events added.
   */
  cause: AuditCause | ((uid: string) => AuditCause);
  dryRun?: DryRun;
  /** uids whose profile changed: PUT the profile before roles. */
  profileChanged?: ReadonlySet<string>;
  /**
   * What the call center held (from a listing), by grantKey: trusted over fleet-sync's record only where the
   * listing began after the record last changed.
   */
  listing?: Listing;
  /** (project, uid) keys fleet-sync manages though no row of an enabled park may show them now: a park's revocation. */
  managed?: Iterable<string>;
  /** The park whose revocation or last pass names the `managed` keys. */
  managedBy?: string;
  /**
   * The rows the events carried (old and new): each names (the park's project, uid) when the park syncs now, or
   * was turned off after the event committed: a delete, a move out, a changed uid.
   */
  touched?: readonly TouchedRow[];
  /** The events behind a uid, kept with it if it is parked (dead-lettered if the call center later refuses it for good). */
  eventsOf?: (uid: string) => ParkedEvent[];
  /** uids locked and applied at once for this call, when fewer than the applier's own chunk (ApplierDeps.lockChunk). */
  lockChunk?: number;
  /**
   * Chunks applied at once (default 1), each under its own locks and connection: a chunk is done only when its
   * slowest uid is (a backoff, a Retry-After), and the chunks beside it keep the call center busy meanwhile.
   */
  chunksInFlight?: number;
  /**
   * Attempts per call-center call, when fewer than the client's: a sweep parks a uid the call center does not take
   * at once, so it never holds a chunk of uid locks through retries and timeouts that a stream batch waits behind.
   */
  maxAttempts?: number;
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
  syncUids(uids: Iterable<string>, options: SyncOptions): Promise<Map<string, UidOutcome>>;
  /**
   * What the database says each (project, uid) of these uids should hold, keyed by grantKey, and fleet-sync's
   * records of them: read without locks, a hint for choosing which uids to apply, never a decision. `standIn`
   * replaces its park's row (a dry run's toggle).
   */
  desiredFor(uids: string[], standIn?: ParkSync): Promise<{ desired: Map<string, string[]>; rows: UserRow[]; records: GrantRecord[] }>;
}

export interface ApplierDeps {
  pool: pg.Pool;
  client: CallCenterClient;
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
  /** What fleet-sync knew the call center held (null: not known). */
  before: readonly string[] | null;
}

/** A key found in sync: recorded without a call (`member`: adopted; else a record forgotten). */
type Adoption = SettledGrant & { before: readonly string[] };

/**
 * An adoption the audit trail and a dry run tell of: a member found holding roles fleet-sync now manages. A record
 * forgotten, or a member found holding nothing, gives or takes no access: only fleet-sync's record changes.
 */
const adoptsAccess = (a: Adoption) => a.member && a.roleIds.length > 0;

/** What one chunk of uids must do, computed under their locks. */
interface Plan {
  changes: Map<string, Change[]>;
  rowsByUid: Map<string, UserRow[]>;
  profiles: Set<string>;
  /** In-sync keys whose record changes without a call: members adopted, non-members holding nothing forgotten. */
  adopted: Adoption[];
  retries: RetryRow[];
  /** Projects named for each uid by the caller or a parked retry: kept if the uid is parked again. */
  namedProjects: Map<string, Set<string>>;
  parks: ParkView;
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
 * The (project, uid) keys the events' rows name, with the park that names each: parks that sync now, parks off
 * without revoke, and parks turned off with revoke after the event committed.
 */
export function touchedKeys(touched: readonly TouchedRow[], parks: ParkView): Map<string, { parkId: string; whileOn: boolean }> {
  const keys = new Map<string, { parkId: string; whileOn: boolean }>();
  for (const t of touched) {
    const park = parks(t.parkId);
    if (!park || park.gone || !park.project_id) continue;
    // A park off without revoke is still followed for what it takes away (never for grants): a user disabled,
    // deleted or moved keeps no access it kept. Off with revoke, its sweep takes everything; an event committed by
    // the toggle's start (disabled_at, the database's clock as the commit time is) was the park's while it synced.
    const wasOn = park.disabled_at_ms !== null && (t.commitTsMs === null || t.commitTsMs <= park.disabled_at_ms);
    if (!park.enabled && park.revoke_on_disable && !wasOn) continue;
    const key = grantKey(park.project_id, t.uid);
    keys.set(key, { parkId: park.park_id, whileOn: park.enabled || wasOn || keys.get(key)?.whileOn === true });
  }
  return keys;
}

/**
 * Decides, per (project, uid), what must be written: pure over what was read under the locks. A key that is not
 * managed (a uid that is no user of the project's enabled parks, that fleet-sync does not manage and nobody named)
 * is left alone, whatever it holds.
 */
export function planChanges(input: {
  uids: ReadonlySet<string>;
  rows: readonly UserRow[];
  records: readonly GrantRecord[];
  desired: ReadonlyMap<string, string[]>;
  /** Keys named by an event or a revocation, with the park that names them ('' when none is known). */
  named: ReadonlyMap<string, string>;
  /**
   * Of `named`, keys named only by events committed after their park was turned off without revoke: such an event
   * takes away what fleet-sync kept there, and never touches a uid fleet-sync holds no record of.
   */
  namedAfterOff?: ReadonlySet<string>;
  listing?: Listing;
  parks: ParkView;
  /** The database's clock when the state was read: a listing older than a tombstone's keeping is not trusted. */
  nowMs?: number;
}): { changes: Map<string, Change[]>; adopted: Adoption[] } {
  const { desired, parks, listing } = input;
  const recorded = new Map(input.records.map((g) => [grantKey(g.project_id, g.uid), g]));
  const changes = new Map<string, Change[]>();
  const adopted: Adoption[] = [];
  const keys = new Set([...desired.keys(), ...input.named.keys(), ...(listing?.roles.keys() ?? [])]);
  for (const [key, g] of recorded) if (g.managed) keys.add(key);
  const listingUsable = listing !== undefined && (input.nowMs === undefined || input.nowMs - listing.takenAtMs < TOMBSTONE_KEEP_MS);
  for (const key of keys) {
    const { projectId, uid } = splitGrantKey(key);
    if (!input.uids.has(uid)) continue;
    const want = desired.get(key) ?? [];
    const any = recorded.get(key);
    const record = any?.managed ? any : undefined;
    const member = desired.has(key);
    const named = input.named.has(key);
    if (!member && !record && !named) continue; // not ours: the call-center team's own people
    // What the call center has: the listing where it began after fleet-sync's last call for the key settled (a
    // tombstone remembers a revocation), else fleet-sync's settled record. A pending record means a call may have
    // landed or not: neither is trusted, and the call is made.
    const listingIsNewer = listingUsable && (!any || (!any.pending && any.updated_ms < listing.takenAtMs));
    const listed = listing && listingIsNewer ? listing.roles.get(key) : undefined;
    const has = listed ?? (any && !any.pending ? any.role_ids : undefined);
    const frozen = member ? undefined : frozenPark(projectId, uid, record, input.rows, parks);
    if (frozen) {
      // A park turned off without revoke keeps, of what the uid holds in its project, what its last mapping still
      // gives the uid's rows (a remap just before the toggle counts), and grants nothing more: a key named by an
      // event or by the park's last pass loses the rest, so a user disabled, deleted or moved keeps no access.
      if (!named || (!record && input.namedAfterOff?.has(key))) continue;
      const allowed = frozenWant(uid, frozen, input.rows);
      // Not known what it holds (a call in flight or lost): what that call was to set, as far as the last mapping
      // still gives it, is set again; with nothing known of it (no record), nothing is taken on a guess.
      if (has === undefined && !any && allowed.length > 0) continue;
      const keep = (has ?? any?.role_ids ?? []).filter((r) => allowed.includes(r)).sort();
      if (has !== undefined && sameRoles(has, keep)) continue;
      changes.set(uid, [...(changes.get(uid) ?? []), { projectId, uid, parkId: frozen.park_id, roleIds: keep, member: false, before: has ?? null }]);
      continue;
    }
    const parkId =
      input.rows.find((r) => r.yandex_uid === uid && parks(r.park_id)?.enabled && parks(r.park_id)?.project_id === projectId)?.park_id ||
      any?.park_id ||
      input.named.get(key) ||
      '';
    if (has !== undefined && sameRoles(has, want)) {
      // In sync. A member fleet-sync had no record of is adopted; a record of a uid that holds nothing and is no
      // member any more is forgotten (the uid is the call-center team's again).
      if ((member && !record) || (!member && record && want.length === 0)) adopted.push({ projectId, uid, parkId, roleIds: want, member, before: has });
      continue;
    }
    changes.set(uid, [...(changes.get(uid) ?? []), { projectId, uid, parkId, roleIds: want, member, before: has ?? null }]);
  }
  return { changes, adopted };
}

/**
 * The park turned off without revoke that holds a non-member's (project, uid): the one its record names, or a park
 * of the uid's rows, when that park's project is still this one (a park remapped elsewhere keeps nothing here).
 * Undefined when no such park holds it (the ordinary rules apply).
 */
function frozenPark(projectId: string, uid: string, record: GrantRecord | undefined, rows: readonly UserRow[], parks: ParkView): ParkSync | undefined {
  const isFrozen = (p: ParkSync | undefined): p is ParkSync => Boolean(p && !p.gone && !p.enabled && !p.revoke_on_disable && p.project_id === projectId);
  if (record) {
    const byRecord = parks(record.park_id);
    return isFrozen(byRecord) ? byRecord : undefined;
  }
  for (const r of rows) {
    const p = parks(r.park_id);
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

/** The view with one park's row replaced (a dry run's toggle: the settings it would write). */
function withStandIn(view: ParkView, standIn: ParkSync | undefined): ParkView {
  return standIn ? (id) => (id === standIn.park_id ? standIn : view(id)) : view;
}

export function createApplier(deps: ApplierDeps): Applier {
  const { pool, client, metrics } = deps;
  const log = deps.log.child({ module: 'applier' });
  const lockChunk = deps.lockChunk ?? DEFAULT_LOCK_CHUNK;

  const desiredFor = async (uids: string[], standIn?: ParkSync) => {
    const { rows, records, parkRows, parkIds } = await uidState(pool, uids);
    return { desired: desiredGrants(rows, withStandIn(parkView(parkRows, parkIds), standIn)), rows, records };
  };

  const plan = async (uids: string[], named: ReadonlySet<string>, options: SyncOptions, db: pg.Pool | pg.PoolClient = pool): Promise<Plan> => {
    const inChunk = new Set(uids);
    const touched = (options.touched ?? []).filter((t) => inChunk.has(t.uid));
    // Read under the locks, parks included: the decision is never older than the events it applies.
    const { rows, records, retries, parkRows, parkIds, nowMs } = await uidState(db, uids, [...new Set(touched.map((t) => t.parkId))]);
    const parks = withStandIn(parkView(parkRows, parkIds), options.dryRun?.park);
    const desired = desiredGrants(rows, parks);
    const namedProjects = new Map<string, Set<string>>();
    const allNamed = new Map<string, string>();
    const name = (projectId: string, uid: string, parkId: string) => {
      const key = grantKey(projectId, uid);
      if (!allNamed.get(key)) allNamed.set(key, parkId);
      namedProjects.set(uid, (namedProjects.get(uid) ?? new Set()).add(projectId));
    };
    const namedAfterOff = new Set<string>();
    for (const key of named) {
      const { projectId, uid } = splitGrantKey(key);
      if (inChunk.has(uid)) name(projectId, uid, options.managedBy ?? '');
    }
    for (const [key, { parkId, whileOn }] of touchedKeys(touched, parks)) {
      const { projectId, uid } = splitGrantKey(key);
      if (!inChunk.has(uid)) continue;
      if (!whileOn && !allNamed.has(key)) namedAfterOff.add(key);
      name(projectId, uid, parkId);
    }
    for (const r of retries) {
      for (const projectId of r.projects) {
        name(projectId, r.uid, '');
        namedAfterOff.delete(grantKey(projectId, r.uid));
      }
    }
    const { changes, adopted } = planChanges({
      uids: inChunk,
      rows,
      records,
      desired,
      named: allNamed,
      namedAfterOff,
      ...(options.listing ? { listing: options.listing } : {}),
      parks,
      nowMs,
    });
    const rowsByUid = new Map<string, UserRow[]>();
    for (const r of rows) rowsByUid.set(r.yandex_uid!, [...(rowsByUid.get(r.yandex_uid!) ?? []), r]);
    const reached = new Set([...desired.keys()].map((k) => splitGrantKey(k).uid));
    const asked = new Set([...(options.profileChanged ?? []), ...retries.filter((r) => r.profile).map((r) => r.uid)]);
    const profiles = new Set([...asked].filter((u) => reached.has(u)));
    return { changes, rowsByUid, profiles, adopted, retries, namedProjects, parks };
  };

  /** A dry run's chunk: the plan, handed to the dry run, and nothing more. */
  const dryRunChunk = async (uids: string[], named: ReadonlySet<string>, options: SyncOptions, dryRun: DryRun) => {
    const { changes, adopted } = await plan(uids, named, options);
    for (const a of adopted) {
      if (adoptsAccess(a)) dryRun.record({ projectId: a.projectId, uid: a.uid, parkId: a.parkId, rolesBefore: a.before, rolesAfter: a.roleIds, kind: 'adopted' });
    }
    for (const c of [...changes.values()].flat()) {
      const kind = c.roleIds.length === 0 ? 'revoked' : (c.before?.length ?? 0) === 0 ? 'granted' : 'changed';
      dryRun.record({ projectId: c.projectId, uid: c.uid, parkId: c.parkId, rolesBefore: c.before, rolesAfter: c.roleIds, kind });
    }
  };

  /** The cause of a uid's changes, with the attempts and events of the parked row the retry loop took. */
  const causeOf = (uid: string, options: SyncOptions, retries: readonly RetryRow[]): AuditCause => {
    const cause = typeof options.cause === 'function' ? options.cause(uid) : options.cause;
    if (cause.kind !== 'retry') return cause;
    const row = retries.find((r) => r.uid === uid);
    if (!row) return cause;
    const events: EventCause[] = row.events.map(
      (e) => e.cause ?? { topic: e.topic, partition: e.partition, offset: e.offset, lsn: '', tx_id: null, commit_ts: null, op: '', park_id: null, role_id: null, user_id: null },
    );
    return { kind: 'retry', attempts: row.attempts, ...capEvents(events) };
  };

  /** One chunk under its locks: plan, record what will be granted, call, settle, park what failed for now. */
  const syncChunk = async (uids: string[], named: ReadonlySet<string>, outcomes: Map<string, UidOutcome>, options: SyncOptions) => {
    const locks = await lockUids(pool, uids);
    // Every statement of the chunk runs on the connection that holds its locks.
    const db = locks.db;
    try {
      const { changes, rowsByUid, profiles, adopted, retries, namedProjects, parks } = await plan(uids, named, options, db);
      const audit: AuditEntry[] = [];
      for (const a of adopted) {
        if (!adoptsAccess(a)) continue;
        audit.push({ projectId: a.projectId, uid: a.uid, parkId: a.parkId, action: 'adopt', rolesBefore: a.before, rolesAfter: a.roleIds, outcome: 'applied', cause: causeOf(a.uid, options, retries) });
      }
      // Every change, revocations too, is recorded pending before its call: if the call lands and the settle does
      // not (the database went away), the record must not keep claiming what the call center held before.
      await recordPendingGrants(db, [...changes.values()].flat());
      const settled: SettledGrant[] = [...adopted];
      const parked: ParkedUid[] = [];

      /** Every change of one uid: revocations first, then its profile, then grants; each refusal on its own. */
      const callOptions = { ...(options.signal ? { signal: options.signal } : {}), ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}) };
      const applyUid = async (uid: string) => {
        const outcome = outcomes.get(uid)!;
        const cause = causeOf(uid, options, retries);
        // Refused for good: the sink and the retry loop dead-letter the uid's events (the retry loop even with none).
        const refusedAs = () => ((options.eventsOf?.(uid).length ?? 0) > 0 || retries.some((r) => r.uid === uid) ? 'dead_lettered' : 'refused');
        /** A failed call: the uid is parked (for now) or refused (for good), and the trail says which. */
        const fail = (entry: Omit<AuditEntry, 'outcome' | 'cause'>) => (e: unknown) => {
          if (!isFleetSyncError(e)) throw e; // of no known kind: the whole call is redone
          audit.push({ ...entry, outcome: e.retriable ? 'parked' : refusedAs(), error: `${e.code}: ${e.message}`, cause });
          if (e.retriable) {
            outcome.parked ??= e;
            return;
          }
          outcome.error ??= e;
          log.warn({ uid, code: e.code, err: e.message, details: e.details }, 'call center refused a change for good');
        };
        const rowsOfUid = rowsByUid.get(uid) ?? [];
        const profileRow = rowsOfUid.find((r) => parks(r.park_id)?.enabled) ?? rowsOfUid[0];
        let profileSent = false;
        const profileEntry = { projectId: null, uid, parkId: profileRow?.park_id ?? '', action: 'profile' as const, rolesBefore: null, rolesAfter: null };
        const putProfile = async () => {
          if (!profileRow) throw new FleetSyncError('CALL_CENTER_REJECTED', `no database row to create call-center user ${uid} from`);
          await client.putUser(uid, profileOf(profileRow), callOptions);
          profileSent = true;
          outcome.profiles++;
          metrics.applies.inc({ kind: 'profile' });
          audit.push({ ...profileEntry, outcome: 'applied', cause });
        };
        const setRoles = async (change: Change) => {
          try {
            await client.setRoles(change.projectId, uid, change.roleIds, callOptions);
          } catch (e) {
            if (!isFleetSyncError(e, 'CALL_CENTER_USER_MISSING')) throw e;
            // The call center does not know the user: create it, then grant. A second 404 is not transient: the
            // call center refuses the grant for good (dead-lettered, never retried without end).
            const refused = (again: FleetSyncError) => new FleetSyncError('CALL_CENTER_REJECTED', `${again.message} (after the user was created)`, { details: again.details });
            if (profileSent) throw refused(e);
            await putProfile();
            await client.setRoles(change.projectId, uid, change.roleIds, callOptions).catch((again: unknown) => {
              throw isFleetSyncError(again, 'CALL_CENTER_USER_MISSING') ? refused(again) : again;
            });
          }
          const revoked = change.roleIds.length === 0;
          if (revoked) outcome.revoked++;
          else outcome.granted++;
          metrics.applies.inc({ kind: revoked ? 'revoke' : 'roles' });
          settled.push({ projectId: change.projectId, uid, parkId: change.parkId, roleIds: change.roleIds, member: change.member });
          audit.push({ ...changeEntry(change), outcome: 'applied', cause });
        };
        const changeEntry = (c: Change) => ({
          projectId: c.projectId,
          uid,
          parkId: c.parkId,
          action: c.roleIds.length === 0 ? ('revoke' as const) : ('roles' as const),
          rolesBefore: c.before,
          rolesAfter: c.roleIds,
        });
        const ordered = changes.get(uid) ?? [];
        // Revocations first, each on its own: a refusal elsewhere must never leave access in place.
        for (const change of ordered.filter((c) => c.roleIds.length === 0)) await setRoles(change).catch(fail(changeEntry(change)));
        if (profiles.has(uid) && profileRow) await putProfile().catch(fail(profileEntry));
        for (const change of ordered.filter((c) => c.roleIds.length > 0)) await setRoles(change).catch(fail(changeEntry(change)));
        if (outcome.parked) {
          const projects = new Set([...(namedProjects.get(uid) ?? []), ...ordered.map((c) => c.projectId)]);
          // A uid also refused for good has its events dead-lettered by the caller now: they are not parked too.
          const events = outcome.error ? [] : (options.eventsOf?.(uid) ?? []);
          parked.push({ uid, projects: [...projects], profile: profiles.has(uid), error: outcome.parked.message, events });
        }
      };

      try {
        await inParallel([...new Set([...changes.keys(), ...profiles])], deps.maxInFlight, applyUid);
      } finally {
        // Whatever the call center accepted is recorded, even when another uid's failure ends the call.
        await settleGrants(db, settled, audit);
      }
      // Durable before the caller moves on (commits an offset, finishes a sweep): the retry loop takes it from here.
      await parkUids(db, parked, deps.retryBackoff);
      if (parked.length > 0) log.warn({ uids: parked.length, err: parked[0]!.error }, 'call center did not take some changes: parked for a retry apart');
      // A parked uid that is now done is forgotten; one refused for good stays for the retry loop to dead-letter.
      const done: RetryRow[] = [];
      for (const r of retries) {
        const outcome = outcomes.get(r.uid)!;
        if (outcome.error) outcome.refusedRetry = r;
        else if (!outcome.parked) done.push(r);
      }
      await clearRetries(db, done.map((r) => ({ uid: r.uid, generation: r.generation })));
      if (locks.lost()) {
        throw new FleetSyncError('DATABASE_UNAVAILABLE', 'the connection holding the uid locks failed: the changes are redone under new locks');
      }
    } finally {
      await locks.release();
    }
  };

  return {
    desiredFor,
    async syncUids(uidList, options) {
      const uids = [...new Set(uidList)];
      const outcomes = new Map<string, UidOutcome>(uids.map((u) => [u, { granted: 0, revoked: 0, profiles: 0 }]));
      const named = new Set(options.managed ?? []);
      // One writer per uid: in this process (the keyed lock, no connection held while waiting), and across
      // processes (advisory locks: another sink member, the sweep, a replay). A stale read applied after a fresh
      // one would undo it. Chunks bound the locks held at once. A chunk takes its keys in sorted order, in this
      // process and then in PostgreSQL on its own connection, and whoever holds a connection has all its keys in
      // this process already: no two chunks, of one call (disjoint uids, in flight at once) or of two, wait on
      // each other in a cycle.
      const { dryRun } = options;
      await inParallel(chunks(uids, Math.min(lockChunk, options.lockChunk ?? lockChunk)), Math.max(1, options.chunksInFlight ?? 1), (chunk) =>
        // A dry run writes nothing, so it takes no lock and never waits behind the stream or a sweep.
        dryRun ? dryRunChunk(chunk, named, options, dryRun) : deps.locks.withKeys(chunk, () => syncChunk(chunk, named, outcomes, options), options.signal),
      );
      return outcomes;
    },
  };
}
