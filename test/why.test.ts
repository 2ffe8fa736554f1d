// `fleet-sync why` and GET /v1/why on a database built by hand (users rows, parks' sync rows, toggles, grant records,
// audit rows): what a uid holds in each project, since when, and the chain of causes in words; --json; unknown uids.
// The rule a users row is judged by (groundOf) is a table test.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../api/app.js';
import { explainUid, groundOf, whyInWords, type WhyPark, type WhyUser } from '../connector/audit/why.js';
import { createMetrics } from '../connector/metrics.js';
import { createTestDatabase, serviceUrls, testConfig, testLogger, type TestDatabase } from './helpers.js';
import { BIN } from './services.js';

const run = promisify(execFile);
const IVAN = '0f000000-0000-4000-8000-000000000001';
const IVAN_2 = '0f000000-0000-4000-8000-000000000002';
const IVAN_3 = '0f000000-0000-4000-8000-000000000003';
const PETR = '0f000000-0000-4000-8000-000000000004';

let db: TestDatabase;
let app: FastifyInstance;
/** Audit row ids by name. */
const ids: Record<string, string> = {};

const sweep = (run: number, reason: string, toggle?: object) => JSON.stringify({ kind: 'sweep', run_id: String(run), reason, park_id: 'park-1', ...(toggle ? { toggle } : {}) });
const event = (partition: number, offset: number, op: string) =>
  JSON.stringify({
    kind: 'event',
    events: [{ topic: 'fleet.public.users', partition, offset: String(offset), lsn: '0/1A2B3C', tx_id: 812, commit_ts: '2026-11-30T19:59:58.000Z', op, park_id: 'park-2', role_id: 'r2', user_id: IVAN_2 }],
  });
const toggle = (enabled: boolean, request: string, at: string) => ({ id: '1', at, enabled, revoke: enabled ? null : true, token_name: 'ops', request_id: request });

