// What a user should hold in the call center: pure functions of the user rows and the parks' sync settings
// (SPEC §5 role rules), tested exhaustively as a table.
import type { CallCenterProfile } from '../callcenter/client.js';

export interface ParkSync {
  park_id: string;
  project_id: string;
  /** dispatcher role id → call-center role id */
  role_map: Record<string, string>;
  yandex_team_role_id: string | null;
  enabled: boolean;
  revoke_on_disable: boolean;
  /** When sync was last turned off (the database's clock); null while it never was. */
  disabled_at_ms: number | null;
  /** The park's call_center_parks row is gone (deleted or truncated): off with revoke, its project unknown. */
  gone?: boolean;
}

export interface UserRow {
  id: string;
  park_id: string;
  yandex_uid: string | null;
  login: string;
  name: string;
  phone: string | null;
  email: string | null;
  role_id: string | null;
  is_enabled: boolean;
  is_yandex_team: boolean;
}

/** The roles one user row earns in its park's project; [] when it earns none. The caller skips rows without a uid. */
export function rolesInPark(user: UserRow, park: ParkSync): string[] {
  if (!park.enabled || user.park_id !== park.park_id || !user.yandex_uid || !user.is_enabled) return [];
  if (user.is_yandex_team) return park.yandex_team_role_id ? [park.yandex_team_role_id] : [];
  // Exact keys only (SPEC §5): a role id such as `constructor` must not find Object.prototype's.
  if (user.role_id === null || !Object.hasOwn(park.role_map, user.role_id)) return [];
  const mapped = park.role_map[user.role_id];
  return typeof mapped === 'string' && mapped !== '' ? [mapped] : [];
}

export const grantKey = (projectId: string, uid: string) => `${projectId}\u0000${uid}`;
export const splitGrantKey = (key: string) => {
  const i = key.indexOf('\u0000');
  return { projectId: key.slice(0, i), uid: key.slice(i + 1) };
};

/**
 * The role set of each (project, uid) the rows reach through enabled parks: the union over every row of the uid
 * in a park mapped to that project (one call-center user, a grant per project). Keys with [] are included, so a
 * caller can tell "earns nothing" from "not ours".
 */
export function desiredGrants(rows: readonly UserRow[], parks: (parkId: string) => ParkSync | undefined): Map<string, string[]> {
  const out = new Map<string, Set<string>>();
  for (const row of rows) {
    if (!row.yandex_uid) continue;
    const park = parks(row.park_id);
    if (!park?.enabled) continue;
    const key = grantKey(park.project_id, row.yandex_uid);
    let set = out.get(key);
    if (!set) out.set(key, (set = new Set()));
    for (const r of rolesInPark(row, park)) set.add(r);
  }
  return new Map([...out].map(([k, v]) => [k, [...v].sort()]));
}

export function sameRoles(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  const x = [...(a ?? [])].sort();
  const y = [...(b ?? [])].sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** What the call center keeps of a user, from the user's row. */
export function profileOf(row: UserRow): CallCenterProfile {
  return { login: row.login, name: row.name, phone: row.phone, email: row.email };
}

/** True when a change touches what the call center keeps of the user (not only roles). */
export function profileChanged(before: UserRow | null, after: UserRow | null): boolean {
  if (!after) return false;
  if (!before) return true;
  return before.login !== after.login || before.name !== after.name || before.phone !== after.phone || before.email !== after.email || before.yandex_uid !== after.yandex_uid;
}
