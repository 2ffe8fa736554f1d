// Generated input for the api's write and read routes: thousands of random bodies (wrong types, unknown fields, huge
// numbers, SQL-looking strings, unicode, broken JSON) never cause a 5xx, and invalid ones change no table.
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildApp } from '../api/app.js';
import { createMetrics } from '../connector/metrics.js';
import { createTestDatabase, testConfig, testLogger, type TestDatabase } from './helpers.js';

const RUNS = 2_000;
const HEADERS = { authorization: 'Bearer prop-token', 'content-type': 'application/json' };
// Parks with unlikely ids, so a generated string never names one by chance.
const ON_PARK = 'park-on-7f3a';
const NEVER_PARK = 'park-never-7f3a';

let db: TestDatabase;
let app: FastifyInstance;
let cursors: string[] = [];
/** Answers seen per route, by code (or status): proves the generators reach the database checks, not only the schema. */
let seen = new Map<string, number>();

/** One digest of the captured tables, row versions included: any write changes it. */
async function checksum(): Promise<string> {
  const { rows } = await db.pool.query(`
    SELECT md5(string_agg(line, E'\\n' ORDER BY line)) AS sum FROM (
      SELECT 'parks' || p::text || p.xmin::text AS line FROM parks p
      UNION ALL SELECT 'roles' || r::text || r.xmin::text FROM roles r
      UNION ALL SELECT 'users' || u::text || u.xmin::text FROM users u
      UNION ALL SELECT 'ccp' || c::text || c.xmin::text FROM call_center_parks c) t`);
  return rows[0].sum as string;
}

const sqlish = fc.constantFrom(
  "'; DROP TABLE users; --",
  "' OR '1'='1",
  'p1\u0000',
  '$1',
  '%',
  '_',
  '\\',
  'NULL',
  '1; SELECT pg_sleep(10)',
  `${ON_PARK}' --`,
  '\u202e\ud83d\ude00\u0301',
  '\ud800',
);
const text = fc.oneof(
  { weight: 30, arbitrary: fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), sqlish, fc.string({ minLength: 1, maxLength: 20 })) },
  { weight: 1, arbitrary: fc.constant('x'.repeat(70_000)) },
);
const number = fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.constantFrom(1e308, -1e308, 2 ** 63, -0, 1001, 0, 0.5));
const scalar = fc.oneof(text, number, fc.boolean(), fc.constant(null));
const value = fc.oneof({ weight: 3, arbitrary: scalar }, fc.array(scalar, { maxLength: 4 }), fc.dictionary(fc.string({ maxLength: 8 }), scalar, { maxKeys: 3 }));
const unknownFields = fc.dictionary(fc.string({ minLength: 1, maxLength: 10 }), value, { maxKeys: 2 });
const missingPark = fc.oneof(text, fc.constantFrom('p1', 'P-1', ''));

/** A body: the route's fields drawn from the given generators (all of them, or any subset), sometimes unknown fields too. */
function bodyOf(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
  const record = fc.record(fields, { requiredKeys: [] });
  return fc.oneof(
    { weight: 4, arbitrary: fc.record(fields) },
    { weight: 2, arbitrary: record },
    { weight: 1, arbitrary: fc.tuple(record, unknownFields).map(([r, extra]) => ({ ...extra, ...r })) },
    { weight: 1, arbitrary: fc.jsonValue() },
  );
}

/** The payload as sent: usually the JSON of a body, sometimes raw text that may not be JSON at all. */
const payloadOf = (body: fc.Arbitrary<unknown>) =>
  fc.oneof({ weight: 9, arbitrary: body.map((b) => JSON.stringify(b) ?? 'null') }, { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 50 }) });

async function send(url: string, payload: string): Promise<{ status: number; body: { code?: unknown; message?: unknown } }> {
  const res = await app.inject({ method: 'POST', url, payload, headers: HEADERS });
  const body = res.json();
  const key = String(body.code ?? res.statusCode);
  seen.set(key, (seen.get(key) ?? 0) + 1);
  return { status: res.statusCode, body };
}

function expectClientError(res: { status: number; body: { code?: unknown; message?: unknown } }): void {
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(res.status).toBeLessThan(500);
  expect(Object.keys(res.body).sort()).toEqual(['code', 'message']);
  expect(typeof res.body.code).toBe('string');
  expect(typeof res.body.message).toBe('string');
}

beforeAll(async () => {
  db = await createTestDatabase();
  await db.pool.query(`
    INSERT INTO parks (id, name) VALUES ('${ON_PARK}', 'on'), ('${NEVER_PARK}', 'never');
    INSERT INTO roles (id, park_id, name) VALUES ('role-on-7f3a', '${ON_PARK}', 'op'), ('role-never-7f3a', '${NEVER_PARK}', 'op');
    INSERT INTO users (park_id, yandex_uid, login, name) SELECT '${ON_PARK}', 'u' || i, 'l' || i, 'n' || i FROM generate_series(1, 30) i;
    INSERT INTO call_center_parks (park_id, project_id, role_map, enabled, enabled_at) VALUES ('${ON_PARK}', 'proj', '{"role-on-7f3a":"cc"}', true, now());`);
  app = await buildApp({
    config: testConfig(db, { API_TOKENS: 'prop-token=sync:write,users:read' }),
    pool: db.pool,
    log: testLogger(),
    metrics: createMetrics({ defaultMetrics: false }),
    readiness: {},
  });
  for (let cursor: string | undefined, i = 0; i < 3; i++) {
    const res = await send('/v1/users/list', JSON.stringify({ park_id: ON_PARK, limit: 7, ...(cursor ? { cursor } : {}) }));
    cursor = (res.body as { cursor?: string }).cursor;
    if (cursor) cursors.push(cursor);
  }
  expect(cursors).toHaveLength(3);
});

