// What the call center should hold, computed straight from SPEC §5's rules over the tables, written apart from the
// sink's own code: the tests, the chaos run and the demo check the call center against it.
import type pg from 'pg';

/** project → uid → sorted role ids; only uids that hold something. */
export type Grants = Record<string, Record<string, string[]>>;

interface ParkRow {
  park_id: string;
  project_id: string;
  role_map: Record<string, string>;
  yandex_team_role_id: string | null;
}

export async function expectedGrants(db: Pick<pg.Pool, 'query'>): Promise<Grants> {
  const parks = (await db.query<ParkRow>('SELECT park_id, project_id, role_map, yandex_team_role_id FROM call_center_parks WHERE enabled')).rows;
  const out: Grants = {};
  for (const park of parks) {
    const { rows } = await db.query('SELECT yandex_uid, role_id, is_enabled, is_yandex_team FROM users WHERE park_id = $1 AND yandex_uid IS NOT NULL', [park.park_id]);
    for (const u of rows) {
      let role: string | null | undefined = null;
      // Role ids are exact keys of role_map (SPEC §5): `constructor` is not Object.prototype's.
      if (u.is_enabled) role = u.is_yandex_team ? park.yandex_team_role_id : u.role_id && Object.hasOwn(park.role_map, u.role_id) ? park.role_map[u.role_id] : null;
      if (!role) continue;
      const project = (out[park.project_id] ??= {});
      project[u.yandex_uid] = [...new Set([...(project[u.yandex_uid] ?? []), role])].sort();
    }
  }
  return out;
}

/** A call center's projects without the uids (and projects) that hold nothing. */
export function nonEmpty(projects: Record<string, Record<string, string[]>>): Grants {
  const out: Grants = {};
  for (const [project, users] of Object.entries(projects)) {
    const held = Object.fromEntries(Object.entries(users).filter(([, roles]) => roles.length > 0));
    if (Object.keys(held).length > 0) out[project] = held;
  }
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

/** What differs, one line per (project, uid), for a failure message. */
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
