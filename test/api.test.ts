// The HTTP api against a real PostgreSQL: every route's answers, auth, errors, idempotent toggles, pagination, shutdown.
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import { request as httpRequest } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp, type ApiDeps } from '../api/app.js';
import { startApi } from '../api/main.js';
import { createLogger } from '../connector/log.js';
import { createMetrics } from '../connector/metrics.js';
import { createTestDatabase, testConfig, testLogger, waitFor, type TestDatabase } from './helpers.js';

const WRITE = { authorization: 'Bearer w-token' };
const READ = { authorization: 'Bearer r-token' };
const TOKENS = 'w-token=sync:write,users:read;r-token=users:read';

let db: TestDatabase;
let app: FastifyInstance;
let deps: ApiDeps;

async function post(url: string, payload: unknown, headers: Record<string, string> = WRITE) {
  const res = await app.inject({ method: 'POST', url, payload: payload as object, headers });
  return { status: res.statusCode, body: res.json() };
}

const rowVersion = async (parkId: string) =>
  (await db.pool.query('SELECT xmin::text AS xmin, updated_at FROM call_center_parks WHERE park_id = $1', [parkId])).rows[0];

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    INSERT INTO parks (id, name) VALUES ('p1', 'Park one'), ('p2', 'Park two'), ('p3', 'Park three'), ('empty', 'No users');
    INSERT INTO roles (id, park_id, name) VALUES ('r1a', 'p1', 'operator'), ('r1b', 'p1', 'admin'), ('r2a', 'p2', 'operator'), ('r3a', 'p3', 'x');
    INSERT INTO users (park_id, yandex_uid, login, name, role_id, is_enabled)
      SELECT 'p2', 'uid' || i, 'login' || i, 'User ' || i, 'r2a', i % 5 <> 0 FROM generate_series(1, 25) i;`);
  deps = {
    config: testConfig(db, { API_TOKENS: TOKENS, API_BODY_LIMIT_BYTES: '2048' }),
    pool: db.pool,
    log: testLogger(),
    metrics: createMetrics({ defaultMetrics: false }),
    readiness: {},
  };
  app = await buildApp(deps);
});

afterAll(async () => {
  await app?.close();
  await db?.drop();
});

describe('auth', () => {
  it('a /v1 route without a token, with an unknown or malformed one answers 401 UNAUTHORIZED', async () => {
    for (const headers of [{} as Record<string, string>, { authorization: 'Bearer nope' }, { authorization: 'w-token' }, { authorization: 'Basic w-token' }]) {
      const res = await post('/v1/users/list', { park_id: 'p2' }, headers);
      expect(res).toEqual({ status: 401, body: { code: 'UNAUTHORIZED', message: expect.any(String) } });
    }
  });

  it('a token without the route scope answers 403 FORBIDDEN and changes nothing', async () => {
    const res = await post('/v1/sync/call_center/park/on', { park_id: 'p1', project_id: 'x', roles: [] }, READ);
    expect(res).toEqual({ status: 403, body: { code: 'FORBIDDEN', message: 'this token lacks the scope sync:write' } });
    expect(await rowVersion('p1')).toBeUndefined();
  });

  it('request logs are written, and never carry the bearer token', async () => {
    const lines: string[] = [];
    const logged = await buildApp({ ...deps, log: createLogger('trace', { write: (line: string) => void lines.push(line) }) });
    try {
      await logged.inject({ method: 'POST', url: '/v1/users/list', payload: { park_id: 'p2', limit: 1 }, headers: READ });
      await logged.inject({ method: 'POST', url: '/v1/users/list', payload: { park_id: 'p2' }, headers: { authorization: 'Bearer wrong-secret' } });
    } finally {
      await logged.close();
    }
    expect(lines.some((l) => l.includes('request completed'))).toBe(true);
    expect(lines.join('')).not.toMatch(/r-token|wrong-secret/);
  });

  it('more requests a minute than API_RATE_LIMIT_PER_MINUTE for one token answers 429 RATE_LIMITED, other tokens unaffected', async () => {
    const limited = await buildApp({ ...deps, config: { ...deps.config, API_RATE_LIMIT_PER_MINUTE: 3 } });
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) {
        statuses.push((await limited.inject({ method: 'GET', url: '/v1/sync/call_center/parks', headers: READ })).statusCode);
      }
      expect(statuses).toEqual([200, 200, 200, 429]);
      const res = await limited.inject({ method: 'GET', url: '/v1/sync/call_center/parks', headers: READ });
      expect(res.json()).toMatchObject({ code: 'RATE_LIMITED' });
      expect(res.headers['retry-after']).toBeDefined();
      expect((await limited.inject({ method: 'GET', url: '/v1/sync/call_center/parks', headers: WRITE })).statusCode).toBe(200);
    } finally {
      await limited.close();
    }
  });
});

describe('POST /v1/sync/call_center/park/on', () => {
  const on = '/v1/sync/call_center/park/on';

  it('turns sync on and answers the sync record; an identical repeat writes no new row version', async () => {
    const body = { park_id: 'p1', project_id: 'proj-1', roles: [{ role_id: 'r1b', call_center_role_id: 'cc-admin' }, { role_id: 'r1a', call_center_role_id: 'cc-op' }] };
    const first = await post(on, body);
    expect(first.status).toBe(200);
    expect(first.body).toEqual({
      park_id: 'p1',
      project_id: 'proj-1',
      enabled: true,
      roles: [{ role_id: 'r1a', call_center_role_id: 'cc-op' }, { role_id: 'r1b', call_center_role_id: 'cc-admin' }],
      yandex_team_role_id: null,
      revoke_on_disable: true,
      enabled_at: expect.any(String),
      disabled_at: null,
      updated_at: expect.any(String),
    });
    const stored = await db.pool.query('SELECT role_map FROM call_center_parks WHERE park_id = $1', ['p1']);
    expect(stored.rows[0].role_map).toEqual({ r1a: 'cc-op', r1b: 'cc-admin' });
    const version = await rowVersion('p1');

    const repeat = await post(on, body);
    expect(repeat).toEqual(first);
    expect(await rowVersion('p1')).toEqual(version);
  });

  it('a repeat with another mapping updates the record and keeps enabled_at', async () => {
    const before = await post(on, { park_id: 'p1', project_id: 'proj-1', roles: [{ role_id: 'r1a', call_center_role_id: 'cc-op' }] });
    const version = await rowVersion('p1');
    const res = await post(on, { park_id: 'p1', project_id: 'proj-1', roles: [{ role_id: 'r1a', call_center_role_id: 'cc-op' }], yandex_team_role_id: 'cc-yt' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ yandex_team_role_id: 'cc-yt', enabled_at: before.body.enabled_at, roles: [{ role_id: 'r1a', call_center_role_id: 'cc-op' }] });
    expect((await rowVersion('p1'))!.xmin).not.toBe(version!.xmin);
  });

  it('an unknown park is 404 PARK_NOT_FOUND; a role of another park is 400 ROLE_NOT_IN_PARK naming it', async () => {
    expect(await post(on, { park_id: 'nope', project_id: 'x', roles: [] })).toEqual({
      status: 404,
      body: { code: 'PARK_NOT_FOUND', message: 'park nope does not exist' },
    });
    const res = await post(on, { park_id: 'p3', project_id: 'x', roles: [{ role_id: 'r3a', call_center_role_id: 'a' }, { role_id: 'r2a', call_center_role_id: 'b' }] });
    expect(res).toEqual({ status: 400, body: { code: 'ROLE_NOT_IN_PARK', message: 'role r2a is not a role of park p3' } });
    expect(await rowVersion('p3')).toBeUndefined();
  });

  it.each([
    ['a role mapped twice', { park_id: 'p3', project_id: 'x', roles: [{ role_id: 'r3a', call_center_role_id: 'a' }, { role_id: 'r3a', call_center_role_id: 'b' }] }, /role r3a more than once/],
    ['an unknown field', { park_id: 'p3', project_id: 'x', roles: [], extra: 1 }, /unknown field "extra"/],
    ['an unknown field in a role', { park_id: 'p3', project_id: 'x', roles: [{ role_id: 'r3a', call_center_role_id: 'a', x: 1 }] }, /body\/roles\/0 has unknown field "x"/],
    ['a missing field', { park_id: 'p3', roles: [] }, /missing required field "project_id"/],
    ['a wrong type', { park_id: 'p3', project_id: 7, roles: [] }, /body\/project_id must be string/],
    ['an empty id', { park_id: '', project_id: 'x', roles: [] }, /body\/park_id/],
    ['a NUL in an id', { park_id: 'p\u00003', project_id: 'x', roles: [] }, /body\/park_id must match pattern/],
    ['a body that is not an object', [1, 2], /body must be object/],
  ])('%s is 400 VALIDATION_FAILED naming the field', async (_name, body, message) => {
    const res = await post(on, body);
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ code: 'VALIDATION_FAILED', message: expect.stringMatching(message) });
    expect(await rowVersion('p3')).toBeUndefined();
  });

  it('invalid JSON is 400 BAD_REQUEST, a body over the limit 413, another media type 415', async () => {
    const send = (payload: string, contentType: string) =>
      app.inject({ method: 'POST', url: on, payload, headers: { ...WRITE, 'content-type': contentType } });
    const bad = await send('{"park_id": ', 'application/json');
    expect([bad.statusCode, bad.json().code]).toEqual([400, 'BAD_REQUEST']);
    const poisoned = await send('{"park_id":"p3","__proto__":{"x":1}}', 'application/json');
    expect([poisoned.statusCode, poisoned.json().code]).toEqual([400, 'BAD_REQUEST']);
    const deep = await send(`${'{"a":'.repeat(300)}1${'}'.repeat(300)}`, 'application/json');
    expect([deep.statusCode, deep.json().code]).toEqual([400, 'VALIDATION_FAILED']);
    const empty = await send('', 'application/json');
    expect([empty.statusCode, empty.json().code]).toEqual([400, 'BAD_REQUEST']);
    const big = await send(JSON.stringify({ park_id: 'p3', project_id: 'x'.repeat(3000), roles: [] }), 'application/json');
    expect([big.statusCode, big.json().code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
    const text = await send('park_id=p3', 'text/plain');
    expect([text.statusCode, text.json().code]).toEqual([415, 'UNSUPPORTED_MEDIA_TYPE']);
    expect(await rowVersion('p3')).toBeUndefined();
  });
});

describe('POST /v1/sync/call_center/park/off', () => {
  const off = '/v1/sync/call_center/park/off';

  it('turns sync off with revoke by default; a repeat writes nothing; another revoke is written', async () => {
    await post('/v1/sync/call_center/park/on', { park_id: 'p2', project_id: 'proj-2', roles: [{ role_id: 'r2a', call_center_role_id: 'op' }] });
    const first = await post(off, { park_id: 'p2' });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ park_id: 'p2', enabled: false, revoke_on_disable: true, disabled_at: expect.any(String), project_id: 'proj-2' });
    const version = await rowVersion('p2');
    expect(await post(off, { park_id: 'p2', revoke: true })).toEqual(first);
    expect(await rowVersion('p2')).toEqual(version);

    const keep = await post(off, { park_id: 'p2', revoke: false });
    expect(keep.body).toMatchObject({ enabled: false, revoke_on_disable: false, disabled_at: first.body.disabled_at });
    expect((await rowVersion('p2'))!.xmin).not.toBe(version!.xmin);
  });

  it('an unknown park and a park whose sync was never on are 404 PARK_NOT_FOUND with distinct messages', async () => {
    expect(await post(off, { park_id: 'nope' })).toEqual({ status: 404, body: { code: 'PARK_NOT_FOUND', message: 'park nope does not exist' } });
    expect(await post(off, { park_id: 'p3' })).toEqual({
      status: 404,
      body: { code: 'PARK_NOT_FOUND', message: 'call-center sync was never turned on for park p3' },
    });
  });

  it('a non-boolean revoke is 400 VALIDATION_FAILED', async () => {
    expect(await post(off, { park_id: 'p2', revoke: 'yes' })).toEqual({
      status: 400,
      body: { code: 'VALIDATION_FAILED', message: 'body/revoke must be boolean' },
    });
  });
});

describe('POST /v1/users/list', () => {
  const list = (body: object) => post('/v1/users/list', body, READ);

  it('walks every enabled user of the park once, in pages, with no cursor on the last page', async () => {
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const res = await list({ park_id: 'p2', limit: 7, ...(cursor ? { cursor } : {}) });
      expect(res.status).toBe(200);
      seen.push(...res.body.users.map((u: { id: string }) => u.id));
      cursor = res.body.cursor;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(new Set(seen).size).toBe(20);
    expect(seen).toEqual([...seen].sort());
    const first = (await list({ park_id: 'p2', limit: 1 })).body.users[0];
    expect(first).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      park_id: 'p2',
      yandex_uid: expect.stringMatching(/^uid\d+$/),
      login: expect.any(String),
      name: expect.any(String),
      phone: null,
      email: null,
      role_id: 'r2a',
      is_enabled: true,
      is_yandex_team: false,
      created_at: expect.any(String),
      updated_at: expect.any(String),
    });
  });

  it('include_disabled adds disabled users; updated_since keeps users changed since then', async () => {
    const all = await list({ park_id: 'p2', limit: 1000, include_disabled: true });
    expect(all.body.users).toHaveLength(25);
    expect(all.body.cursor).toBeUndefined();
    await db.pool.query(`UPDATE users SET name = name || '!' WHERE park_id = 'p2' AND login IN ('login1', 'login2')`);
    const { rows } = await db.pool.query(`SELECT min(updated_at) AS t FROM users WHERE login IN ('login1', 'login2')`);
    const recent = await list({ park_id: 'p2', updated_since: rows[0].t.toISOString() });
    expect(recent.body.users.map((u: { login: string }) => u.login).sort()).toEqual(['login1', 'login2']);
  });

  it('a park without users answers an empty page; an unknown park 404 PARK_NOT_FOUND', async () => {
    expect(await list({ park_id: 'empty' })).toEqual({ status: 200, body: { users: [] } });
    expect((await list({ park_id: 'nope' })).body).toEqual({ code: 'PARK_NOT_FOUND', message: 'park nope does not exist' });
  });

  it("answers each user as PostgreSQL's json and to_char write it: truncated milliseconds, escapes, odd years, infinity as null", async () => {
    await db.pool.query(`
      INSERT INTO parks (id, name) VALUES ('odd', 'Odd times');
      INSERT INTO users (park_id, yandex_uid, login, name, phone, email, is_enabled, is_yandex_team, created_at, updated_at) VALUES
        ('odd', NULL, 'a"b\\c', E'tab\\there\\nnl \\u0001 é 😀', '', NULL, true, true, '2026-11-30 23:50:02.123999+00', '2026-11-30 23:50:02+00'),
        ('odd', 'u2', 'x', 'y', NULL, '', false, false, '2026-11-30 23:50:02.1+00', '0005-01-02 03:04:05.006+00'),
        ('odd', 'u3', 'x', 'y', NULL, NULL, true, false, '0044-03-15 12:00:00+00 BC', '12345-06-07 08:09:10.5+00'),
        ('odd', 'u4', 'x', 'y', NULL, NULL, true, false, 'infinity', '-infinity'),
        ('odd', 'u5', 'x', 'y', NULL, NULL, true, false, '2026-01-01 00:00:00.999999+00', '2026-06-01 12:00:00.000001+03')`);
    const iso = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
    const { rows } = await db.pool.query(
      `SELECT json_build_object('id', id, 'park_id', park_id, 'yandex_uid', yandex_uid, 'login', login, 'name', name, 'phone', phone,
              'email', email, 'role_id', role_id, 'is_enabled', is_enabled, 'is_yandex_team', is_yandex_team,
              'created_at', ${iso('created_at')}, 'updated_at', ${iso('updated_at')})::text AS user
         FROM users WHERE park_id = 'odd' ORDER BY id`,
    );
    const expected = rows.map((r: { user: string }) => JSON.stringify(JSON.parse(r.user)));
    const pages: string[] = [];
    let cursor: string | undefined;
    do {
      const res = await app.inject({ method: 'POST', url: '/v1/users/list', payload: { park_id: 'odd', limit: 2, include_disabled: true, ...(cursor ? { cursor } : {}) }, headers: READ });
      pages.push(...(res.json().users as unknown[]).map((u) => JSON.stringify(u)));
      expect(res.body).toContain(pages.at(-1));
      cursor = res.json().cursor;
    } while (cursor);
    expect(pages).toEqual(expected);
  });

  it('walks the park once in order whatever the page size, also after more page sizes than are prepared', async () => {
    const everyone = (await list({ park_id: 'p2', limit: 1000 })).body.users.map((u: { id: string }) => u.id);
    const since = (await db.pool.query(`SELECT min(updated_at) AS t FROM users WHERE park_id = 'p2'`)).rows[0].t.toISOString();
    for (const limit of [...Array.from({ length: 20 }, (_, i) => i + 1), 3, 7, 100]) {
      for (const filters of [{}, { updated_since: since }]) {
        const seen: string[] = [];
        let cursor: string | undefined;
        do {
          const res = await list({ park_id: 'p2', limit, ...filters, ...(cursor ? { cursor } : {}) });
          expect(res.status).toBe(200);
          expect(res.body.users.length).toBeLessThanOrEqual(limit);
          seen.push(...res.body.users.map((u: { id: string }) => u.id));
          cursor = res.body.cursor;
        } while (cursor);
        expect(seen).toEqual(everyone);
      }
    }
  });

  it('a garbage, tampered, other-park or other-filter cursor is 400 BAD_CURSOR', async () => {
    const { cursor } = (await list({ park_id: 'p2', limit: 2 })).body;
    const [payload, tag] = cursor.split('.');
    const decoded = Buffer.from(payload, 'base64url').toString();
    const forged = `${Buffer.from(decoded.replace(/"[0-9a-f]{8}-/, '"00000000-')).toString('base64url')}.${tag}`;
    for (const [body, why] of [
      [{ park_id: 'p2', cursor: 'abc.def' }, /damaged/],
      [{ park_id: 'p2', cursor: forged }, /damaged/],
      [{ park_id: 'p1', cursor }, /another park/],
      [{ park_id: 'p2', cursor, include_disabled: true }, /other filters/],
    ] as const) {
      expect(await list(body)).toEqual({ status: 400, body: { code: 'BAD_CURSOR', message: expect.stringMatching(why) } });
    }
    expect((await list({ park_id: 'p2', cursor: 'not a cursor' })).body.code).toBe('VALIDATION_FAILED');
  });

  it.each([
    [{ park_id: 'p2', limit: 0 }, /body\/limit must be >= 1/],
    [{ park_id: 'p2', limit: 1001 }, /body\/limit must be <= 1000/],
    [{ park_id: 'p2', limit: 1.5 }, /body\/limit must be integer/],
    [{ park_id: 'p2', limit: '10' }, /body\/limit must be integer/],
    [{ park_id: 'p2', updated_since: 'yesterday' }, /body\/updated_since must match format "date-time"/],
    [{ park_id: 'p2', updated_since: '0000-01-01T00:00:00Z' }, /updated_since/],
    [{ park_id: 'p2', include_disabled: 1 }, /body\/include_disabled must be boolean/],
  ])('%j is 400 VALIDATION_FAILED', async (body, message) => {
    expect(await list(body)).toEqual({ status: 400, body: { code: 'VALIDATION_FAILED', message: expect.stringMatching(message) } });
  });
});