afterAll(async () => {
  await app?.close();
  await db?.drop();
});

describe('generated input', () => {
  beforeEach(() => {
    seen = new Map();
  });

  it(`park/on: ${RUNS} invalid bodies answer a 4xx { code, message } and change no table`, async () => {
    const before = await checksum();
    // Bodies for the existing park always map a role it does not have, so none of them is valid.
    const foreignRoles = fc.array(
      fc.record({ role_id: fc.oneof(text, fc.constant('role-never-7f3a')).filter((r) => r !== 'role-on-7f3a'), call_center_role_id: text }),
      { minLength: 1, maxLength: 3 },
    );
    const body = fc.oneof(
      bodyOf({ park_id: missingPark, project_id: fc.oneof(text, value), roles: fc.oneof(foreignRoles, fc.constant([]), value), yandex_team_role_id: fc.oneof(text, value) }),
      bodyOf({ park_id: fc.constant(ON_PARK), project_id: text, roles: foreignRoles, yandex_team_role_id: fc.oneof(text, fc.constant(null)) }),
    );
    await fc.assert(
      fc.asyncProperty(payloadOf(body), async (payload) => expectClientError(await send('/v1/sync/call_center/park/on', payload))),
      { numRuns: RUNS },
    );
    expect(await checksum()).toBe(before);
    for (const code of ['VALIDATION_FAILED', 'BAD_REQUEST', 'PAYLOAD_TOO_LARGE', 'PARK_NOT_FOUND', 'ROLE_NOT_IN_PARK']) expect(seen.get(code), `${code} in ${JSON.stringify([...seen])}`).toBeGreaterThan(20);
  });

  it(`park/off: ${RUNS} invalid bodies answer a 4xx { code, message } and change no table`, async () => {
    const before = await checksum();
    const body = fc.oneof(
      bodyOf({ park_id: missingPark, revoke: fc.oneof(value, fc.boolean()) }),
      bodyOf({ park_id: fc.constant(NEVER_PARK), revoke: fc.oneof(value, fc.boolean()) }),
      bodyOf({ park_id: fc.constant(ON_PARK), revoke: value.filter((v) => typeof v !== 'boolean') }).filter(
        (b) => typeof b !== 'object' || b === null || !('park_id' in b) || 'revoke' in b,
      ),
    );
    await fc.assert(
      fc.asyncProperty(payloadOf(body), async (payload) => expectClientError(await send('/v1/sync/call_center/park/off', payload))),
      { numRuns: RUNS },
    );
    expect(await checksum()).toBe(before);
    for (const code of ['VALIDATION_FAILED', 'BAD_REQUEST', 'PARK_NOT_FOUND']) expect(seen.get(code), `${code} in ${JSON.stringify([...seen])}`).toBeGreaterThan(20);
  });

  it(`users/list: ${RUNS} random bodies never answer a 5xx and change no table`, async () => {
    const before = await checksum();
    const cursor = fc.oneof(
      value,
      fc.constantFrom(...cursors),
      fc.tuple(fc.constantFrom(...cursors), fc.nat(), fc.string({ minLength: 1, maxLength: 1 })).map(([c, i, ch]) => {
        const at = i % c.length;
        return c.slice(0, at) + ch + c.slice(at + 1);
      }),
      fc.base64String().map((s) => `${s.replace(/\+/g, '-').replace(/\//g, '_').replace(/=/g, '')}.abc`),
    );
    const since = fc.oneof(value, fc.date({ min: new Date(-1e14), max: new Date(1e14), noInvalidDate: true }).map((d) => d.toISOString()));
    const body = bodyOf({
      park_id: fc.oneof(missingPark, fc.constantFrom(ON_PARK, NEVER_PARK)),
      limit: fc.oneof(value, fc.integer({ min: -5, max: 1005 })),
      cursor: fc.oneof(cursor, fc.constant(undefined)),
      updated_since: fc.oneof(since, fc.constant(undefined)),
      include_disabled: fc.oneof(value, fc.boolean()),
    });
    await fc.assert(
      fc.asyncProperty(payloadOf(body), async (payload) => {
        const res = await send('/v1/users/list', payload);
        if (res.status === 200) expect(Array.isArray((res.body as { users?: unknown }).users)).toBe(true);
        else expectClientError(res);
      }),
      { numRuns: RUNS },
    );
    expect(await checksum()).toBe(before);
    for (const code of ['200', 'VALIDATION_FAILED', 'BAD_CURSOR', 'PARK_NOT_FOUND']) expect(seen.get(code), `${code} in ${JSON.stringify([...seen])}`).toBeGreaterThan(20);
  });
});