/** Appends one audit row; its id is kept under `name`. */
async function audit(name: string, row: { at: string; project: string | null; uid: string; park: string; action: string; before: string[] | null; after: string[] | null; outcome?: string; error?: string; cause: string }) {
  const { rows } = await db.pool.query<{ id: string }>(
    `INSERT INTO call_center_audit (at, project_id, uid, park_id, action, roles_before, roles_after, outcome, error, cause_kind, cause)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, ($10::jsonb)->>'kind', $10) RETURNING id::text`,
    [row.at, row.project, row.uid, row.park, row.action, row.before, row.after, row.outcome ?? 'applied', row.error ?? null, row.cause],
  );
  ids[name] = rows[0]!.id;
}

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    INSERT INTO parks (id, name) VALUES ('park-1', 'One'), ('park-2', 'Two'), ('park-3', 'Three'), ('park-9', 'Never synced');
    INSERT INTO roles (id, park_id, name) VALUES ('r-disp', 'park-1', 'dispatcher'), ('r-adm', 'park-1', 'admin'), ('r2', 'park-2', 'operator'),
                                                 ('r3', 'park-3', 'operator'), ('r9', 'park-9', 'operator');
    INSERT INTO users (id, park_id, yandex_uid, login, name, role_id, is_enabled, is_yandex_team) VALUES
      ('${IVAN}', 'park-1', '4001', 'ivan', 'Ivan', 'r-disp', true, false),
      ('${IVAN_2}', 'park-2', '4001', 'ivan', 'Ivan', 'r2', true, false),
      ('${IVAN_3}', 'park-3', '4001', 'ivan', 'Ivan', 'r3', true, false),
      ('${PETR}', 'park-1', '4002', 'petr', 'Petr', 'r-disp', false, false),
      ('0f000000-0000-4000-8000-000000000005', 'park-1', '4003', 'anna', 'Anna', 'r-adm', true, false),
      ('0f000000-0000-4000-8000-000000000006', 'park-1', '4004', 'yt', 'Yandex Team', NULL, true, true),
      ('0f000000-0000-4000-8000-000000000007', 'park-9', '4005', 'olga', 'Olga', 'r9', true, false);
    INSERT INTO call_center_parks (park_id, project_id, role_map, yandex_team_role_id, enabled, revoke_on_disable, enabled_at, disabled_at) VALUES
      ('park-1', 'proj-a', '{"r-disp": "operator"}', 'yt-role', true, true, '2026-11-30T20:00:59Z', NULL),
      ('park-2', 'proj-b', '{"r2": "agent"}', NULL, true, true, '2026-11-30T19:00:00Z', NULL),
      ('park-3', 'proj-c', '{"r3": "agent"}', NULL, false, true, '2026-11-01T10:00:00Z', '2026-11-30T12:00:00Z');
    INSERT INTO call_center_toggles (park_id, at, enabled, project_id, role_map, revoke, token_name, request_id) VALUES
      ('park-1', '2026-11-01T00:00:00Z', true, 'proj-a', '{}', NULL, 'old-token', 'req-1'),
      ('park-1', '2026-11-30T20:00:59Z', true, 'proj-a', '{"r-disp": "operator"}', NULL, 'ops', 'req-7'),
      ('park-3', '2026-11-01T10:00:00Z', true, 'proj-c', '{"r3": "agent"}', NULL, 'ops', 'req-2'),
      ('park-3', '2026-11-30T12:00:00Z', false, 'proj-c', '{"r3": "agent"}', true, 'ops', 'req-9');
    INSERT INTO call_center_grants (project_id, uid, park_id, role_ids, pending, managed, granted_at, updated_at) VALUES
      ('proj-a', '4001', 'park-1', '{operator}', false, true, '2026-11-29T10:00:00Z', '2026-12-01T08:00:00Z'),
      ('proj-b', '4001', 'park-2', '{agent}', false, true, '2026-11-30T20:00:00Z', '2026-11-30T20:00:00Z'),
      ('proj-c', '4001', 'park-3', '{}', false, false, '2026-11-01T10:01:00Z', '2026-11-30T12:00:05Z'),
      ('proj-a', '4002', 'park-1', '{}', false, true, '2026-11-30T20:01:00Z', '2026-11-30T22:00:00Z');`);
  // 4001 in proj-a: an older role, then operator by park-1's backfill; a change parked and an adoption since leave it as it is.
  await audit('older', { at: '2026-11-29T10:00:00Z', project: 'proj-a', uid: '4001', park: 'park-1', action: 'roles', before: [], after: ['supervisor'], cause: event(1, 40, 'c') });
  await audit('profile', { at: '2026-11-30T20:01:01Z', project: null, uid: '4001', park: 'park-1', action: 'profile', before: null, after: null, cause: sweep(12, 'park_on') });
  await audit('backfill', {
    at: '2026-11-30T20:01:02.345Z', project: 'proj-a', uid: '4001', park: 'park-1', action: 'roles', before: ['supervisor'], after: ['operator'],
    cause: sweep(12, 'park_on', toggle(true, 'req-7', '2026-11-30T20:00:59.000Z')),
  });
  await audit('parked', {
    at: '2026-11-30T21:00:00Z', project: 'proj-a', uid: '4001', park: 'park-1', action: 'roles', before: ['operator'], after: ['operator', 'x'], outcome: 'parked',
    error: 'CALL_CENTER_TRANSIENT: 503', cause: JSON.stringify({ kind: 'retry', attempts: 2, events: [] }),
  });
  await audit('adopted', { at: '2026-12-01T08:00:00Z', project: 'proj-a', uid: '4001', park: 'park-1', action: 'adopt', before: ['operator'], after: ['operator'], cause: sweep(13, 'interval') });
  // 4001 in proj-b: by an event of park-2.
  await audit('event', { at: '2026-11-30T20:00:00Z', project: 'proj-b', uid: '4001', park: 'park-2', action: 'roles', before: [], after: ['agent'], cause: event(3, 118, 'u') });
  // 4001 in proj-c: granted, then revoked when park-3 was turned off.
  await audit('granted-c', { at: '2026-11-01T10:01:00Z', project: 'proj-c', uid: '4001', park: 'park-3', action: 'roles', before: [], after: ['agent'], cause: event(0, 7, 'r') });
  await audit('revoked-c', {
    at: '2026-11-30T12:00:05Z', project: 'proj-c', uid: '4001', park: 'park-3', action: 'revoke', before: ['agent'], after: [],
    cause: sweep(14, 'park_off', toggle(false, 'req-9', '2026-11-30T12:00:00.000Z')),
  });
  // 4002: granted, then disabled.
  await audit('petr-on', { at: '2026-11-30T20:01:00Z', project: 'proj-a', uid: '4002', park: 'park-1', action: 'roles', before: [], after: ['operator'], cause: sweep(12, 'park_on') });
  await audit('petr-off', { at: '2026-11-30T22:00:00Z', project: 'proj-a', uid: '4002', park: 'park-1', action: 'revoke', before: ['operator'], after: [], cause: event(2, 9, 'u') });

  app = await buildApp({
    config: testConfig(db, { API_TOKENS: 'auditor:a-token=audit:read' }),
    pool: db.pool,
    log: testLogger(),
    metrics: createMetrics({ defaultMetrics: false }),
    readiness: {},
  });
});

afterAll(async () => {
  await app?.close();
  await db?.drop();
});

/** `fleet-sync why …` against the test's database: exit code and output. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...process.env, DATABASE_URL: db.url, KAFKA_BROKERS: serviceUrls().kafkaBrokers, LOG_LEVEL: 'warn' };
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, 'why', ...args], { env });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('why a uid holds what it holds', () => {
  it('a role granted by a park’s backfill: since the backfill (not the later adoption), the users row, the park and its toggle, the mapping, the sweep', async () => {
    const answer = await explainUid(db.pool, '4001');
    expect(answer.known).toBe(true);
    expect(answer.projects.map((p) => p.project_id)).toEqual(['proj-a', 'proj-b', 'proj-c']);
    const a = answer.projects[0]!;
    expect(a).toMatchObject({ holds: ['operator'], state: 'settled', since: '2026-11-30T20:01:02.345Z', should_hold: ['operator'] });
    expect(a.applied_by?.id).toBe(ids.backfill);
    expect(a.history.map((h) => h.id)).toEqual([ids.adopted, ids.parked, ids.backfill, ids.older]);
    expect(a.grounds).toEqual([{ user_id: IVAN, park_id: 'park-1', earns: ['operator'], reason: 'its mapping gives r-disp → operator' }]);
    expect(a.parks).toEqual([
      {
        park_id: 'park-1',
        project_id: 'proj-a',
        enabled: true,
        revoke_on_disable: true,
        enabled_at: '2026-11-30T20:00:59.000Z',
        disabled_at: null,
        role_map: { 'r-disp': 'operator' },
        yandex_team_role_id: 'yt-role',
        toggle: { at: '2026-11-30T20:00:59.000Z', enabled: true, revoke: null, token_name: 'ops', request_id: 'req-7' },
      },
    ]);
    expect(a.explanation).toEqual([
      'uid 4001 in project proj-a holds [operator] since 2026-11-30T20:01:02.345Z',
      `  because users row ${IVAN} (login ivan, park park-1, role r-disp (dispatcher), enabled)`,
      '  and park park-1 syncs to proj-a since 2026-11-30T20:00:59.000Z (turned on by token ops, request req-7, at 2026-11-30T20:00:59.000Z)',
      '  and its mapping gives r-disp → operator: [operator]',
      '  applied by sweep run 12 (park_on, turned on by token ops, request req-7, at 2026-11-30T20:00:59.000Z) at 2026-11-30T20:01:02.345Z',
      '  history (latest first):',
      '    2026-12-01T08:00:00.000Z adopt [operator] → [operator] in proj-a: applied, by sweep run 13 (interval)',
      '    2026-11-30T21:00:00.000Z roles [operator] → [operator, x] in proj-a: parked (CALL_CENTER_TRANSIENT: 503), by retry after 2 attempts',
      '    2026-11-30T20:01:02.345Z roles [supervisor] → [operator] in proj-a: applied, by sweep run 12 (park_on, turned on by token ops, request req-7, at 2026-11-30T20:00:59.000Z)',
      '    2026-11-29T10:00:00.000Z roles [] → [supervisor] in proj-a: applied, by event fleet.public.users[1]@40 (lsn 0/1A2B3C, tx 812, committed 2026-11-30T19:59:58.000Z, insert)',
    ]);
    expect(answer.profile?.id).toBe(ids.profile);
  });

  it('a role granted by an event names its topic, partition, offset, commit LSN, transaction, commit time and operation', async () => {
    const b = (await explainUid(db.pool, '4001', { projectId: 'proj-b' })).projects;
    expect(b.map((p) => p.project_id)).toEqual(['proj-b']);
    expect(b[0]!.explanation.slice(0, 4)).toEqual([
      'uid 4001 in project proj-b holds [agent] since 2026-11-30T20:00:00.000Z',
      `  because users row ${IVAN_2} (login ivan, park park-2, role r2 (operator), enabled)`,
      '  and park park-2 syncs to proj-b since 2026-11-30T19:00:00.000Z (no toggle recorded)',
      '  and its mapping gives r2 → agent: [agent]',
    ]);
    expect(b[0]!.explanation).toContain(
      '  applied by event fleet.public.users[3]@118 (lsn 0/1A2B3C, tx 812, committed 2026-11-30T19:59:58.000Z, update) at 2026-11-30T20:00:00.000Z',
    );
  });

  it('holding nothing says why: a park turned off with revoke (and by whom), a disabled user, an unmapped role, a yandex-team user not yet granted', async () => {
    const c = (await explainUid(db.pool, '4001', { projectId: 'proj-c' })).projects[0]!;
    expect(c).toMatchObject({ holds: [], state: 'tombstone', since: '2026-11-30T12:00:05.000Z', should_hold: [] });
    expect(c.explanation.slice(0, 5)).toEqual([
      'uid 4001 in project proj-c holds nothing since 2026-11-30T12:00:05.000Z: fleet-sync took its access away and no longer manages it there',
      `  because users row ${IVAN_3} (login ivan, park park-3, role r3 (operator), enabled)`,
      "  and park park-3's sync to proj-c is off since 2026-11-30T12:00:00.000Z, with revoke (turned off by token ops, request req-9, at 2026-11-30T12:00:00.000Z)",
      '  and its sync is off, with revoke: nothing is kept',
      '  revoked by sweep run 14 (park_off, turned off by token ops, request req-9, at 2026-11-30T12:00:00.000Z) at 2026-11-30T12:00:05.000Z',
    ]);

    const petr = (await explainUid(db.pool, '4002')).projects;
    expect(petr).toHaveLength(1);
    expect(petr[0]!.explanation.slice(0, 5)).toEqual([
      'uid 4002 in project proj-a holds nothing since 2026-11-30T22:00:00.000Z',
      `  because users row ${PETR} (login petr, park park-1, role r-disp (dispatcher), disabled)`,
      '  and park park-1 syncs to proj-a since 2026-11-30T20:00:59.000Z (turned on by token ops, request req-7, at 2026-11-30T20:00:59.000Z)',
      '  and the user is disabled',
      '  revoked by event fleet.public.users[2]@9 (lsn 0/1A2B3C, tx 812, committed 2026-11-30T19:59:58.000Z, update) at 2026-11-30T22:00:00.000Z',
    ]);

    const anna = (await explainUid(db.pool, '4003')).projects[0]!;
    expect(anna).toMatchObject({ project_id: 'proj-a', state: 'none', record: null, since: null, applied_by: null, history: [] });
    expect(anna.explanation[0]).toBe('uid 4003 in project proj-a holds nothing from fleet-sync (no grant record)');
    expect(anna.explanation).toContain("  and role r-adm is not in the park's mapping");

    const yt = (await explainUid(db.pool, '4004')).projects[0]!;
    expect(yt).toMatchObject({ state: 'none', should_hold: ['yt-role'] });
    expect(yt.explanation).toContain('  and yandex-team: the park gives yandex-team users yt-role: [yt-role]');
    expect(yt.explanation).toContain('  but by the rows now it should hold [yt-role]: a change is on its way, or the next sweep repairs it');

    const olga = await explainUid(db.pool, '4005');
    expect(olga).toMatchObject({ known: true, projects: [] });
    expect(whyInWords(olga)).toBe(
      'uid 4005 holds nothing from fleet-sync in any project: none of its parks syncs to the call center\n' +
        '  users row 0f000000-0000-4000-8000-000000000007 (login olga, park park-9, role r9 (operator), enabled): park park-9 has no call-center sync\n',
    );
  });

  it('an unknown uid is an answer: known false, and the words say so', async () => {
    const ghost = await explainUid(db.pool, 'ghost');
    expect(ghost).toEqual({ uid: 'ghost', known: false, at: expect.any(String), users: [], retry: null, profile: null, projects: [] });
    expect(whyInWords(ghost)).toBe('uid ghost is unknown to fleet-sync: no users row, grant record or audit row names it.\n');
    expect(await explainUid(db.pool, 'ghost', { projectId: 'proj-a' })).toMatchObject({ known: false, projects: [] });
    // A known uid asked about a project it has nothing in: that project, holding nothing, and why.
    const elsewhere = (await explainUid(db.pool, '4002', { projectId: 'proj-z' })).projects;
    expect(elsewhere).toEqual([expect.objectContaining({ project_id: 'proj-z', state: 'none', holds: [], grounds: [], history: [] })]);
    expect(elsewhere[0]!.explanation).toEqual([
      'uid 4002 in project proj-z holds nothing from fleet-sync (no grant record)',
      '  because no users row of uid 4002 is in a park that syncs to proj-z',
    ]);
  });
});

describe('fleet-sync why', () => {
  it('prints the chain in words (one project with --project), the same object with --json, an unknown uid with exit 0, and a missing --uid as a usage error', async () => {
    const [text, json, ghost, missing] = await Promise.all([
      cli('--uid', '4001', '--project', 'proj-a'),
      cli('--uid', '4001', '--json'),
      cli('--uid', 'ghost'),
      cli('--project', 'proj-a'),
    ]);
    expect(text).toMatchObject({ code: 0, stdout: whyInWords(await explainUid(db.pool, '4001', { projectId: 'proj-a' })) });
    expect(text.stdout).toMatch(/^uid 4001 in project proj-a holds \[operator\] since 2026-11-30T20:01:02.345Z\n/);
    expect(text.stdout).not.toContain('proj-b');
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ ...(await explainUid(db.pool, '4001')), at: expect.any(String) });
    expect(ghost).toMatchObject({ code: 0, stdout: 'uid ghost is unknown to fleet-sync: no users row, grant record or audit row names it.\n' });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--uid <uid> is required');
  });
});

describe('GET /v1/why', () => {
  it('answers what `why --json` prints, for one project with project_id; a missing uid is 400', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/why?uid=4001', headers: { authorization: 'Bearer a-token' } });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ ...(await explainUid(db.pool, '4001')), at: expect.any(String) });
    const one = await app.inject({ method: 'GET', url: '/v1/why?uid=4001&project_id=proj-c', headers: { authorization: 'Bearer a-token' } });
    expect(one.json().projects.map((p: { project_id: string }) => p.project_id)).toEqual(['proj-c']);
    const ghost = await app.inject({ method: 'GET', url: '/v1/why?uid=ghost', headers: { authorization: 'Bearer a-token' } });
    expect(ghost.json()).toMatchObject({ known: false, projects: [] });
    const missing = await app.inject({ method: 'GET', url: '/v1/why', headers: { authorization: 'Bearer a-token' } });
    expect(missing.statusCode).toBe(400);
    expect(missing.json()).toEqual({ code: 'VALIDATION_FAILED', message: 'querystring is missing required field "uid"' });
  });
});

describe('groundOf: what one users row earns in a project, and the rule in words', () => {
  const user = (over: Partial<WhyUser> = {}): WhyUser => ({
    id: 'u1', park_id: 'p', login: 'l', name: 'n', role_id: 'r', role_name: 'dispatcher', is_enabled: true, is_yandex_team: false, updated_at: '2026-01-01T00:00:00.000Z', ...over,
  });
  const park = (over: Partial<WhyPark> = {}): WhyPark => ({
    park_id: 'p', project_id: 'proj', enabled: true, revoke_on_disable: true, enabled_at: null, disabled_at: null, role_map: { r: 'op' }, yandex_team_role_id: null, toggle: null, ...over,
  });
  const cases: [string, WhyUser, WhyPark | undefined, string[], string[], string][] = [
    ['mapped role', user(), park(), [], ['op'], 'its mapping gives r → op'],
    ['disabled', user({ is_enabled: false }), park(), [], [], 'the user is disabled'],
    ['no role', user({ role_id: null }), park(), [], [], 'the user has no dispatcher role'],
    ['unmapped role', user({ role_id: 'other' }), park(), [], [], "role other is not in the park's mapping"],
    ['a role named like a prototype key', user({ role_id: 'constructor' }), park(), [], [], "role constructor is not in the park's mapping"],
    ['mapped to nothing', user(), park({ role_map: { r: '' } }), [], [], 'its mapping gives r no role'],
    ['yandex-team with a role', user({ is_yandex_team: true }), park({ yandex_team_role_id: 'yt' }), [], ['yt'], 'yandex-team: the park gives yandex-team users yt'],
    ['yandex-team without', user({ is_yandex_team: true }), park(), [], [], 'yandex-team, and the park sets no yandex-team role'],
    ['park off with revoke', user(), park({ enabled: false, disabled_at: '2026-01-02T00:00:00.000Z' }), ['op'], [], 'its sync is off, with revoke: nothing is kept'],
    [
      'park off without revoke keeps what it held',
      user(), park({ enabled: false, revoke_on_disable: false }), ['op', 'x'], ['op'],
      'its sync is off, without revoke: fleet-sync keeps what its last mapping still gives of what the uid held and grants nothing (its mapping gives r → op)',
    ],
    ['park off without revoke grants nothing', user(), park({ enabled: false, revoke_on_disable: false }), [], [], expect.stringContaining('grants nothing') as unknown as string],
    ['park of another project', user(), park({ project_id: 'elsewhere' }), [], [], 'park p syncs to elsewhere now, not proj'],
    ['no sync row', user(), undefined, [], [], 'park p has no call-center sync (no call_center_parks row)'],
  ];
  it.each(cases)('%s', (_name, u, p, holds, earns, reason) => {
    expect(groundOf('4001', u, p, 'proj', holds)).toEqual({ user_id: 'u1', park_id: 'p', earns, reason });
  });
});
