// The pure steps of access sync, as tables: grouping a users batch, and planning what to write per (project, uid).
import { describe, expect, it } from 'vitest';
import type { DecodedEnvelope } from '../connector/events.js';
import { groupUsersBatch } from '../connector/sink/group.js';
import { planChanges } from '../connector/sync/applier.js';
import { desiredGrants, grantKey, type ParkSync, type UserRow } from '../connector/sync/desired.js';
import type { GrantRecord } from '../connector/sync/store.js';

const park = (id: string, over: Partial<ParkSync> = {}): ParkSync => ({
  park_id: id,
  project_id: `proj-${id}`,
  role_map: { r1: 'cc-op', r2: 'cc-lead' },
  yandex_team_role_id: null,
  enabled: true,
  revoke_on_disable: true,
  version: 1,
  ...over,
});
const PARKS = new Map([
  ['on', park('on')],
  ['on2', park('on2')],
  ['off', park('off', { enabled: false })],
  ['kept', park('kept', { enabled: false, revoke_on_disable: false })],
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

describe('groupUsersBatch', () => {
  it.each<[string, DecodedEnvelope | null, { uids: string[]; managed: string[]; profile: string[]; truncated?: boolean; skipped?: number }]>([
    ['an insert in an enabled park', env('c', null, row()), { uids: ['u1'], managed: [grantKey('proj-on', 'u1')], profile: ['u1'] }],
    ['a role change', env('u', row(), row({ role_id: 'r2' })), { uids: ['u1'], managed: [grantKey('proj-on', 'u1')], profile: [] }],
    ['a delete names the old park project', env('d', row(), null), { uids: ['u1'], managed: [grantKey('proj-on', 'u1')], profile: [] }],
    ['a move out to a park that is off', env('u', row(), row({ park_id: 'off' })), { uids: ['u1'], managed: [grantKey('proj-on', 'u1')], profile: [] }],
    ['a move between enabled parks names both projects', env('u', row(), row({ park_id: 'on2' })), { uids: ['u1'], managed: [grantKey('proj-on', 'u1'), grantKey('proj-on2', 'u1')], profile: [] }],
    ['a new uid names the old and the new one', env('u', row(), row({ yandex_uid: 'u2' })), { uids: ['u1', 'u2'], managed: [grantKey('proj-on', 'u1'), grantKey('proj-on', 'u2')], profile: ['u2'] }],
    ['a park that is off is dropped', env('c', null, row({ park_id: 'off' })), { uids: [], managed: [], profile: [] }],
    ['no uid is skipped and counted', env('c', null, row({ yandex_uid: null })), { uids: [], managed: [], profile: [], skipped: 1 }],
    ['a tombstone carries nothing', null, { uids: [], managed: [], profile: [] }],
    ['a truncate', env('t', null, null), { uids: [], managed: [], profile: [], truncated: true }],
  ])('%s', (_name, envelope, expected) => {
    const batch = groupUsersBatch([{ message: 'm', env: envelope }], parks);
    expect(batch.uids).toEqual(expected.uids);
    expect(batch.managed.sort()).toEqual(expected.managed.sort());
    expect([...batch.profileChanged]).toEqual(expected.profile);
    expect(batch.truncated).toBe(expected.truncated ?? false);
    expect(batch.skippedNoUid).toBe(expected.skipped ?? 0);
  });

  it('keeps every event of a uid together, first-seen order', () => {
    const batch = groupUsersBatch(
      [
        { message: 1, env: env('c', null, row({ yandex_uid: 'b' })) },
        { message: 2, env: env('c', null, row({ yandex_uid: 'a' })) },
        { message: 3, env: env('u', row({ yandex_uid: 'b' }), row({ yandex_uid: 'b', role_id: null })) },
      ],
      parks,
    );
    expect(batch.uids).toEqual(['b', 'a']);
    expect(batch.eventsByUid.get('b')!.map((e) => e.message)).toEqual([1, 3]);
    expect(batch.progress.get('on')).toMatchObject({ events: 3, skippedNoUid: 0 });
  });
});

describe('planChanges: who is managed, and what is written', () => {
  const record = (over: Partial<GrantRecord> = {}): GrantRecord => ({ project_id: 'proj-on', uid: 'u1', park_id: 'on', role_ids: ['cc-op'], pending: false, ...over });
  const plan = (input: { rows?: UserRow[]; records?: GrantRecord[]; named?: string[]; actual?: [string, string[]][] }) => {
    const rows = input.rows ?? [];
    const result = planChanges({
      uids: new Set(['u1']),
      rows,
      records: input.records ?? [],
      desired: desiredGrants(rows, parks),
      named: new Set(input.named ?? []),
      ...(input.actual ? { actual: new Map(input.actual.map(([k, v]) => [grantKey('proj-on', k), v])) } : {}),
      parks: { get: parks },
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
    ['a grant of a park off without revoke: kept', { records: [record({ park_id: 'kept' })] }, { changes: [] }],
    ['park off without revoke, named by an event or its last pass, the user disabled before the toggle: revoked', { rows: [row({ park_id: 'kept', is_enabled: false })], records: [record({ park_id: 'kept' })], named: [grantKey('proj-on', 'u1')] }, { changes: ['proj-on:-'] }],
    ['park off without revoke, named, the user still earns the role: kept', { rows: [row({ park_id: 'kept' })], records: [record({ park_id: 'kept' })], named: [grantKey('proj-on', 'u1')] }, { changes: [] }],
    ['park off without revoke, named, the user moved to another mapped role: no new grant', { rows: [row({ park_id: 'kept', role_id: 'r2' })], records: [record({ park_id: 'kept', role_ids: ['cc-op'] })], named: [grantKey('proj-on', 'u1')] }, { changes: [] }],
    ['park off without revoke, never recorded, named by an event of an enabled user: left alone', { rows: [row({ park_id: 'kept' })], named: [grantKey('proj-kept', 'u1')], actual: [['u1', ['cc-op']]] }, { changes: [] }],
    ['a grant of a park off with revoke: revoked', { records: [record({ park_id: 'off' })] }, { changes: ['proj-on:-'] }],
    ['a pending record is not trusted: written again', { rows: [row()], records: [record({ pending: true })] }, { changes: ['proj-on:cc-op'] }],
    ['a pending revocation is made even when an older listing shows nothing held', { records: [record({ role_ids: [], pending: true })], actual: [['u1', []]] }, { changes: ['proj-on:-'] }],
  ])('%s', (_name, input, expected) => {
    const result = plan(input);
    expect(result.changes).toEqual(expected.changes);
    expect(result.adopted).toEqual(expected.adopted ?? []);
  });
});
