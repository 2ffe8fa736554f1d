// The SQL of access sync: user rows by uid, fleet-sync's grant records, uid locks, per-park progress. One query a
// function. Work kept apart (parked uids, park sweeps) is in work-queue.ts.
import type pg from 'pg';
import { auditPayload, insertAuditSql, type AuditEntry } from '../audit/trail.js';
import type { UserRow } from './desired.js';
import type { RetryRow } from './work-queue.js';

const USER_COLUMNS = 'id::text, park_id, yandex_uid, login, name, phone, email, role_id, is_enabled, is_yandex_team';

export async function usersByUid(db: pg.Pool | pg.PoolClient, uids: string[]): Promise<UserRow[]> {
  if (uids.length === 0) return [];
  const { rows } = await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE yandex_uid = ANY($1::text[])`, [uids]);
  return rows;
}

/** What the applier reads of a chunk of uids, in one round trip. */
export interface UidState {
  rows: UserRow[];
  records: GrantRecord[];
  retries: RetryRow[];
  /** The call_center_parks rows of every park the rows, records and `alsoParks` name, and those ids. */
  parkRows: Record<string, unknown>[];
  parkIds: string[];
  /** The database's clock at the read (ms). */
  nowMs: number;
}

/**
 * The uids' user rows, grant records and parked retries, with the parks they name (and `alsoParks`: the parks of
 * the events being applied), as one statement, read under the uids' locks: every decision about these uids is
 * taken from it. Four round trips would cost the sink more than the work they feed.
 */
export async function uidState(db: pg.Pool | pg.PoolClient, uids: string[], alsoParks: string[] = []): Promise<UidState> {
  if (uids.length === 0) return { rows: [], records: [], retries: [], parkRows: [], parkIds: [], nowMs: Date.now() };
  const { rows } = await db.query<{ users: UserRow[]; grants: GrantRecord[]; retries: RetryRow[]; parks: Record<string, unknown>[]; park_ids: string[]; now_ms: number }>(
    `WITH u AS (SELECT ${USER_COLUMNS} FROM users WHERE yandex_uid = ANY($1::text[])),
          g AS (SELECT project_id, uid, park_id, role_ids, pending, managed, (extract(epoch FROM updated_at) * 1000)::float8 AS updated_ms
                FROM call_center_grants WHERE uid = ANY($1::text[])),
          r AS (SELECT uid, projects, profile, generation::text AS generation, attempts, events, last_error FROM call_center_retries WHERE uid = ANY($1::text[])),
          ids AS (SELECT park_id FROM u UNION SELECT park_id FROM g UNION SELECT unnest($2::text[]))
     SELECT (SELECT coalesce(json_agg(u), '[]') FROM u) AS users,
            (SELECT coalesce(json_agg(g), '[]') FROM g) AS grants,
            (SELECT coalesce(json_agg(r), '[]') FROM r) AS retries,
            (SELECT coalesce(json_agg(p), '[]') FROM call_center_parks p WHERE p.park_id IN (SELECT park_id FROM ids)) AS parks,
            (SELECT coalesce(json_agg(park_id), '[]') FROM ids) AS park_ids,
            (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms`,
    [uids, alsoParks],
  );
  const row = rows[0]!;
  return { rows: row.users, records: row.grants, retries: row.retries, parkRows: row.parks, parkIds: row.park_ids, nowMs: row.now_ms };
}

export const USERS_OF_PARK_SQL = `SELECT ${USER_COLUMNS} FROM users WHERE park_id = $1 AND ($2::uuid IS NULL OR users.id > $2::uuid) ORDER BY users.id LIMIT $3`;

/**
 * One page of a park's users in id order (keyset), for the sweep: a range of the (park_id, id) index. Ordered by
 * the column, not by the text `id` the page returns (that order would sort the park's every row for each page).
 */
export async function usersOfPark(db: pg.Pool, parkId: string, afterId: string | null, limit: number): Promise<UserRow[]> {
  const { rows } = await db.query<UserRow>(USERS_OF_PARK_SQL, [parkId, afterId, limit]);
  return rows;
}

export interface GrantRecord {
  project_id: string;
  uid: string;
  park_id: string;
  role_ids: string[];
  pending: boolean;
  /**
   * False for a tombstone: fleet-sync took this (project, uid)'s access away and no longer manages it. Kept for a
   * while so that a call-center listing taken before that revocation is known to be older than it.
   */
  managed: boolean;
  /** When the record last changed (the database's clock, ms): a listing taken before it is older than the record. */
  updated_ms: number;
}

/** uids fleet-sync granted something to: all, or those of a park or of a project (either matches). */
export async function grantedUids(db: pg.Pool, where: { parkId?: string; projectId?: string } = {}): Promise<string[]> {
  const all = where.parkId === undefined && where.projectId === undefined;
  const { rows } = await db.query<{ uid: string }>(
    `SELECT DISTINCT uid FROM call_center_grants WHERE managed AND ($3 OR park_id = $1 OR project_id = $2)`,
    [where.parkId ?? null, where.projectId ?? null, all],
  );
  return rows.map((r) => r.uid);
}

/**
 * Written before the call: a crash after the call can then never leave a grant fleet-sync does not know it made,
 * nor a record that claims what the call center held before a revocation.
 */
export async function recordPendingGrants(db: pg.Pool | pg.PoolClient, grants: { projectId: string; uid: string; parkId: string; roleIds: string[] }[]): Promise<void> {
  if (grants.length === 0) return;
  await db.query(
    `INSERT INTO call_center_grants (project_id, uid, park_id, role_ids, pending, managed)
     SELECT g.project_id, g.uid, g.park_id, ARRAY(SELECT jsonb_array_elements_text(g.role_ids)), true, true
     FROM jsonb_to_recordset($1::jsonb) AS g(project_id text, uid text, park_id text, role_ids jsonb)
     ON CONFLICT (project_id, uid) DO UPDATE
       SET park_id = EXCLUDED.park_id, role_ids = EXCLUDED.role_ids, pending = true, managed = true, updated_at = clock_timestamp()`,
    [JSON.stringify(grants.map((g) => ({ project_id: g.projectId, uid: g.uid, park_id: g.parkId, role_ids: g.roleIds })))],
  );
}

export interface SettledGrant {
  projectId: string;
  uid: string;
  parkId: string;
  /** What the call center now holds from fleet-sync. */
  roleIds: string[];
  /**
   * The uid is a user of an enabled park mapped to the project: its record stays (even with []) so that the
   * uid stays managed. A revoked uid that is no such user is forgotten (the call-center team's to manage again):
   * its record stays a while as a tombstone (managed false, no roles).
   */
  member: boolean;
}

/**
 * After the call center accepted: an upsert, so a set that reached the call center always has its record. The audit
 * rows of the same calls (and of changes parked or refused on the way) are written by the same statement: the
 * trail and the records never disagree.
 */
export async function settleGrants(db: pg.Pool | pg.PoolClient, settled: SettledGrant[], audit: readonly AuditEntry[] = []): Promise<void> {
  if (settled.length === 0 && audit.length === 0) return;
  const payload = JSON.stringify(settled.map((s) => ({ project_id: s.projectId, uid: s.uid, park_id: s.parkId, role_ids: s.roleIds, keep: s.member || s.roleIds.length > 0 })));
  await db.query(
    `WITH settled AS (
       INSERT INTO call_center_grants (project_id, uid, park_id, role_ids, pending, managed)
       SELECT s.project_id, s.uid, s.park_id, ARRAY(SELECT jsonb_array_elements_text(s.role_ids)), false, s.keep
       FROM jsonb_to_recordset($1::jsonb) AS s(project_id text, uid text, park_id text, role_ids jsonb, keep boolean)
       ON CONFLICT (project_id, uid) DO UPDATE
         SET park_id = EXCLUDED.park_id, role_ids = EXCLUDED.role_ids, pending = false, managed = EXCLUDED.managed, updated_at = clock_timestamp()
       RETURNING 1),
     audited AS (${insertAuditSql('$2')} RETURNING 1)
     SELECT (SELECT count(*) FROM settled) AS settled, (SELECT count(*) FROM audited) AS audited`,
    [payload, auditPayload(audit)],
  );
}

/** The database's clock now (ms): a call-center listing is as old as the moment it started. */
export async function databaseNowMs(db: pg.Pool | pg.PoolClient): Promise<number> {
  const { rows } = await db.query<{ ms: number }>('SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS ms');
  return rows[0]!.ms;
}

/** How long a tombstone is kept; a listing older than this is never trusted (the applier asks for a fresh one). */
export const TOMBSTONE_KEEP_MS = 2 * 60 * 60 * 1000;

/** Forgets tombstones older than TOMBSTONE_KEEP_MS, a bounded number at a time. */
export async function pruneTombstones(db: pg.Pool): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM call_center_grants WHERE ctid IN (
       SELECT ctid FROM call_center_grants WHERE NOT managed AND NOT pending AND updated_at < now() - make_interval(secs => $1::float8 / 1000.0) LIMIT 10000)`,
    [TOMBSTONE_KEEP_MS],
  );
  return rowCount ?? 0;
}

