// Reading the audit trail over the api against a real PostgreSQL: GET /v1/audit's keyset walk while rows are
// appended, each filter and their combinations, every bad query a 4xx naming the problem, the audit:read scope, the
// indexes the queries use, and GET /v1/audit/hourly's counts.
import { createHmac } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../api/app.js';
import { auditPageSql, type AuditPageQuery } from '../api/db/audit.js';
import { createMetrics } from '../connector/metrics.js';
import { createTestDatabase, testConfig, testLogger, type TestDatabase } from './helpers.js';

const AUDIT = { authorization: 'Bearer a-token' };
const USERS_ONLY = { authorization: 'Bearer u-token' };
const TOKENS = 'auditor:a-token=audit:read,users:read;u-token=users:read';

/** The fixture: 250 rows over 7 uids, 3 projects (and profile puts) and 2 parks, one a minute from BASE. */
const ROWS = 250;
const BASE = Date.parse('2024-03-01T00:00:00.000Z');
const minute = (i: number) => new Date(BASE + i * 60_000).toISOString();

type Filters = { uid?: string; project_id?: string; park_id?: string; since?: string; until?: string };

interface Row {
  id: string;
  at: string;
  uid: string;
  project_id: string | null;
  park_id: string;
}

let db: TestDatabase;
let app: FastifyInstance;

async function get(url: string, headers: Record<string, string> = AUDIT) {
  const res = await app.inject({ method: 'GET', url, headers });
  return { status: res.statusCode, body: res.json() };
}

const query = (params: Record<string, string | number | undefined>) =>
  new URLSearchParams(Object.entries(params).flatMap(([k, v]) => (v === undefined ? [] : [[k, String(v)]]))).toString();

/** Every row of the trail now, as the filters see it. */
async function allRows(): Promise<Row[]> {
  const { rows } = await db.pool.query<Row>(
    `SELECT id::text, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at, uid, project_id, park_id FROM call_center_audit`,
  );
  return rows;
}

/** The ids a filter should answer, newest first, computed apart from the api's SQL. */
function matching(rows: Row[], f: Filters): string[] {
  return rows
    .filter(
      (r) =>
        (f.uid === undefined || r.uid === f.uid) &&
        (f.project_id === undefined || r.project_id === f.project_id) &&
        (f.park_id === undefined || r.park_id === f.park_id) &&
        (f.since === undefined || Date.parse(r.at) >= Date.parse(f.since)) &&
        (f.until === undefined || Date.parse(r.at) < Date.parse(f.until)),
    )
    .map((r) => r.id)
    .sort((a, b) => Number(b) - Number(a));
}

/** Appends `n` audit rows as the sink writes them (stamped now) for uid-3 in proj-1 of p1. */
async function append(n: number): Promise<void> {
  await db.pool.query(
    `INSERT INTO call_center_audit (project_id, uid, park_id, action, roles_before, roles_after, outcome, cause_kind, cause)
     SELECT 'proj-1', 'uid-3', 'p1', 'roles', '{}', '{late}', 'applied', 'sweep', '{"kind":"sweep","run_id":"99","reason":"interval","park_id":"p1"}'
       FROM generate_series(1, $1::int)`,
    [n],
  );
}

