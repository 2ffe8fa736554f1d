// The pure steps of access sync, as tables: grouping a users batch, and planning what to write per (project, uid).
import { describe, expect, it } from 'vitest';
import type { DecodedEnvelope } from '../connector/events.js';
import { groupUsersBatch } from '../connector/sink/group.js';
import { planChanges, touchedKeys } from '../connector/sync/applier.js';
import { desiredGrants, grantKey, type ParkSync, type UserRow } from '../connector/sync/desired.js';
import type { GrantRecord } from '../connector/sync/store.js';

const park = (id: string, over: Partial<ParkSync> = {}): ParkSync => ({
  park_id: id,
  project_id: `proj-${id}`,
  role_map: { r1: 'cc-op', r2: 'cc-lead' },
  yandex_team_role_id: null,
  enabled: true,
  revoke_on_disable: true,
  disabled_at_ms: null,
  ...over,
});
const PARKS = new Map([
  ['on', park('on')],
  ['on2', park('on2')],
  ['off', park('off', { enabled: false, disabled_at_ms: 10_000 })],
  ['kept', park('kept', { enabled: false, revoke_on_disable: false, disabled_at_ms: 10_000 })],
  ['gone', { ...park('gone', { enabled: false, project_id: '' }), gone: true }],
]);
const parks = (id: string) => PARKS.get(id);
const row = (over: Partial<UserRow> = {}): UserRow => ({
  id: 'id',
  park_id: 'on',
  yandex_uid: 'u1',
  login: 'l',
  name: 'n',
  phone: null,
  email: null,
  role_id: 'r1',
  is_enabled: true,
  is_yandex_team: false,
  ...over,
});
const env = (op: DecodedEnvelope['op'], before: UserRow | null, after: UserRow | null): DecodedEnvelope => ({
  op,
  before: before as unknown as Record<string, unknown>,
  after: after as unknown as Record<string, unknown>,
  ts_ms: 0,
  source: { db: 'db', schema: 'public', table: 'users', lsn: '0/1', tx_id: 1, commit_ts_ms: 1, snapshot: false },
});

describe('groupUsersBatch: every event is a trigger, whatever its park', () => {
  const touched = (parkId: string, uid = 'u1') => `${parkId}/${uid}`;
  it.each<[string, DecodedEnvelope | null, { uids: string[]; touched: string[]; profile: string[]; truncated?: boolean }]>([
    ['an insert', env('c', null, row()), { uids: ['u1'], touched: [touched('on')], profile: ['u1'] }],
    ['a role change', env('u', row(), row({ role_id: 'r2' })), { uids: ['u1'], touched: [touched('on')], profile: [] }],
    ['a delete names the old park', env('d', row(), null), { uids: ['u1'], touched: [touched('on')], profile: [] }],
    ['a move names both parks', env('u', row(), row({ park_id: 'off' })), { uids: ['u1'], touched: [touched('on'), touched('off')], profile: [] }],
    ['a new uid names the old and the new one', env('u', row(), row({ yandex_uid: 'u2' })), { uids: ['u1', 'u2'], touched: [touched('on'), touched('on', 'u2')], profile: ['u2'] }],
    ['a park this sink thinks is off is not dropped: the applier judges it by the table', env('c', null, row({ park_id: 'off' })), { uids: ['u1'], touched: [touched('off')], profile: ['u1'] }],
    ['no uid: nothing to apply', env('c', null, row({ yandex_uid: null })), { uids: [], touched: [], profile: [] }],
    ['a tombstone carries nothing', null, { uids: [], touched: [], profile: [] }],
    ['a truncate', env('t', null, null), { uids: [], touched: [], profile: [], truncated: true }],
  ])('%s', (_name, envelope, expected) => {
    const batch = groupUsersBatch([{ message: 'm', env: envelope }]);
    expect(batch.uids).toEqual(expected.uids);
    expect(batch.touched.map((t) => touched(t.parkId, t.uid)).sort()).toEqual(expected.touched.sort());
    expect([...batch.profileChanged]).toEqual(expected.profile);
    expect(batch.truncatedAt !== null).toBe(expected.truncated ?? false);
  });

  it('keeps every event of a uid together, first-seen order, and counts events without a uid per park', () => {
    const batch = groupUsersBatch([
      { message: 1, env: env('c', null, row({ yandex_uid: 'b' })) },
      { message: 2, env: env('c', null, row({ yandex_uid: 'a' })) },
      { message: 3, env: env('u', row({ yandex_uid: 'b' }), row({ yandex_uid: 'b', role_id: null })) },
      { message: 4, env: env('c', null, row({ yandex_uid: null })) },
    ]);
    expect(batch.uids).toEqual(['b', 'a']);
    expect(batch.eventsByUid.get('b')!.map((e) => e.message)).toEqual([1, 3]);
    expect(batch.progress.get('on')).toMatchObject({ events: 3, skippedNoUid: 1 });
  });
});