/** Every uid with a yandex_uid among a park's rows: whom a park off with revoke takes access from. */
export async function uidsOfPark(db: pg.Pool, parkId: string): Promise<string[]> {
  const { rows } = await db.query<{ uid: string }>('SELECT DISTINCT yandex_uid AS uid FROM users WHERE park_id = $1 AND yandex_uid IS NOT NULL', [parkId]);
  return rows.map((r) => r.uid);
}

// Two-key advisory locks live apart from the one-key ones (migrations, source leadership).
const UID_LOCK_CLASS = 7_212_002;

export interface UidLocks {
  /**
   * The connection holding the locks. The work done under them runs its statements on it too, so a chunk of uids
   * needs one connection from the pool, never a second while holding the first (which a full pool could deny).
   */
  db: pg.PoolClient;
  release(): Promise<void>;
  /** True when the lock connection failed while held: the locks are gone, and the work under them must be redone. */
  lost(): boolean;
}

/**
 * Takes an advisory lock per uid on a connection of its own, in one statement and in hash order (two callers
 * never deadlock). The caller bounds how many uids it locks at once: each lock takes a slot of the server's
 * shared lock table (max_locks_per_transaction × max_connections).
 */
export async function lockUids(pool: pg.Pool, uids: string[]): Promise<UidLocks> {
  const client = await pool.connect();
  let lost = false;
  // A checked-out client's connection error is emitted on the client: without a listener it would end the process.
  const onError = () => {
    lost = true;
  };
  client.on('error', onError);
  try {
    await client.query(
      `SELECT pg_advisory_lock($1, k) FROM (SELECT DISTINCT hashtext(u) AS k FROM unnest($2::text[]) AS u ORDER BY 1) AS keys`,
      [UID_LOCK_CLASS, uids],
    );
  } catch (e) {
    client.off('error', onError);
    client.release(e as Error);
    throw e;
  }
  return {
    db: client,
    lost: () => lost,
    async release() {
      try {
        if (lost) throw new Error('lock connection lost');
        await client.query('SELECT pg_advisory_unlock_all()');
        client.off('error', onError);
        client.release();
      } catch (e) {
        // A connection that could not unlock is closed, which releases its locks.
        client.off('error', onError);
        client.release(e as Error);
      }
    },
  };
}

