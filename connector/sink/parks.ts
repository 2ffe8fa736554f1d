// The sink's view of which parks sync and how: fed by the call_center_parks topic (read from the start on every
// start) and by re-reads of the table; the newer version of a park always wins.
import type pg from 'pg';
import type { ParkSync } from './desired.js';

export interface ParkDirectory {
  get(parkId: string): ParkSync | undefined;
  enabled(): ParkSync[];
  /** Keeps the newer of the known and the given version; returns true when the given one was taken. */
  merge(park: ParkSync): boolean;
  /** A deleted park row (or a truncate) turns sync off for good, revoking what was granted. */
  remove(parkId: string, atMs: number): void;
  all(): ParkSync[];
}

export function createParkDirectory(): ParkDirectory {
  const parks = new Map<string, ParkSync>();
  return {
    get: (id) => parks.get(id),
    enabled: () => [...parks.values()].filter((p) => p.enabled),
    all: () => [...parks.values()],
    merge(park) {
      const known = parks.get(park.park_id);
      if (known && known.updated_at > park.updated_at) return false;
      parks.set(park.park_id, park);
      return true;
    },
    remove(parkId, atMs) {
      const known = parks.get(parkId);
      if (known) parks.set(parkId, { ...known, enabled: false, revoke_on_disable: true, updated_at: Math.max(atMs, known.updated_at) });
    },
  };
}

/** A call_center_parks row (Avro event row or database row) as ParkSync; role_map arrives as JSON text or jsonb. */
export function parkFromRow(row: Record<string, unknown>): ParkSync {
  const roleMap = typeof row.role_map === 'string' ? JSON.parse(row.role_map) : (row.role_map ?? {});
  const updated = row.updated_at instanceof Date ? row.updated_at.getTime() : Number(row.updated_at);
  return {
    park_id: String(row.park_id),
    project_id: String(row.project_id),
    role_map: roleMap as Record<string, string>,
    yandex_team_role_id: (row.yandex_team_role_id as string | null) ?? null,
    enabled: Boolean(row.enabled),
    revoke_on_disable: row.revoke_on_disable === null || row.revoke_on_disable === undefined ? true : Boolean(row.revoke_on_disable),
    updated_at: updated,
  };
}

/** Re-reads one park from the database (the stream may be behind it) and merges it; undefined when the row is gone. */
export async function refreshPark(pool: pg.Pool, parks: ParkDirectory, parkId: string): Promise<ParkSync | undefined> {
  const { rows } = await pool.query('SELECT * FROM call_center_parks WHERE park_id = $1', [parkId]);
  if (!rows[0]) {
    parks.remove(parkId, Date.now());
    return parks.get(parkId);
  }
  parks.merge(parkFromRow(rows[0]));
  return parks.get(parkId);
}
