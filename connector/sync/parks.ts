// The sink's view of which parks sync and how: fed by the call_center_parks topic (read from the start on every
// start) and by re-reads of the table. Versions follow commit order (migrations/003): the newer one always wins.
import type pg from 'pg';
import type { ParkSync } from './desired.js';

export interface ParkDirectory {
  get(parkId: string): ParkSync | undefined;
  enabled(): ParkSync[];
  all(): ParkSync[];
  /** Keeps the newer of the known and the given version (the given one on a tie); true when it was taken. */
  merge(park: ParkSync): boolean;
  /** The row of `version` was deleted: sync is off, and what fleet-sync granted goes. A later insert is newer. */
  remove(parkId: string, version: number): void;
}

export function createParkDirectory(): ParkDirectory {
  const parks = new Map<string, ParkSync>();
  return {
    get: (id) => parks.get(id),
    enabled: () => [...parks.values()].filter((p) => p.enabled),
    all: () => [...parks.values()],
    merge(park) {
      const known = parks.get(park.park_id);
      if (known && known.version > park.version) return false;
      parks.set(park.park_id, park);
      return true;
    },
    remove(parkId, version) {
      const known = parks.get(parkId);
      if (known && known.version > version) return;
      const base = known ?? { park_id: parkId, project_id: '', role_map: {}, yandex_team_role_id: null };
      parks.set(parkId, { ...base, enabled: false, revoke_on_disable: true, version });
    },
  };
}

/** A call_center_parks row (Avro event row or database row) as ParkSync; role_map arrives as JSON text or jsonb. */
export function parkFromRow(row: Record<string, unknown>): ParkSync {
  const roleMap = typeof row.role_map === 'string' ? JSON.parse(row.role_map) : (row.role_map ?? {});
  return {
    park_id: String(row.park_id),
    project_id: String(row.project_id),
    role_map: roleMap as Record<string, string>,
    yandex_team_role_id: (row.yandex_team_role_id as string | null) ?? null,
    enabled: Boolean(row.enabled),
    revoke_on_disable: row.revoke_on_disable === null || row.revoke_on_disable === undefined ? true : Boolean(row.revoke_on_disable),
    // Events written before versions existed carry none: any versioned write is newer than them.
    version: row.version === null || row.version === undefined ? 0 : Number(row.version),
  };
}

/**
 * Reads parks from the table into the directory (all of them, or the given ids). Ids asked for that have no row
 * are remembered as off with the oldest version, so the first real event of such a park wins over it.
 */
export async function loadParks(pool: pg.Pool, parks: ParkDirectory, ids?: string[]): Promise<void> {
  const { rows } = ids
    ? await pool.query('SELECT * FROM call_center_parks WHERE park_id = ANY($1::text[])', [ids])
    : await pool.query('SELECT * FROM call_center_parks');
  mergeParkRows(parks, rows, ids);
}

/** Merges call_center_parks rows read for `ids` (all parks when absent) into the directory, as loadParks does. */
export function mergeParkRows(parks: ParkDirectory, rows: Record<string, unknown>[], ids?: string[]): void {
  for (const row of rows) parks.merge(parkFromRow(row));
  const found = new Set(rows.map((r) => String(r.park_id)));
  for (const id of ids ?? []) {
    if (found.has(id)) continue;
    const known = parks.get(id);
    // A row gone from the table: the park is off with revoke, whatever the directory last heard.
    if (known?.enabled) parks.remove(id, known.version);
    else if (!known) parks.merge({ park_id: id, project_id: '', role_map: {}, yandex_team_role_id: null, enabled: false, revoke_on_disable: false, version: -1 });
  }
}

/** Re-reads one park (the stream may be behind the table); a park whose row is gone is off with revoke. */
export async function refreshPark(pool: pg.Pool, parks: ParkDirectory, parkId: string): Promise<ParkSync | undefined> {
  const { rows } = await pool.query('SELECT * FROM call_center_parks WHERE park_id = $1', [parkId]);
  if (rows[0]) parks.merge(parkFromRow(rows[0]));
  else {
    const known = parks.get(parkId);
    if (known?.enabled) parks.remove(parkId, known.version);
  }
  return parks.get(parkId);
}