export interface ParkProgress {
  parkId: string;
  events: number;
  skippedNoUid: number;
  deadLettered: number;
  lastLsn: string | null;
  lastCommitTsMs: number | null;
}

/**
 * Counts a batch's events for the parks that sync now (the table says which, not a cache); returns how many events
 * of those parks carried no yandex_uid.
 */
export async function recordProgress(db: pg.Pool, progress: ParkProgress[]): Promise<number> {
  if (progress.length === 0) return 0;
  const { rows } = await db.query<{ skipped: string }>(
    `WITH x AS (SELECT x.* FROM jsonb_to_recordset($1::jsonb) AS x(park_id text, lsn text, commit_ms double precision, events bigint, skipped bigint, dead bigint)
                WHERE EXISTS (SELECT 1 FROM call_center_parks c WHERE c.park_id = x.park_id AND c.enabled)),
     written AS (
     INSERT INTO call_center_sync_progress AS p (park_id, last_event_at, last_event_lsn, last_commit_ts, events_applied, skipped_no_uid, dead_lettered)
     SELECT x.park_id, now(), x.lsn, to_timestamp(x.commit_ms / 1000.0), x.events, x.skipped, x.dead FROM x
     ON CONFLICT (park_id) DO UPDATE SET
       last_event_at = now(),
       last_event_lsn = COALESCE(EXCLUDED.last_event_lsn, p.last_event_lsn),
       last_commit_ts = COALESCE(EXCLUDED.last_commit_ts, p.last_commit_ts),
       events_applied = p.events_applied + EXCLUDED.events_applied,
       skipped_no_uid = p.skipped_no_uid + EXCLUDED.skipped_no_uid,
       dead_lettered = p.dead_lettered + EXCLUDED.dead_lettered)
     SELECT coalesce(sum(skipped), 0) AS skipped FROM x`,
    [
      JSON.stringify(
        progress.map((p) => ({ park_id: p.parkId, lsn: p.lastLsn, commit_ms: p.lastCommitTsMs, events: p.events, skipped: p.skippedNoUid, dead: p.deadLettered })),
      ),
    ],
  );
  return Number(rows[0]?.skipped ?? 0);
}
