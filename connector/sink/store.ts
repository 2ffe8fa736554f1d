// The sink's SQL: user rows by uid, fleet-sync's grant records, per-park progress. One query a function.
import type pg from 'pg';
import type { UserRow } from './desired.js';

const USER_COLUMNS = 'id::text, park_id, yandex_uid, login, name, phone, email, role_id, is_enabled, is_yandex_team';

export async function usersByUid(db: pg.Pool | pg.PoolClient, uids: string[]): Promise<UserRow[]> {
  if (uids.length === 0) return [];
  const { rows } = await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE yandex_uid = ANY($1::text[])`, [uids]);
  return rows;
}

/** One page of a park's users in id order (keyset), for the sweep. */
export async function usersOfPark(db: pg.Pool, parkId: string, afterId: string | null, limit: number): Promise<UserRow[]> {
  const { rows } = await db.query<UserRow>(
    `SELECT ${USER_COLUMNS} FROM users WHERE park_id = $1 AND ($2::uuid IS NULL OR id > $2::uuid) ORDER BY id LIMIT $3`,
    [parkId, afterId, limit],
  );
  return rows;
}

export interface GrantRecord {
  project_id: string;
  uid: string;
  park_id: string;
  role_ids: string[];
  pending: boolean;
}

export async function grantsByUid(db: pg.Pool, uids: string[]): Promise<GrantRecord[]> {
  if (uids.length === 0) return [];
  const { rows } = await db.query<GrantRecord>('SELECT project_id, uid, park_id, role_ids, pending FROM call_center_grants WHERE uid = ANY($1::text[])', [uids]);
  return rows;
}

export async function grantedUids(db: pg.Pool, where: { parkId?: string; projectId?: string }): Promise<string[]> {
  const { rows } = await db.query<{ uid: string }>(
    `SELECT DISTINCT uid FROM call_center_grants WHERE ($1::text IS NULL OR park_id = $1) AND ($2::text IS NULL OR project_id = $2)`,
    [where.parkId ?? null, where.projectId ?? null],
  );
  return rows.map((r) => r.uid);
}

export async function allGrantedUids(db: pg.Pool): Promise<string[]> {
  const { rows } = await db.query<{ uid: string }>('SELECT DISTINCT uid FROM call_center_grants');
  return rows.map((r) => r.uid);
}

/** Written before the call: a crash after the call can then never leave a grant fleet-sync does not know it made. */
export async function recordPendingGrants(db: pg.Pool, grants: { projectId: string; uid: string; parkId: string; roleIds: string[] }[]): Promise<void> {
  if (grants.length === 0) return;
  await db.query(
    `INSERT INTO call_center_grants (project_id, uid, park_id, role_ids, pending)
     SELECT g.project_id, g.uid, g.park_id, ARRAY(SELECT jsonb_array_elements_text(g.role_ids)), true
     FROM jsonb_to_recordset($1::jsonb) AS g(project_id text, uid text, park_id text, role_ids jsonb)
     ON CONFLICT (project_id, uid) DO UPDATE
       SET park_id = EXCLUDED.park_id, role_ids = EXCLUDED.role_ids, pending = true, updated_at = now()`,
    [JSON.stringify(grants.map((g) => ({ project_id: g.projectId, uid: g.uid, park_id: g.parkId, role_ids: g.roleIds })))],
  );
}

/** After the call center accepted: grants become settled, revocations forget the record. */
export async function settleGrants(db: pg.Pool, settled: { projectId: string; uid: string; revoked: boolean }[]): Promise<void> {
  if (settled.length === 0) return;
  const payload = JSON.stringify(settled.map((s) => ({ project_id: s.projectId, uid: s.uid, revoked: s.revoked })));
  await db.query(
    `WITH s AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS s(project_id text, uid text, revoked boolean)),
     gone AS (DELETE FROM call_center_grants g USING s WHERE s.revoked AND g.project_id = s.project_id AND g.uid = s.uid)
     UPDATE call_center_grants g SET pending = false, updated_at = now() FROM s
     WHERE NOT s.revoked AND g.project_id = s.project_id AND g.uid = s.uid`,
    [payload],
  );
}

export interface ParkProgress {
  parkId: string;
  events: number;
  skippedNoUid: number;
  deadLettered: number;
  lastLsn: string | null;
  lastCommitTsMs: number | null;
}

export async function recordProgress(db: pg.Pool, progress: ParkProgress[]): Promise<void> {
  if (progress.length === 0) return;
  await db.query(
    `INSERT INTO call_center_sync_progress AS p (park_id, last_event_at, last_event_lsn, last_commit_ts, events_applied, skipped_no_uid, dead_lettered)
     SELECT x.park_id, now(), x.lsn, to_timestamp(x.commit_ms / 1000.0), x.events, x.skipped, x.dead
     FROM jsonb_to_recordset($1::jsonb) AS x(park_id text, lsn text, commit_ms double precision, events bigint, skipped bigint, dead bigint)
     ON CONFLICT (park_id) DO UPDATE SET
       last_event_at = now(),
       last_event_lsn = COALESCE(EXCLUDED.last_event_lsn, p.last_event_lsn),
       last_commit_ts = COALESCE(EXCLUDED.last_commit_ts, p.last_commit_ts),
       events_applied = p.events_applied + EXCLUDED.events_applied,
       skipped_no_uid = p.skipped_no_uid + EXCLUDED.skipped_no_uid,
       dead_lettered = p.dead_lettered + EXCLUDED.dead_lettered`,
    [
      JSON.stringify(
        progress.map((p) => ({ park_id: p.parkId, lsn: p.lastLsn, commit_ms: p.lastCommitTsMs, events: p.events, skipped: p.skippedNoUid, dead: p.deadLettered })),
      ),
    ],
  );
}
