// Park sync settings as the applier and the sweep judge by: read from call_center_parks in the same statement as
// the rows they decide about, under the uids' locks, never from a cache another topic feeds (SPEC §8: "park
// settings no older than the event being applied"). A park that has no row is off with revoke (SPEC §5).
import type pg from 'pg';
import type { ParkSync } from './desired.js';

/** The parks of one decision, by id; a park asked for that has no row is off with revoke and in no project. */
export type ParkView = (parkId: string) => ParkSync | undefined;

/** A call_center_parks row (Avro event row or database row) as ParkSync; role_map arrives as JSON text or jsonb. */
export function parkFromRow(row: Record<string, unknown>): ParkSync {
  const roleMap = typeof row.role_map === 'string' ? JSON.parse(row.role_map) : (row.role_map ?? {});
  const disabledAt = row.disabled_at === null || row.disabled_at === undefined ? null : new Date(row.disabled_at as string | Date).getTime();
  return {
    park_id: String(row.park_id),
    project_id: String(row.project_id),
    role_map: roleMap as Record<string, string>,
    yandex_team_role_id: (row.yandex_team_role_id as string | null) ?? null,
    enabled: Boolean(row.enabled),
    revoke_on_disable: row.revoke_on_disable === null || row.revoke_on_disable === undefined ? true : Boolean(row.revoke_on_disable),
    disabled_at_ms: Number.isFinite(disabledAt) ? disabledAt : null,
  };
}

/** A park whose call_center_parks row is gone (deleted, or the table truncated): off with revoke. */
export function gonePark(parkId: string): ParkSync {
  return { park_id: parkId, project_id: '', role_map: {}, yandex_team_role_id: null, enabled: false, revoke_on_disable: true, disabled_at_ms: null, gone: true };
}

/** The view of `rows` read for `ids`: every id asked for resolves, to its row or to "gone". */
export function parkView(rows: readonly Record<string, unknown>[], ids: Iterable<string>): ParkView {
  const parks = new Map<string, ParkSync>();
  for (const row of rows) parks.set(String(row.park_id), parkFromRow(row));
  for (const id of ids) if (!parks.has(id)) parks.set(id, gonePark(id));
  return (id) => parks.get(id);
}

/** One park's settings as the table has them now; undefined when it has no row. */
export async function readPark(db: pg.Pool | pg.PoolClient, parkId: string): Promise<ParkSync | undefined> {
  const { rows } = await db.query('SELECT * FROM call_center_parks WHERE park_id = $1', [parkId]);
  return rows[0] ? parkFromRow(rows[0]) : undefined;
}
