// The oracle of what the call center should hold, written apart from the sink: SPEC §5's rules straight over the
// tables. The tests and the demo compare the call center's state with it.
import type pg from 'pg';
import type { SimState } from '../../simulator/simulator.js';

/** project → uid → sorted role ids. */
export type Grants = Record<string, Record<string, string[]>>;

interface ParkRow {
  park_id: string;
  project_id: string;
  role_map: Record<string, string>;
  yandex_team_role_id: string | null;
  enabled: boolean;
}

/** project → uid → sorted roles, straight from SPEC §5's rules over the tables (only uids holding something). */
export async function expectedGrants(pool: pg.Pool): Promise<Grants> {
  const parks = (await pool.query<ParkRow>('SELECT park_id, project_id, role_map, yandex_team_role_id, enabled FROM call_center_parks WHERE enabled')).rows;
  const out: Grants = {};
  for (const park of parks) {
    const { rows } = await pool.query('SELECT yandex_uid, role_id, is_enabled, is_yandex_team FROM users WHERE park_id = $1 AND yandex_uid IS NOT NULL', [park.park_id]);
    for (const u of rows) {
      let role: string | null | undefined = null;
      if (u.is_enabled) role = u.is_yandex_team ? park.yandex_team_role_id : u.role_id ? park.role_map[u.role_id] : null;
      if (!role) continue;
      const project = (out[park.project_id] ??= {});
      project[u.yandex_uid] = [...new Set([...(project[u.yandex_uid] ?? []), role])].sort();
    }
  }
  return out;
}

/** A call center's grants (the simulator's state) without projects left empty. */
export function heldGrantsOf(state: Pick<SimState, 'projects'>): Grants {
  const out: Grants = {};
  for (const [project, users] of Object.entries(state.projects)) if (Object.keys(users).length > 0) out[project] = users;
  return out;
}

/** Grants as sorted text, so two states compare equal whatever order they were built in. */
export function canonical(grants: Grants): string {
  return JSON.stringify(
    Object.keys(grants)
      .sort()
      .map((project) => [project, Object.keys(grants[project]!).sort().map((uid) => [uid, [...grants[project]![uid]!].sort()])]),
  );
}

/** Lists what differs, for a failure message. */
export function grantDiff(held: Grants, expected: Grants): string[] {
  const out: string[] = [];
  for (const project of new Set([...Object.keys(held), ...Object.keys(expected)])) {
    for (const uid of new Set([...Object.keys(held[project] ?? {}), ...Object.keys(expected[project] ?? {})])) {
      const h = JSON.stringify([...(held[project]?.[uid] ?? [])].sort());
      const e = JSON.stringify([...(expected[project]?.[uid] ?? [])].sort());
      if (h !== e) out.push(`${project}/${uid}: holds ${h}, should hold ${e}`);
    }
  }
  return out;
}
