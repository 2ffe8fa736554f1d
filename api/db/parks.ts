// SQL of the park toggles: write call_center_parks in one transaction, and only when something changes,
// because every write is a change event the sink acts on (backfill, re-sync, revocation).
import type pg from 'pg';
import { FleetSyncError } from '../../connector/errors.js';
import type { ParkSync } from '../../connector/sync/desired.js';

export interface RoleMapping {
  role_id: string;
  call_center_role_id: string;
}

/** A call_center_parks row: the sink's view of a park, plus the timestamps the api answers with. */
export interface SyncRow extends Omit<ParkSync, 'disabled_at_ms' | 'gone'> {
  enabled_at: Date | null;
  disabled_at: Date | null;
  updated_at: Date;
}

/** The park's sync record as the api answers it. */
export interface SyncRecord {
  park_id: string;
  project_id: string;
  enabled: boolean;
  roles: RoleMapping[];
  yandex_team_role_id: string | null;
  revoke_on_disable: boolean;
  enabled_at: string | null;
  disabled_at: string | null;
  updated_at: string;
}

export const SYNC_COLUMNS = 'park_id, project_id, role_map, yandex_team_role_id, enabled, revoke_on_disable, enabled_at, disabled_at, updated_at';

export function toSyncRecord(row: SyncRow): SyncRecord {
  return {
    park_id: row.park_id,
    project_id: row.project_id,
    enabled: row.enabled,
    roles: Object.entries(row.role_map)
      .map(([role_id, call_center_role_id]) => ({ role_id, call_center_role_id }))
      .sort((a, b) => (a.role_id < b.role_id ? -1 : a.role_id > b.role_id ? 1 : 0)),
    yandex_team_role_id: row.yandex_team_role_id,
    revoke_on_disable: row.revoke_on_disable,
    enabled_at: row.enabled_at?.toISOString() ?? null,
    disabled_at: row.disabled_at?.toISOString() ?? null,
    updated_at: row.updated_at.toISOString(),
  };
}

async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}

export interface ParkOn {
  parkId: string;
  projectId: string;
  roles: RoleMapping[];
  yandexTeamRoleId: string | null;
}

/** Who asks for a toggle: recorded with it (call_center_toggles), the cause its sweep names in the audit trail. */
export interface ToggleBy {
  tokenName: string;
  requestId: string;
}

/**
 * The checks of a park/on: the park exists and every mapped role is one of its roles. With `lock` (inside the
 * toggle's transaction) the rows are locked (FOR KEY SHARE, FOR SHARE): a mapped role cannot move or vanish before
 * it commits. A dry run reads them only.
 */
export async function checkParkOn(db: pg.Pool | pg.PoolClient, on: ParkOn, lock: boolean): Promise<void> {
  const roleIds = on.roles.map((r) => r.role_id);
  const park = await db.query(`SELECT 1 FROM parks WHERE id = $1${lock ? ' FOR KEY SHARE' : ''}`, [on.parkId]);
  if (park.rowCount === 0) throw new FleetSyncError('PARK_NOT_FOUND', `park ${on.parkId} does not exist`);
  const owned = await db.query<{ id: string }>(`SELECT id FROM roles WHERE park_id = $1 AND id = ANY($2::text[])${lock ? ' FOR SHARE' : ''}`, [on.parkId, roleIds]);
  const ownedIds = new Set(owned.rows.map((r) => r.id));
  const foreign = roleIds.find((id) => !ownedIds.has(id));
  if (foreign !== undefined) throw new FleetSyncError('ROLE_NOT_IN_PARK', `role ${foreign} is not a role of park ${on.parkId}`);
}

export const roleMapOf = (roles: readonly RoleMapping[]): Record<string, string> => Object.fromEntries(roles.map((r) => [r.role_id, r.call_center_role_id]));

/** The park's sync row now, or undefined. */
export async function currentSyncRow(db: pg.Pool | pg.PoolClient, parkId: string): Promise<SyncRow | undefined> {
  return (await db.query<SyncRow>(`SELECT ${SYNC_COLUMNS} FROM call_center_parks WHERE park_id = $1`, [parkId])).rows[0];
}

