import { describe, expect, it } from 'vitest';
import { desiredGrants, grantKey, profileChanged, rolesInPark, type ParkSync, type UserRow } from '../connector/sync/desired.js';

const park: ParkSync = {
  park_id: 'p1',
  project_id: 'proj',
  role_map: { dispatcher: 'cc-operator', senior: 'cc-lead' },
  yandex_team_role_id: 'cc-support',
  enabled: true,
  revoke_on_disable: true,
  disabled_at_ms: null,
};
const user = (over: Partial<UserRow> = {}): UserRow => ({
  id: 'u',
  park_id: 'p1',
  yandex_uid: 'uid',
  login: 'l',
  name: 'n',
  phone: null,
  email: null,
  role_id: 'dispatcher',
  is_enabled: true,
  is_yandex_team: false,
  ...over,
});

describe('the SPEC §5 role rules', () => {
  it.each<[string, Partial<UserRow>, Partial<ParkSync>, string[]]>([
    ['enabled, uid, mapped role', {}, {}, ['cc-operator']],
    ['another mapped role', { role_id: 'senior' }, {}, ['cc-lead']],
    ['role not in the map', { role_id: 'cook' }, {}, []],
    ['no role', { role_id: null }, {}, []],
    ['disabled', { is_enabled: false }, {}, []],
    ['no uid', { yandex_uid: null }, {}, []],
    ['yandex-team with a team role set', { is_yandex_team: true }, {}, ['cc-support']],
    ['yandex-team: their dispatcher role does not matter', { is_yandex_team: true, role_id: null }, {}, ['cc-support']],
    ['yandex-team without a team role', { is_yandex_team: true }, { yandex_team_role_id: null }, []],
    ['disabled yandex-team', { is_yandex_team: true, is_enabled: false }, {}, []],
    ['park turned off', {}, { enabled: false }, []],
    ['a row of another park', { park_id: 'p2' }, {}, []],
  ])('%s', (_name, u, p, expected) => {
    expect(rolesInPark(user(u), { ...park, ...p })).toEqual(expected);
  });

  it('one uid in two enabled parks is a grant in each project; in a park that is off, nothing', () => {
    const parks = new Map<string, ParkSync>([
      ['p1', park],
      ['p2', { ...park, park_id: 'p2', project_id: 'proj2', role_map: { d2: 'cc-2' } }],
      ['p3', { ...park, park_id: 'p3', project_id: 'proj3', enabled: false }],
    ]);
    const rows = [user(), user({ id: 'u2', park_id: 'p2', role_id: 'd2' }), user({ id: 'u3', park_id: 'p3' })];
    const desired = desiredGrants(rows, (id) => parks.get(id));
    expect(Object.fromEntries(desired)).toEqual({ [grantKey('proj', 'uid')]: ['cc-operator'], [grantKey('proj2', 'uid')]: ['cc-2'] });
  });

  it('two parks mapped to one project grant the union; a row that earns nothing still names its project', () => {
    const parks = new Map<string, ParkSync>([
      ['p1', park],
      ['p2', { ...park, park_id: 'p2' }],
    ]);
    const desired = desiredGrants([user(), user({ id: 'u2', park_id: 'p2', role_id: 'senior' }), user({ id: 'u3', yandex_uid: 'other', is_enabled: false })], (id) => parks.get(id));
    expect(desired.get(grantKey('proj', 'uid'))).toEqual(['cc-lead', 'cc-operator']);
    expect(desired.get(grantKey('proj', 'other'))).toEqual([]);
  });

  it('a profile counts as changed for a new row, a new uid, or a changed login, name, phone or email; not for a role change', () => {
    expect(profileChanged(null, user())).toBe(true);
    expect(profileChanged(user(), user({ role_id: 'senior', is_enabled: false }))).toBe(false);
    for (const change of [{ login: 'x' }, { name: 'x' }, { phone: '1' }, { email: 'a@b' }, { yandex_uid: 'uid2' }]) {
      expect(profileChanged(user(), user(change))).toBe(true);
    }
    expect(profileChanged(user(), null)).toBe(false);
  });
});