describe('GET /v1/sync/call_center/parks', () => {
  const status = async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/sync/call_center/parks', headers: READ });
    expect(res.statusCode).toBe(200);
    return res.json().parks as Array<Record<string, unknown>>;
  };

  it('shows a park turned on, off and on again, with its grants, last event, last sweep and lag', async () => {
    const on = { park_id: 'empty', project_id: 'proj-e', roles: [] };
    await post('/v1/sync/call_center/park/on', on);
    expect((await status()).find((p) => p.park_id === 'empty')).toMatchObject({ enabled: true, project_id: 'proj-e', users_granted: 0, last_event: null, last_sweep: null, lag_seconds: null });
    await post('/v1/sync/call_center/park/off', { park_id: 'empty', revoke: false });
    expect((await status()).find((p) => p.park_id === 'empty')).toMatchObject({ enabled: false, revoke_on_disable: false });

    await db.pool.query(`
      INSERT INTO call_center_grants (project_id, uid, park_id, role_ids) VALUES ('proj-e', 'u1', 'empty', '{op}'), ('proj-e', 'u2', 'empty', '{}'), ('proj-e', 'u3', 'empty', '{a,b}');
      INSERT INTO call_center_sync_progress (park_id, last_event_at, last_event_lsn, last_commit_ts, events_applied)
        VALUES ('empty', '2026-01-01T00:00:02.5Z', '0/16B3748', '2026-01-01T00:00:00Z', 42);
      INSERT INTO reconcile_runs (park_id, project_id, reason, finished_at, checked, in_sync, corrected_grants, revoked)
        VALUES ('empty', 'proj-e', 'interval', now(), 10, 7, 2, 1), ('empty', 'proj-e', 'park-on', now(), 3, 3, 0, 0);`);
    await post('/v1/sync/call_center/park/on', on);
    const park = (await status()).find((p) => p.park_id === 'empty');
    expect(park).toMatchObject({
      enabled: true,
      users_granted: 2,
      last_event: { at: '2026-01-01T00:00:02.500Z', lsn: '0/16B3748', commit_ts: '2026-01-01T00:00:00.000Z', events_applied: 42, skipped_no_uid: 0, dead_lettered: 0 },
      last_sweep: { reason: 'park-on', checked: 3, in_sync: 3, drift: 0, finished_at: expect.any(String), error: null },
      lag_seconds: 2.5,
    });
    expect((await status()).map((p) => p.park_id)).toEqual(['empty', 'p1', 'p2']);
  });

  it("counts a sweep's repairs as drift, but not the revocations of a park turned off (the toggle's work)", async () => {
    await post('/v1/sync/call_center/park/on', { park_id: 'p3', project_id: 'proj-3', roles: [] });
    await post('/v1/sync/call_center/park/off', { park_id: 'p3' });
    await db.pool.query(`INSERT INTO reconcile_runs (park_id, project_id, reason, finished_at, revoked) VALUES ('p3', 'proj-3', 'park_off', now(), 5)`);
    expect((await status()).find((p) => p.park_id === 'p3')).toMatchObject({ enabled: false, last_sweep: { reason: 'park_off', revoked: 5, drift: 0 } });
    await db.pool.query(`INSERT INTO reconcile_runs (park_id, project_id, reason, finished_at, corrected_grants, revoked) VALUES ('p3', 'proj-3', 'interval', now(), 1, 2)`);
    expect((await status()).find((p) => p.park_id === 'p3')).toMatchObject({ last_sweep: { reason: 'interval', drift: 3 } });
  });

  it("tells the source's replication slot state: missing before any source created it", async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/sync/call_center/parks', headers: READ });
    expect(res.json().source).toEqual({ slot: deps.config.CDC_SLOT, state: 'missing', confirmed_lsn: null, lag_bytes: null, wal_status: null });
  });
});