async function recordToggle(client: pg.PoolClient, row: SyncRow, revoke: boolean | null, by: ToggleBy): Promise<void> {
  await client.query(
    'INSERT INTO call_center_toggles (park_id, enabled, project_id, role_map, revoke, token_name, request_id) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)',
    [row.park_id, row.enabled, row.project_id, JSON.stringify(row.role_map), revoke, by.tokenName, by.requestId],
  );
}

/** `by`: the api request asking (recorded as the toggle); a script writing the row directly records none. */
export async function turnParkOn(pool: pg.Pool, on: ParkOn, by?: ToggleBy): Promise<SyncRecord> {
  return inTransaction(pool, async (client) => {
    await checkParkOn(client, on, true);
    const roleMap = JSON.stringify(roleMapOf(on.roles));
    // The WHERE of DO UPDATE makes an identical repeat write nothing: no new row version, no change event.
    const written = await client.query<SyncRow>(
      `INSERT INTO call_center_parks AS p (park_id, project_id, role_map, yandex_team_role_id, enabled, enabled_at)
       VALUES ($1, $2, $3::jsonb, $4, true, now())
       ON CONFLICT (park_id) DO UPDATE SET
         project_id = EXCLUDED.project_id,
         role_map = EXCLUDED.role_map,
         yandex_team_role_id = EXCLUDED.yandex_team_role_id,
         enabled = true,
         enabled_at = CASE WHEN p.enabled THEN p.enabled_at ELSE now() END
       WHERE NOT p.enabled
          OR p.project_id IS DISTINCT FROM EXCLUDED.project_id
          OR p.role_map IS DISTINCT FROM EXCLUDED.role_map
          OR p.yandex_team_role_id IS DISTINCT FROM EXCLUDED.yandex_team_role_id
       RETURNING ${SYNC_COLUMNS}`,
      [on.parkId, on.projectId, roleMap, on.yandexTeamRoleId],
    );
    if (written.rows[0] && by) await recordToggle(client, written.rows[0], null, by);
    const row = written.rows[0] ?? (await currentSyncRow(client, on.parkId));
    return toSyncRecord(row!);
  });
}

/**
 * Turns the park's sync off. Unknown park and a park whose sync was never turned on are both 404 PARK_NOT_FOUND
 * (the message tells which): there is no record to answer with, and creating one would invent a project.
 */
export async function turnParkOff(pool: pg.Pool, parkId: string, revoke: boolean, by?: ToggleBy): Promise<SyncRecord> {
  return inTransaction(pool, async (client) => {
    // Already off with the same revoke: no write. Off again with another revoke keeps the first disabled_at.
    const written = await client.query<SyncRow>(
      `UPDATE call_center_parks SET
         enabled = false,
         disabled_at = CASE WHEN enabled THEN now() ELSE disabled_at END,
         revoke_on_disable = $2
       WHERE park_id = $1 AND (enabled OR revoke_on_disable IS DISTINCT FROM $2)
       RETURNING ${SYNC_COLUMNS}`,
      [parkId, revoke],
    );
    if (written.rows[0]) {
      if (by) await recordToggle(client, written.rows[0], revoke, by);
      return toSyncRecord(written.rows[0]);
    }
    return toSyncRecord(await existingSyncRow(client, parkId));
  });
}

/** The park's sync row; 404 PARK_NOT_FOUND naming which is missing, the park or its sync. */
export async function existingSyncRow(db: pg.Pool | pg.PoolClient, parkId: string): Promise<SyncRow> {
  const current = await currentSyncRow(db, parkId);
  if (current) return current;
  const park = await db.query('SELECT 1 FROM parks WHERE id = $1', [parkId]);
  throw new FleetSyncError('PARK_NOT_FOUND', park.rowCount === 0 ? `park ${parkId} does not exist` : `call-center sync was never turned on for park ${parkId}`);
}
