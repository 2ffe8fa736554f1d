// The api against token leaks and token guessing (SPEC.md §4): no token reaches a log line, whether it came in the
// status page's ?token= or an Authorization header; failed authentications are limited per client.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildApp, type ApiDeps } from '../api/app.js';
import { FAILED_AUTH_PER_MINUTE } from '../api/failed-auth.js';
import { createLogger } from '../connector/log.js';
import { createMetrics } from '../connector/metrics.js';
import { createTestDatabase, testConfig, type TestDatabase } from './helpers.js';

// Random, so that finding one in a log line can only mean it leaked there.
const secret = (name: string) => `${name}-${randomBytes(12).toString('hex')}`;
const READER = secret('reader');
const STATUS = '/v1/sync/call_center/parks';
const GUESSER = '203.0.113.66';
const OPERATOR = '198.51.100.7';

let db: TestDatabase;
const apps: FastifyInstance[] = [];

/** An app of its own (a fresh failure count) whose log lines, at every level, are kept in `lines`. */
async function loggedApp() {
  const lines: string[] = [];
  const deps: ApiDeps = {
    config: testConfig(db, { API_TOKENS: `${READER}=users:read` }),
    pool: db.pool,
    log: createLogger('trace', { write: (line: string) => void lines.push(line) }),
    metrics: createMetrics({ defaultMetrics: false }),
    readiness: {},
  };
  const app = await buildApp(deps);
  apps.push(app);
  const entries = () => lines.map((line) => JSON.parse(line) as { level: number; msg: string; req?: { url: string } });
  return { app, lines, entries };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

beforeAll(async () => {
  db = await createTestDatabase();
});

afterEach(async () => {
  vi.useRealTimers();
  await Promise.all(apps.splice(0).map((app) => app.close()));
});

afterAll(async () => {
  await db?.drop();
});

describe('tokens in the logs', () => {
  it('the status page with ?token=, /v1 with a good or a bad bearer token: requests are logged, no token value is', async () => {
    const { app, lines, entries } = await loggedApp();
    const wrong = secret('wrong');
    const inQuery = secret('query');

    const page = await app.inject({ method: 'GET', url: `/?token=${READER}` });
    expect(page.statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: `/?view=parks&Access_Token=${inQuery}&%74oken=${inQuery}` })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: STATUS, headers: bearer(READER) })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: STATUS, headers: bearer(wrong) })).statusCode).toBe(401);
    expect((await app.inject({ method: 'GET', url: `${STATUS}?token=${wrong}`, headers: bearer(wrong) })).statusCode).toBe(401);

    const urls = entries().flatMap((e) => (e.msg === 'incoming request' && e.req ? [e.req.url] : []));
    expect(urls).toEqual([
      '/?token=[redacted]',
      '/?view=parks&Access_Token=[redacted]&%74oken=[redacted]',
      STATUS,
      STATUS,
      `${STATUS}?token=[redacted]`,
    ]);
    expect(entries().filter((e) => e.msg === 'request completed')).toHaveLength(5);
    const log = lines.join('');
    for (const token of [READER, wrong, inQuery]) expect(log).not.toContain(token);
  });
});

describe('failed authentications', () => {
  it('a burst of bad tokens from one client is answered 429 RATE_LIMITED past the limit and warned once; another client is still served', async () => {
    const { app, entries } = await loggedApp();
    const guess = (token: string, remoteAddress = GUESSER) => app.inject({ method: 'GET', url: STATUS, headers: bearer(token), remoteAddress });

    const statuses: number[] = [];
    for (let i = 0; i < FAILED_AUTH_PER_MINUTE + 5; i++) statuses.push((await guess(secret('guess'))).statusCode);
    expect(statuses).toEqual([...Array<number>(FAILED_AUTH_PER_MINUTE).fill(401), ...Array<number>(5).fill(429)]);

    const refused = await guess(secret('guess'));
    expect([refused.statusCode, refused.json()]).toEqual([429, { code: 'RATE_LIMITED', message: expect.stringMatching(/failed authentications/) }]);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    // Even the right token: otherwise a 429 for each wrong guess and a 200 for the right one would let guessing go on.
    expect((await guess(READER)).statusCode).toBe(429);

    expect((await guess(READER, OPERATOR)).statusCode).toBe(200);
    expect((await guess(secret('typo'), OPERATOR)).statusCode).toBe(401);

    const warnings = entries().filter((e) => e.level >= 40);
    expect(warnings).toEqual([expect.objectContaining({ msg: 'client locked out after too many failed authentications', client: GUESSER })]);
  });

  it('a locked-out client is served again once its minute is over, and its failures count afresh', async () => {
    const { app } = await loggedApp();
    const from = (token: string) => app.inject({ method: 'GET', url: STATUS, headers: bearer(token), remoteAddress: GUESSER });
    // Only the clock is faked: the limiter reads Date.now(), while sockets and timers stay real for the database.
    vi.useFakeTimers({ toFake: ['Date'] });
    const start = Date.now();

    for (let i = 0; i <= FAILED_AUTH_PER_MINUTE; i++) await from(secret('guess'));
    expect((await from(READER)).statusCode).toBe(429);

    vi.setSystemTime(start + 60_000);
    expect((await from(READER)).statusCode).toBe(200);
    expect((await from(secret('guess'))).statusCode).toBe(401);
  });
});