describe('operations routes', () => {
  it('healthz is 200; readyz is 200 with every check, 503 NOT_READY naming a failing one', async () => {
    expect((await app.inject('/healthz')).json()).toEqual({ status: 'ok' });
    expect((await app.inject('/readyz')).json()).toEqual({ status: 'ready', checks: { database: { ok: true } } });
    const broken = await buildApp({
      ...deps,
      readinessTimeoutMs: 200,
      readiness: { kafka: async () => {}, callCenter: async () => Promise.reject(new Error('connect ECONNREFUSED')), hung: () => new Promise(() => {}) },
    });
    try {
      const res = await broken.inject('/readyz');
      expect(res.statusCode).toBe(503);
      expect(res.json()).toEqual({
        code: 'NOT_READY',
        message: 'not ready: callCenter, hung unreachable',
        checks: { database: { ok: true }, kafka: { ok: true }, callCenter: { ok: false, error: 'connect ECONNREFUSED' }, hung: { ok: false, error: 'no answer within 200 ms' } },
      });
    } finally {
      await broken.close();
    }
  });

  it('with the database down, a valid request is 503 DATABASE_UNAVAILABLE and readyz names the database', async () => {
    const deadPool = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:1/none', connectionTimeoutMillis: 500 });
    const down = await buildApp({ ...deps, pool: deadPool });
    try {
      const res = await down.inject({ method: 'POST', url: '/v1/users/list', payload: { park_id: 'p2' }, headers: READ });
      expect([res.statusCode, res.json().code]).toEqual([503, 'DATABASE_UNAVAILABLE']);
      const ready = await down.inject('/readyz');
      expect([ready.statusCode, ready.json().checks.database.ok]).toEqual([503, false]);
    } finally {
      await down.close();
      await deadPool.end();
    }
  });

  it('an unknown route is 404 NOT_FOUND', async () => {
    const res = await app.inject('/v2/nothing');
    expect([res.statusCode, res.json()]).toEqual([404, { code: 'NOT_FOUND', message: 'no route GET /v2/nothing' }]);
  });

  it('metrics is Prometheus text counting requests by route pattern', async () => {
    await app.inject('/healthz');
    const res = await app.inject('/metrics');
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expect(res.body).toMatch(/fleet_sync_http_requests_total\{method="GET",route="\/healthz",status="200"\} \d+/);
    expect(res.body).toMatch(/fleet_sync_http_requests_total\{method="POST",route="\/v1\/users\/list",status="400"\}/);
    expect(res.body).toContain('fleet_sync_http_request_duration_seconds_bucket');
  });

  it('docs is an OpenAPI document listing the /v1 paths with bearer security', async () => {
    const doc = (await app.inject('/docs')).json();
    expect(doc.openapi).toMatch(/^3\./);
    for (const path of ['/v1/sync/call_center/park/on', '/v1/sync/call_center/park/off', '/v1/users/list']) expect(doc.paths[path].post).toBeDefined();
    expect(doc.paths['/v1/sync/call_center/parks'].get).toBeDefined();
    expect(doc.paths['/v1/users/list'].post.security).toEqual([{ bearer: [] }]);
    expect(doc.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
  });
});

describe('graceful shutdown over a real socket', () => {
  it('close lets an in-flight request finish with 200', async () => {
    let release!: () => void;
    let started!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const running = new Promise<void>((r) => (started = r));
    const slow = await buildApp({ ...deps, readiness: { slow: async () => { started(); await gate; } }, readinessTimeoutMs: 30_000 });
    const url = await slow.listen({ host: '127.0.0.1', port: 0 });
    const inFlight = httpRequest(`${url}/readyz`);
    await running;
    const closed = slow.close();
    release();
    const res = await inFlight;
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toMatchObject({ status: 'ready' });
    await closed;
  });

  it('startApi listens, answers health, reports an unreachable call center in readyz, and closes', async () => {
    const api = await startApi({
      config: { ...deps.config, API_HOST: '127.0.0.1', API_PORT: 0, CALL_CENTER_URL: 'http://127.0.0.1:9' },
      log: deps.log,
      metrics: createMetrics({ defaultMetrics: false }),
    });
    try {
      expect((await httpRequest(`${api.url}/healthz`)).statusCode).toBe(200);
      const ready = await httpRequest(`${api.url}/readyz`);
      expect(ready.statusCode).toBe(503);
      expect((await ready.body.json()) as object).toMatchObject({ checks: { database: { ok: true }, kafka: { ok: true }, callCenter: { ok: false } } });
      const list = await httpRequest(`${api.url}/v1/users/list`, { method: 'POST', headers: { ...READ, 'content-type': 'application/json' }, body: '{"park_id":"p2","limit":1}' });
      expect(list.statusCode).toBe(200);
      await list.body.dump();
    } finally {
      await api.close();
    }
    await expect(httpRequest(`${api.url}/healthz`)).rejects.toThrow();
  });
});

describe('pagination under concurrent writes', () => {
  it('a walk of 3,000 users with limit 97 returns every user that existed throughout exactly once', async () => {
    await db.pool.query(`INSERT INTO parks (id, name) VALUES ('big', 'Big park');
      INSERT INTO users (park_id, yandex_uid, login, name) SELECT 'big', 'b' || i, 'b' || i, 'B ' || i FROM generate_series(1, 3000) i;`);
    const before = new Set((await db.pool.query(`SELECT id FROM users WHERE park_id = 'big'`)).rows.map((r) => r.id as string));
    let walking = true;
    let writes = 0;
    const writer = (async () => {
      // Another connection inserts users and updates existing ones (including disabling) while the walk runs.
      while (walking) {
        await db.pool.query(`INSERT INTO users (park_id, login, name) SELECT 'big', 'new', 'New' FROM generate_series(1, 20)`);
        await db.pool.query(`UPDATE users SET name = name || '.', is_enabled = NOT is_enabled
          WHERE id IN (SELECT id FROM users WHERE park_id = 'big' ORDER BY random() LIMIT 50)`);
        writes++;
      }
    })();
    const seen = new Map<string, number>();
    let cursor: string | undefined;
    try {
      await waitFor(() => writes > 0, { what: 'the writer to start' });
      do {
        const res = await post('/v1/users/list', { park_id: 'big', limit: 97, include_disabled: true, ...(cursor ? { cursor } : {}) }, READ);
        expect(res.status).toBe(200);
        for (const u of res.body.users as Array<{ id: string }>) seen.set(u.id, (seen.get(u.id) ?? 0) + 1);
        cursor = res.body.cursor;
        // Every page boundary sees new inserts and updates, however fast the walk is.
        const at = writes;
        await waitFor(() => writes > at, { what: 'the writer to write between pages' });
      } while (cursor);
    } finally {
      walking = false;
      await writer;
    }
    expect(writes).toBeGreaterThan(30);
    for (const id of before) expect(seen.get(id)).toBe(1);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
  });
});