describe('touchedKeys: the (project, uid) an event names, by the park as the table has it', () => {
  it.each<[string, { parkId: string; commitTsMs: number | null }, string[]]>([
    ['a park that syncs now', { parkId: 'on', commitTsMs: 1 }, [grantKey('proj-on', 'u1')]],
    ['a park turned off after the event committed', { parkId: 'off', commitTsMs: 5_000 }, [grantKey('proj-off', 'u1')]],
    ['a park turned off long before the event', { parkId: 'off', commitTsMs: 60_000 }, []],
    ['a park off without revoke, after the event', { parkId: 'kept', commitTsMs: 5_000 }, [grantKey('proj-kept', 'u1')]],
    ['a park off without revoke, long after the event too: followed for what it takes away', { parkId: 'kept', commitTsMs: 60_000 }, [grantKey('proj-kept', 'u1')]],
    ['a park whose sync row is gone: its records decide', { parkId: 'gone', commitTsMs: 1 }, []],
    ['a park with no sync row at all', { parkId: 'never', commitTsMs: 1 }, []],
  ])('%s', (_name, t, expected) => {
    expect([...touchedKeys([{ ...t, uid: 'u1' }], parks).keys()]).toEqual(expected);
  });
});

describe('planChanges: who is managed, and what is written', () => {
  const record = (over: Partial<GrantRecord> = {}): GrantRecord => ({
    project_id: 'proj-on',
    uid: 'u1',
    park_id: 'on',
    role_ids: ['cc-op'],
    pending: false,
    managed: true,
    updated_ms: 1_000,
    ...over,
  });
  // A listing taken at 2,000 ms: newer than the records above (1,000 ms) unless a test says otherwise.
  const plan = (input: { rows?: UserRow[]; records?: GrantRecord[]; named?: string[]; afterOff?: boolean; actual?: [string, string[]][]; listedAtMs?: number; project?: string }) => {
    const rows = input.rows ?? [];
    const result = planChanges({
      uids: new Set(['u1']),
      rows,
      records: input.records ?? [],
      desired: desiredGrants(rows, parks),
      named: new Map((input.named ?? []).map((k) => [k, ''])),
      ...(input.afterOff ? { namedAfterOff: new Set(input.named ?? []) } : {}),
      ...(input.actual ? { listing: { roles: new Map(input.actual.map(([k, v]) => [grantKey(input.project ?? 'proj-on', k), v])), takenAtMs: input.listedAtMs ?? 2_000 } } : {}),
      parks,
    });
    return { changes: (result.changes.get('u1') ?? []).map((c) => `${c.projectId}:${c.roleIds.join('+') || '-'}`), adopted: result.adopted.map((a) => `${a.projectId}:${a.member ? 'keep' : 'forget'}`) };
  };

  it.each<[string, Parameters<typeof plan>[0], { changes: string[]; adopted?: string[] }]>([
    ['a member without record is granted', { rows: [row()] }, { changes: ['proj-on:cc-op'] }],
    ['a member in sync by its record: nothing', { rows: [row()], records: [record()] }, { changes: [] }],
    ['a member in sync by the listing, never recorded: adopted', { rows: [row()], actual: [['u1', ['cc-op']]] }, { changes: [], adopted: ['proj-on:keep'] }],
    ['a disabled member holding a hand-made grant: revoked', { rows: [row({ is_enabled: false })], actual: [['u1', ['cc-admin']]] }, { changes: ['proj-on:-'] }],
    ['a member with an extra hand-made role: replaced', { rows: [row()], actual: [['u1', ['cc-op', 'cc-admin']]] }, { changes: ['proj-on:cc-op'] }],
    ['a deleted user, recorded: revoked', { records: [record()] }, { changes: ['proj-on:-'] }],
    ['a deleted user never recorded, named by its event: revoked', { named: [grantKey('proj-on', 'u1')] }, { changes: ['proj-on:-'] }],
    ['an outsider holding a hand-made grant: left alone', { actual: [['u1', ['cc-admin']]] }, { changes: [] }],
    ['a revoked non-member record holding nothing: forgotten', { records: [record({ role_ids: [] })] }, { changes: [], adopted: ['proj-on:forget'] }],
    ['a grant of a park off without revoke: kept', { records: [record({ park_id: 'kept', project_id: 'proj-kept' })] }, { changes: [] }],
    ['a grant of a park off without revoke in the project it was mapped to before: revoked', { records: [record({ park_id: 'kept' })] }, { changes: ['proj-on:-'] }],
    ['park off without revoke, named by an event or its last pass, the user disabled before the toggle: revoked', { rows: [row({ park_id: 'kept', is_enabled: false })], records: [record({ park_id: 'kept', project_id: 'proj-kept' })], named: [grantKey('proj-kept', 'u1')] }, { changes: ['proj-kept:-'] }],
    ['park off without revoke, named, the user still earns the role: kept', { rows: [row({ park_id: 'kept' })], records: [record({ park_id: 'kept', project_id: 'proj-kept' })], named: [grantKey('proj-kept', 'u1')] }, { changes: [] }],
    ['park off without revoke, named, the user moved to another mapped role before the toggle: the old role taken, the new one not granted', { rows: [row({ park_id: 'kept', role_id: 'r2' })], records: [record({ park_id: 'kept', project_id: 'proj-kept', role_ids: ['cc-op'] })], named: [grantKey('proj-kept', 'u1')] }, { changes: ['proj-kept:-'] }],
    ['park off without revoke, named, holding a role of a mapping before the last remap too: only that one taken', { rows: [row({ park_id: 'kept', role_id: 'r2' })], records: [record({ park_id: 'kept', project_id: 'proj-kept', role_ids: ['cc-lead', 'cc-old'] })], named: [grantKey('proj-kept', 'u1')] }, { changes: ['proj-kept:cc-lead'] }],
    ['park off without revoke, named, a call in flight (pending) for a role the last mapping still gives: that call is made again', { rows: [row({ park_id: 'kept', role_id: 'r2' })], records: [record({ park_id: 'kept', project_id: 'proj-kept', role_ids: ['cc-lead'], pending: true })], named: [grantKey('proj-kept', 'u1')] }, { changes: ['proj-kept:cc-lead'] }],
    ['park off without revoke, named only by an event after the toggle, never recorded: a hand-made grant is left alone', { rows: [row({ park_id: 'kept', is_enabled: false })], named: [grantKey('proj-kept', 'u1')], afterOff: true }, { changes: [] }],
    ['park off without revoke, named only by an event after the toggle, recorded: what it kept is taken', { rows: [row({ park_id: 'kept', is_enabled: false })], records: [record({ park_id: 'kept', project_id: 'proj-kept' })], named: [grantKey('proj-kept', 'u1')], afterOff: true }, { changes: ['proj-kept:-'] }],
    ['park off without revoke, never recorded, named by an event of an enabled user: left alone', { rows: [row({ park_id: 'kept' })], named: [grantKey('proj-kept', 'u1')], actual: [['u1', ['cc-op']]], project: 'proj-kept' }, { changes: [] }],
    ['a grant of a park whose sync row is gone: revoked', { records: [record({ park_id: 'gone' })] }, { changes: ['proj-on:-'] }],
    ['a grant that landed after the listing began is not undone by it: the record holds, and a revocation is made', { records: [record({ park_id: 'off', updated_ms: 3_000 })], actual: [['u1', []]] }, { changes: ['proj-on:-'] }],
    ['a listing older than a revocation that forgot the uid: the tombstone holds, no call', { records: [record({ role_ids: [], managed: false, updated_ms: 3_000 })], named: [grantKey('proj-on', 'u1')], actual: [['u1', ['cc-op']]] }, { changes: [] }],
    ['a member in sync by a listing older than its revocation is not adopted: granted', { rows: [row()], records: [record({ role_ids: [], managed: false, updated_ms: 3_000 })], actual: [['u1', ['cc-op']]] }, { changes: ['proj-on:cc-op'] }],
    ['a role id that is a built-in property name is unmapped: nothing held', { rows: [row({ role_id: 'constructor' })], records: [record()] }, { changes: ['proj-on:-'] }],
    ['a tombstone is no record: an outsider holding a hand-made grant is left alone', { records: [record({ role_ids: [], managed: false })], actual: [['u1', ['cc-admin']]] }, { changes: [] }],
    ['a grant of a park off with revoke: revoked', { records: [record({ park_id: 'off' })] }, { changes: ['proj-on:-'] }],
    ['a pending record is not trusted: written again', { rows: [row()], records: [record({ pending: true })] }, { changes: ['proj-on:cc-op'] }],
    ['a pending revocation is made even when an older listing shows nothing held', { records: [record({ role_ids: [], pending: true })], actual: [['u1', []]] }, { changes: ['proj-on:-'] }],
  ])('%s', (_name, input, expected) => {
    const result = plan(input);
    expect(result.changes).toEqual(expected.changes);
    expect(result.adopted).toEqual(expected.adopted ?? []);
  });
});