/** Walks GET /v1/audit page by page, calling `between` after each page; returns the ids of each page. */
async function walk(params: Record<string, string | number | undefined>, between: () => Promise<unknown> = async () => {}): Promise<string[][]> {
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const res = await get(`/v1/audit?${query({ ...params, cursor })}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    pages.push(res.body.entries.map((e: { id: string }) => e.id));
    cursor = res.body.cursor;
    await between();
  } while (cursor);
  return pages;
}

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    INSERT INTO parks (id, name) VALUES ('p1', 'Park one'), ('p2', 'Park two'), ('quiet', 'No audit rows');
    -- Every 5th row is a profile put (no project); the others cycle through three projects and every cause kind.
    INSERT INTO call_center_audit (at, project_id, uid, park_id, action, roles_before, roles_after, outcome, error, cause_kind, cause)
    SELECT timestamptz '${minute(0)}' + make_interval(mins => i),
           CASE WHEN i % 5 = 0 THEN NULL ELSE 'proj-' || (i % 3) END,
           'uid-' || (i % 7), 'p' || (i % 2 + 1),
           CASE WHEN i % 5 = 0 THEN 'profile' WHEN i % 4 = 0 THEN 'revoke' ELSE 'roles' END,
           CASE WHEN i % 6 = 0 THEN NULL ELSE ARRAY['op'] END,
           CASE WHEN i % 5 = 0 THEN NULL WHEN i % 4 = 0 THEN '{}'::text[] ELSE ARRAY['op', 'sup'] END,
           CASE WHEN i % 11 = 0 THEN 'parked' ELSE 'applied' END,
           CASE WHEN i % 11 = 0 THEN 'CALL_CENTER_TRANSIENT: 503' END,
           (ARRAY['event', 'sweep', 'retry', 'replay'])[i % 4 + 1],
           CASE i % 4
             WHEN 0 THEN jsonb_build_object('kind', 'event', 'events', jsonb_build_array(jsonb_build_object('topic', 'fleet.public.users', 'partition', i % 3,
                           'offset', i::text, 'lsn', '0/1A2B3C', 'tx_id', 800 + i, 'commit_ts', '2024-03-01T00:00:00.000Z', 'op', 'u',
                           'park_id', 'p1', 'role_id', 'r1', 'user_id', NULL)))
             WHEN 1 THEN jsonb_build_object('kind', 'sweep', 'run_id', i::text, 'reason', 'park_on', 'park_id', 'p1',
                           'toggle', jsonb_build_object('id', '1', 'at', '2024-03-01T00:00:00.000Z', 'enabled', true, 'revoke', NULL, 'token_name', 'ops', 'request_id', 'req-' || i))
             WHEN 2 THEN jsonb_build_object('kind', 'retry', 'attempts', 3, 'events', '[]'::jsonb)
             ELSE jsonb_build_object('kind', 'replay', 'events', '[]'::jsonb)
           END
      FROM generate_series(0, ${ROWS - 1}) i;`);
  app = await buildApp({
    config: testConfig(db, { API_TOKENS: TOKENS }),
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

describe('GET /v1/audit', () => {
  it('answers the newest rows first with every field and the cause as stored, and a cursor while more follow', async () => {
    const res = await get(`/v1/audit?${query({ until: minute(250), limit: 3 })}`);
    expect(res.status).toBe(200);
    expect(res.body.entries.map((e: { at: string }) => e.at)).toEqual([minute(249), minute(248), minute(247)]);
    expect(typeof res.body.cursor).toBe('string');
    const [newest] = res.body.entries;
    const stored = (await db.pool.query(`SELECT * FROM call_center_audit WHERE id = $1`, [newest.id])).rows[0];
    expect(newest).toEqual({
      id: String(stored.id),
      at: stored.at.toISOString(),
      project_id: stored.project_id,
      uid: stored.uid,
      park_id: stored.park_id,
      action: stored.action,
      roles_before: stored.roles_before,
      roles_after: stored.roles_after,
      outcome: stored.outcome,
      error: stored.error,
      cause: stored.cause,
    });
    // Row 249: 249 % 4 = 1, a sweep with its toggle.
    expect(newest).toMatchObject({ project_id: 'proj-0', roles_before: ['op'], roles_after: ['op', 'sup'], cause: { kind: 'sweep', run_id: '249', toggle: { token_name: 'ops' } } });
    // Row 245 is a profile put: no project, no roles after; row 240 did not know the roles before; row 242 was parked.
    const at = async (i: number) => (await get(`/v1/audit?${query({ since: minute(i), until: minute(i + 1) })}`)).body.entries;
    expect(await at(245)).toEqual([expect.objectContaining({ action: 'profile', project_id: null, roles_after: null })]);
    expect(await at(240)).toEqual([expect.objectContaining({ roles_before: null, action: 'profile' })]);
    expect(await at(242)).toEqual([expect.objectContaining({ outcome: 'parked', error: 'CALL_CENTER_TRANSIENT: 503', cause: { kind: 'retry', attempts: 3, events: [] } })]);
  });

  it('a walk returns each row that existed when it began exactly once, newest first, while matching rows are appended between pages', async () => {
    for (const filters of [{}, { uid: 'uid-3' }, { project_id: 'proj-1', since: minute(20) }, { park_id: 'p1', uid: 'uid-3' }] as Filters[]) {
      const atStart = matching(await allRows(), filters);
      const pages = await walk({ ...filters, limit: 17 }, () => append(3));
      const walked = pages.flat();
      expect(pages.length, JSON.stringify(filters)).toBe(Math.max(1, Math.ceil(atStart.length / 17)));
      expect(new Set(walked).size).toBe(walked.length);
      expect(walked).toEqual(atStart);
      // The rows appended meanwhile matched the filters: a new walk finds them on its first page.
      const fresh = matching(await allRows(), filters);
      expect(fresh.length).toBeGreaterThan(atStart.length);
      expect((await get(`/v1/audit?${query({ ...filters, limit: 3 })}`)).body.entries.map((e: { id: string }) => e.id)).toEqual(fresh.slice(0, 3));
    }
  });

  it('each filter and their combinations answer exactly the matching rows', async () => {
    const rows = await allRows();
    const cases: Filters[] = [
      { uid: 'uid-2' },
      { project_id: 'proj-2' },
      { park_id: 'p2' },
      { since: minute(200) },
      { until: minute(30) },
      { since: minute(100), until: minute(130) },
      { since: minute(7), until: minute(7) },
      { uid: 'uid-4', project_id: 'proj-1' },
      { uid: 'uid-5', park_id: 'p2', since: minute(50) },
      { project_id: 'proj-0', park_id: 'p1', until: minute(120) },
      { uid: 'uid-1', project_id: 'proj-2', park_id: 'p2', since: minute(10), until: minute(240) },
      { uid: 'nobody' },
      { park_id: 'quiet' },
    ];
    for (const filters of cases) {
      const want = matching(rows, filters);
      expect((await walk({ ...filters, limit: 1000 })).flat(), JSON.stringify(filters)).toEqual(want);
      expect((await walk({ ...filters, limit: 9 })).flat(), JSON.stringify(filters)).toEqual(want);
    }
    // A time with an offset is the same instant as its UTC spelling.
    expect(minute(100)).toBe('2024-03-01T01:40:00.000Z');
    expect((await walk({ since: '2024-03-01T04:40:00+03:00', limit: 1000 })).flat()).toEqual(matching(rows, { since: minute(100) }));
  });

  it('the default page is 100 rows; limit is 1..1000', async () => {
    const res = await get('/v1/audit');
    expect(res.body.entries).toHaveLength(100);
    expect((await get('/v1/audit?limit=1')).body.entries).toHaveLength(1);
    expect((await get('/v1/audit?limit=1000')).body.entries.length).toBeGreaterThanOrEqual(ROWS);
  });

  it('every bad query is a 4xx whose message names the problem', async () => {
    const { cursor } = (await get('/v1/audit?uid=uid-1&limit=2')).body;
    const [payload] = cursor.split('.');
    const forged = (ids: string) => {
      const body = Buffer.from(JSON.stringify(['audit', JSON.stringify(['uid-1', null, null, null, null]), ids])).toString('base64url');
      return `${body}.${createHmac('sha256', 'fleet-sync audit cursor v1').update(Buffer.from(body, 'base64url').toString()).digest('base64url').slice(0, 16)}`;
    };
    const users = (await app.inject({ method: 'POST', url: '/v1/users/list', payload: { park_id: 'p1' }, headers: AUDIT })).json();
    expect(users.cursor).toBeUndefined();
    const cases: [string, number, string, RegExp][] = [
      [query({ park_id: 'nope' }), 404, 'PARK_NOT_FOUND', /^park nope does not exist$/],
      [query({ since: 'yesterday' }), 400, 'VALIDATION_FAILED', /^querystring\/since must match format "date-time"$/],
      [query({ until: '2024-03-01' }), 400, 'VALIDATION_FAILED', /^querystring\/until must match format "date-time"$/],
      [query({ since: '2024-03-01T00:00:00' }), 400, 'VALIDATION_FAILED', /^querystring\/since must match format "date-time"$/],
      [query({ since: '2024-13-01T00:00:00Z' }), 400, 'VALIDATION_FAILED', /querystring\/since must match format "date-time"/],
      [query({ until: '0000-01-01T00:00:00Z' }), 400, 'VALIDATION_FAILED', /^querystring\/until must be a date-time between years 0001 and 9999$/],
      [query({ since: minute(10), until: minute(9) }), 400, 'VALIDATION_FAILED', /^querystring\/since is after querystring\/until$/],
      [query({ uid: 'uid-1', cursor: 'abc.def' }), 400, 'BAD_CURSOR', /damaged/],
      [query({ uid: 'uid-1', cursor: `${payload}x.${cursor.split('.')[1]}` }), 400, 'BAD_CURSOR', /damaged/],
      [query({ uid: 'uid-1', cursor: forged('99999999999999999999') }), 400, 'BAD_CURSOR', /damaged/],
      [query({ uid: 'uid-1', cursor: forged('-1') }), 400, 'BAD_CURSOR', /damaged/],
      [query({ uid: 'uid-2', cursor }), 400, 'BAD_CURSOR', /other filters \(uid, project_id, park_id, since, until\)/],
      [query({ uid: 'uid-1', since: minute(0), cursor }), 400, 'BAD_CURSOR', /other filters/],
      [query({ uid: 'uid-1', cursor: 'not a cursor' }), 400, 'VALIDATION_FAILED', /^querystring\/cursor must match pattern/],
      [query({ limit: 0 }), 400, 'VALIDATION_FAILED', /^querystring\/limit must be >= 1$/],
      [query({ limit: 1001 }), 400, 'VALIDATION_FAILED', /^querystring\/limit must be <= 1000$/],
      [query({ limit: 'ten' }), 400, 'VALIDATION_FAILED', /^querystring\/limit must be integer$/],
      [query({ limit: '1.5' }), 400, 'VALIDATION_FAILED', /^querystring\/limit must be integer$/],
      [query({ limit: '' }), 400, 'VALIDATION_FAILED', /^querystring\/limit must be integer$/],
      ['limit=1&limit=2', 400, 'VALIDATION_FAILED', /^querystring\/limit must be integer$/],
      ['uid=a&uid=b', 400, 'VALIDATION_FAILED', /^querystring\/uid must be string$/],
      [query({ uid: '' }), 400, 'VALIDATION_FAILED', /^querystring\/uid must NOT have fewer than 1 characters$/],
      [query({ project_id: 'x\u0001' }), 400, 'VALIDATION_FAILED', /^querystring\/project_id must match pattern/],
      [query({ park: 'p1' }), 400, 'VALIDATION_FAILED', /^querystring has unknown field "park"$/],
    ];
    for (const [q, status, code, message] of cases) {
      const res = await get(`/v1/audit?${q}`);
      expect(res.status, q).toBe(status);
      expect(res.body.code, q).toBe(code);
      expect(res.body.message, q).toMatch(message);
    }
    // A park gone from parks still shows the rows it has; only a park with neither is unknown.
    await db.pool.query(`INSERT INTO call_center_audit (project_id, uid, park_id, action, roles_before, roles_after, outcome, cause_kind, cause)
                         VALUES ('proj-1', 'uid-9', 'gone-park', 'revoke', '{op}', '{}', 'applied', 'sweep', '{"kind":"sweep","run_id":"5","reason":"park_gone","park_id":"gone-park"}')`);
    expect((await get('/v1/audit?park_id=gone-park')).body.entries).toHaveLength(1);
  });

  it('a token without audit:read is refused 403 on every audit route', async () => {
    for (const url of ['/v1/audit', '/v1/audit/hourly', '/v1/why?uid=uid-1']) {
      expect(await get(url, USERS_ONLY)).toEqual({ status: 403, body: { code: 'FORBIDDEN', message: 'this token lacks the scope audit:read' } });
      expect((await get(url, {})).status).toBe(401);
    }
  });

  it('is in the OpenAPI document with its query and entry schemas', async () => {
    const doc = (await app.inject('/docs')).json();
    const audit = doc.paths['/v1/audit'].get;
    expect(audit.security).toEqual([{ bearer: [] }]);
    expect(audit.parameters.map((p: { name: string }) => p.name).sort()).toEqual(['cursor', 'limit', 'park_id', 'project_id', 'since', 'uid', 'until']);
    expect(audit.parameters.find((p: { name: string }) => p.name === 'limit').schema).toMatchObject({ type: 'integer', minimum: 1, maximum: 1000, default: 100 });
    expect(JSON.stringify(doc)).toContain('AuditEntry');
    expect(doc.paths['/v1/audit/hourly'].get).toBeDefined();
    expect(doc.paths['/v1/why'].get).toBeDefined();
  });
});

describe('GET /v1/audit/hourly', () => {
  it('counts the applied changes of each park per hour, oldest hour first, adoptions and failures left out', async () => {
    await db.pool.query(`
      INSERT INTO call_center_audit (at, project_id, uid, park_id, action, roles_before, roles_after, outcome, cause_kind, cause)
      SELECT now() - make_interval(hours => h), 'proj-h', 'uid-h', park, action, '{}', '{op}', outcome, 'sweep', '{"kind":"sweep","run_id":"1","reason":"interval","park_id":"h"}'
        FROM (VALUES (0, 'h1', 'roles', 'applied'), (0, 'h1', 'revoke', 'applied'), (0, 'h1', 'profile', 'applied'), (0, 'h1', 'adopt', 'applied'),
                     (0, 'h1', 'roles', 'parked'), (2, 'h1', 'roles', 'applied'), (2, 'h2', 'roles', 'applied'), (30, 'h2', 'roles', 'applied'))
             AS c(h, park, action, outcome)`);
    const res = await get('/v1/audit/hourly?hours=3');
    expect(res.status).toBe(200);
    expect(res.body.hours).toBe(3);
    const start = Date.parse(res.body.start);
    expect(start % 3_600_000).toBe(0);
    // Expected from the rows' own times and the answer's first hour (the hour may turn between the insert and the read).
    const { rows } = await db.pool.query<{ park_id: string; ms: number }>(
      `SELECT park_id, extract(epoch FROM at) * 1000 AS ms FROM call_center_audit WHERE uid = 'uid-h' AND outcome = 'applied' AND action <> 'adopt'`,
    );
    const want = (park: string) => {
      const changes = [0, 0, 0];
      for (const r of rows) if (r.park_id === park && r.ms >= start) changes[Math.min(2, Math.floor((r.ms - start) / 3_600_000))]! += 1;
      return { park_id: park, changes, total: changes.reduce((a, b) => a + b, 0) };
    };
    const byPark = Object.fromEntries(res.body.parks.map((p: { park_id: string }) => [p.park_id, p]));
    expect(byPark.h1).toEqual(want('h1'));
    expect(byPark.h2).toEqual(want('h2'));
    // Almost always: two hours ago is the first bucket, and three changes (roles, revoke, profile) are in the current one.
    expect(want('h1').total).toBe(4);
    // The fixture's rows of 2024 are far outside the window.
    expect(byPark.p2).toBeUndefined();
    const day = (await get('/v1/audit/hourly')).body;
    expect(day.hours).toBe(24);
    expect(day.parks.find((p: { park_id: string }) => p.park_id === 'h2').changes).toHaveLength(24);
    expect((await get('/v1/audit/hourly?hours=48')).body.parks.find((p: { park_id: string }) => p.park_id === 'h2').total).toBe(2);
    for (const [q, message] of [
      ['hours=0', /^querystring\/hours must be >= 1$/],
      ['hours=169', /^querystring\/hours must be <= 168$/],
      ['hours=day', /^querystring\/hours must be integer$/],
    ] as const) {
      expect(await get(`/v1/audit/hourly?${q}`)).toEqual({ status: 400, body: { code: 'VALIDATION_FAILED', message: expect.stringMatching(message) } });
    }
  });
});

describe('query plans', () => {
  let big: TestDatabase;

  beforeAll(async () => {
    // Enough rows that a plan is a choice: 60,000 over 3,000 uids, 20 projects and 50 parks.
    big = await createTestDatabase();
    await big.pool.query(`
      INSERT INTO call_center_audit (at, project_id, uid, park_id, action, roles_before, roles_after, outcome, cause_kind, cause)
      SELECT now() - make_interval(secs => 60000 - i), 'proj-' || (i % 20), 'uid-' || (i * 7919 % 3000),
             'park-' || (i % 50), 'roles', '{}', '{op}', 'applied', 'event', '{"kind":"event","events":[]}'
        FROM generate_series(1, 60000) i;
      ANALYZE call_center_audit;`);
  });
  afterAll(async () => {
    await big?.drop();
  });

  const plan = async (q: Partial<AuditPageQuery>) => {
    const { text, values } = auditPageSql({ uid: null, projectId: null, parkId: null, since: null, until: null, beforeId: null, limit: 100, ...q });
    const { rows } = await big.pool.query(`EXPLAIN ${text}`, values);
    return rows.map((r: { 'QUERY PLAN': string }) => r['QUERY PLAN']).join('\n');
  };

  it('a page by uid reads the (uid, id) index, never the table; a page by nothing walks the primary key backward', async () => {
    // A uid's rows are found through its index, both columns in the index condition: read at once (a bitmap, for a
    // uid with a few rows) or in id order; never a scan of the table or of the primary key.
    for (const q of [{ uid: 'uid-42' }, { uid: 'uid-42', beforeId: '50000', since: new Date(Date.now() - 3_600_000) }]) {
      const p = await plan(q);
      expect(p).toMatch(/(Index Scan Backward using|Bitmap Index Scan on) call_center_audit_uid_idx/);
      expect(p).not.toMatch(/Seq Scan|call_center_audit_pkey/);
    }
    expect(await plan({ uid: 'uid-42', beforeId: '50000' })).toMatch(/Index Cond: \(\(uid = 'uid-42'::text\) AND \(id < '50000'::bigint\)\)/);
    expect(await plan({})).toMatch(/Index Scan Backward using call_center_audit_pkey/);
  });
});
