// The call-center client against the simulator over loopback: results, retries under faults, limits, and errors.
import { getEventListeners } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createCallCenterClient, parseRetryAfterMs, type CallCenterClient, type CallCenterClientDeps } from '../connector/callcenter/client.js';
import { isFleetSyncError, type FleetSyncError } from '../connector/errors.js';
import { createLogger } from '../connector/log.js';
import { createMetrics } from '../connector/metrics.js';
import { waitFor } from './helpers.js';
import { createSimulator, type Simulator } from '../simulator/simulator.js';

const TOKEN = 'sEcReT-cc-t0ken-4c1d';
const logLines: string[] = [];
// Every client of this file logs at trace into `logLines`, so the last test can check that no line holds the token.
const log = createLogger('trace', { write: (line: string) => void logLines.push(line) });

let sim: Simulator;
const clients: CallCenterClient[] = [];

function client(overrides: Partial<CallCenterClientDeps> = {}): CallCenterClient {
  const c = createCallCenterClient({
    baseUrl: sim.url,
    token: TOKEN,
    timeoutMs: 2_000,
    concurrency: 16,
    ratePerProjectPerS: 100_000,
    retryBaseMs: 5,
    retryMaxMs: 50,
    log,
    ...overrides,
  });
  clients.push(c);
  return c;
}

async function failure(p: Promise<unknown>): Promise<FleetSyncError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!isFleetSyncError(e)) throw new Error(`expected a FleetSyncError, got ${String(e)}`);
  return e;
}

const profile = (uid: string) => ({ login: `login-${uid}`, name: `Name ${uid}`, phone: '+70000000000', email: `${uid}@example.com` });

beforeAll(async () => {
  sim = createSimulator({ token: TOKEN, seed: 7 });
  await sim.start();
});
afterEach(async () => {
  sim.setFaults({ errorRate: 0, latencyMs: 0, rateLimitRate: 0, retryAfterS: 1, rejectUids: [] });
  await Promise.all(clients.splice(0).map((c) => c.close()));
  sim.reset();
});
afterAll(async () => {
  await sim.stop();
});

describe('call-center client', { timeout: 15_000 }, () => {
  it('creates a user, reads it back, and reads null for an unknown uid', async () => {
    const cc = client();
    await cc.putUser('1001', profile('1001'));
    await cc.putUser('1002', { login: 'l', name: 'n' });
    expect(sim.state().users['1001']).toEqual(profile('1001'));
    expect(await cc.getUser('1001')).toEqual({ uid: '1001', ...profile('1001') });
    expect(await cc.getUser('1002')).toEqual({ uid: '1002', login: 'l', name: 'n', phone: null, email: null });
    expect(await cc.getUser('nobody')).toBeNull();
  });

  it('encodes uids and project ids that hold URL syntax', async () => {
    const cc = client();
    const uid = 'a/b c?d#e%';
    await cc.putUser(uid, profile('x'));
    await cc.setRoles('proj/1 ?', uid, ['r1']);
    expect(sim.rolesOf('proj/1 ?', uid)).toEqual(['r1']);
    expect(await cc.getUser(uid)).toMatchObject({ login: 'login-x' });
  });

  it('setRoles for a uid the call center does not know is CALL_CENTER_USER_MISSING; after putUser it lands', async () => {
    const cc = client();
    const e = await failure(cc.setRoles('p1', '2001', ['operator']));
    expect(e.code).toBe('CALL_CENTER_USER_MISSING');
    expect(e.details).toMatchObject({ status: 404, attempts: 1, method: 'PUT' });
    expect(sim.rolesOf('p1', '2001')).toEqual([]);

    await cc.putUser('2001', profile('2001'));
    await cc.setRoles('p1', '2001', ['operator']);
    expect(sim.state().projects).toEqual({ p1: { '2001': ['operator'] } });
  });

  it('setRoles with [] revokes every role and drops the user from the project listing', async () => {
    const cc = client();
    await cc.putUser('3001', profile('3001'));
    await cc.setRoles('p1', '3001', ['a', 'b']);
    await cc.setRoles('p2', '3001', ['c']);
    await cc.setRoles('p1', '3001', []);
    expect(sim.rolesOf('p1', '3001')).toEqual([]);
    expect((await cc.listProjectUsers('p1', { limit: 10 })).users).toEqual([]);
    expect(sim.rolesOf('p2', '3001')).toEqual(['c']);
    await cc.setRoles('p1', 'never-created', []); // revoking what was never granted is not an error
  });

  it('listProjectUsers walks all pages of 2,500 users exactly once', async () => {
    const expected = new Map<string, string[]>();
    for (let i = 0; i < 2_500; i++) {
      const uid = String(4_000_000 + i * 7);
      sim.putUserByHand(uid, profile(uid));
      sim.setRolesByHand('big', uid, [`role-${i % 3}`]);
      expected.set(uid, [`role-${i % 3}`]);
    }
    sim.setRolesByHand('other', '4000000', ['x']);
    const cc = client();
    const seen: string[] = [];
    const got = new Map<string, string[]>();
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await cc.listProjectUsers('big', cursor === undefined ? { limit: 300 } : { limit: 300, cursor });
      for (const u of page.users) {
        seen.push(u.uid);
        got.set(u.uid, u.role_ids);
      }
      cursor = page.nextCursor;
      pages++;
    } while (cursor !== undefined);
    expect(pages).toBe(9);
    expect(seen.length).toBe(2_500);
    expect(got).toEqual(expected);
  });

  it('under 30% errors, 10% 429 and latency, 300 concurrent setRoles all land and the retries are counted', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const cc = client({ metrics, concurrency: 32 });
    const uids = Array.from({ length: 300 }, (_, i) => `5${String(i).padStart(4, '0')}`);
    for (const uid of uids) sim.putUserByHand(uid, profile(uid));
    sim.setFaults({ errorRate: 0.3, rateLimitRate: 0.1, retryAfterS: 0, latencyMs: 3 });

    await Promise.all(uids.map((uid, i) => cc.setRoles(`proj-${i % 4}`, uid, [`r${i % 5}`, 'base'])));

    const expected: Record<string, Record<string, string[]>> = {};
    uids.forEach((uid, i) => ((expected[`proj-${i % 4}`] ??= {})[uid] = ['base', `r${i % 5}`].sort()));
    expect(sim.state().projects).toEqual(expected);
    const retries = await metrics.callCenterRetries.get();
    const byReason = Object.fromEntries(retries.values.map((v) => [v.labels.reason, v.value]));
    expect(byReason.server_error).toBeGreaterThan(0);
    expect(byReason.rate_limited).toBeGreaterThan(0);
    expect(sim.calls().faulted).toBe((byReason.server_error ?? 0) + (byReason.rate_limited ?? 0));
  });

  it('waits at least Retry-After seconds after a 429', async () => {
    const cc = client({ maxAttempts: 2 });
    sim.setFaults({ rateLimitRate: 1, retryAfterS: 1 });
    const started = performance.now();
    const e = await failure(cc.putUser('6001', profile('6001')));
    expect(performance.now() - started).toBeGreaterThanOrEqual(990);
    expect(e.code).toBe('CALL_CENTER_TRANSIENT');
    expect(e.details).toMatchObject({ status: 429, attempts: 2 });
    expect(parseRetryAfterMs('3')).toBe(3_000);
    expect(parseRetryAfterMs(new Date(Date.now() + 5_000).toUTCString())).toBeGreaterThan(3_000);
    expect(parseRetryAfterMs('soon')).toBeUndefined();
  });

  it('a uid the call center refuses is CALL_CENTER_REJECTED at once, not retried', async () => {
    const cc = client();
    sim.putUserByHand('7001', profile('7001'));
    sim.setFaults({ rejectUids: ['7001'] });
    const e = await failure(cc.setRoles('p1', '7001', ['a']));
    expect(e.code).toBe('CALL_CENTER_REJECTED');
    expect(e.retriable).toBe(false);
    expect(e.details).toMatchObject({ status: 422, attempts: 1, method: 'PUT', path: '/v1/projects/p1/users/7001/roles' });
    expect(String(e.details?.body)).toContain('REJECTED');
    expect(sim.calls().writes).toBe(1);
    expect(sim.rolesOf('p1', '7001')).toEqual([]);
  });

  it('when maxAttempts run out the error is CALL_CENTER_TRANSIENT, retriable', async () => {
    const cc = client({ maxAttempts: 3 });
    sim.setFaults({ errorRate: 1 });
    const e = await failure(cc.putUser('8001', profile('8001')));
    expect(e.code).toBe('CALL_CENTER_TRANSIENT');
    expect(e.retriable).toBe(true);
    expect(e.details).toMatchObject({ attempts: 3, method: 'PUT', path: '/v1/users/8001' });
    expect([500, 502, 503]).toContain(e.details?.status);
    expect(sim.calls().writes).toBe(3);
    expect(sim.state().users).toEqual({});
  });

  it('a slow answer times out and counts as transient', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    // undici enforces timeouts on a coarse clock (about half a second), hence the generous gap.
    const cc = client({ timeoutMs: 300, maxAttempts: 2, metrics });
    sim.setFaults({ latencyMs: 2_500 });
    const e = await failure(cc.getUser('8101'));
    expect(e.code).toBe('CALL_CENTER_TRANSIENT');
    expect(e.details).toMatchObject({ attempts: 2, reason: 'timeout' });
    expect((await metrics.callCenterRetries.get()).values).toEqual([expect.objectContaining({ labels: { reason: 'timeout' }, value: 1 })]);
  });

  it('an unreachable call center is transient, and ping says so', async () => {
    const dead = createSimulator({ token: TOKEN });
    const deadUrl = await dead.start();
    await dead.stop();
    const cc = client({ baseUrl: deadUrl, maxAttempts: 2 });
    const e = await failure(cc.putUser('8201', profile('8201')));
    expect(e.code).toBe('CALL_CENTER_TRANSIENT');
    expect(e.details).toMatchObject({ attempts: 2, reason: 'connection' });
    expect((await failure(cc.ping())).code).toBe('CALL_CENTER_TRANSIENT');
    await client().ping(); // the live simulator answers 404 on `/`: reachable
  });

  it('an aborted signal stops the retrying at once with the abort reason', async () => {
    const cc = client({ retryBaseMs: 60_000, retryMaxMs: 60_000 });
    sim.setFaults({ errorRate: 1 });
    const ctl = new AbortController();
    const call = cc.putUser('9001', profile('9001'), { signal: ctl.signal });
    const outcome = call.then(
      () => 'resolved',
      (e: unknown) => e,
    );
    await waitFor(() => sim.calls().writes >= 1, { timeoutMs: 5_000, what: 'the first attempt' });
    const started = performance.now();
    const reason = new Error('sink shutting down');
    ctl.abort(reason);
    expect(await outcome).toBe(reason);
    expect(performance.now() - started).toBeLessThan(1_000);

    const already = await cc.getUser('9001', { signal: AbortSignal.abort(reason) }).catch((e: unknown) => e);
    expect(already).toBe(reason);
  });

  it('close() ends calls that are waiting to retry', async () => {
    const cc = client({ retryBaseMs: 60_000, retryMaxMs: 60_000 });
    sim.setFaults({ errorRate: 1 });
    const call = failure(cc.putUser('9101', profile('9101')));
    await waitFor(() => sim.calls().writes >= 1, { timeoutMs: 5_000, what: 'the first attempt' });
    await cc.close();
    expect((await call).code).toBe('CALL_CENTER_TRANSIENT');
  });

  it('never has more than `concurrency` requests in flight', async () => {
    const cc = client({ concurrency: 4 });
    sim.setFaults({ latencyMs: 20 });
    const uids = Array.from({ length: 40 }, (_, i) => `10${i}`);
    await Promise.all(uids.map((uid) => cc.putUser(uid, profile(uid))));
    expect(Object.keys(sim.state().users).sort()).toEqual(uids.sort());
    expect(sim.calls().maxInFlight).toBe(4);
  });

  it('calls made under a long-lived signal, many waiting for a slot, leave no listener on it once done', async () => {
    const cc = client({ concurrency: 2 });
    sim.setFaults({ latencyMs: 5 });
    const stop = new AbortController();
    const uids = Array.from({ length: 30 }, (_, i) => `13${i}`);
    const calls = Promise.all(uids.map((uid) => cc.putUser(uid, profile(uid), { signal: stop.signal })));
    // While they wait, the waiting calls share one listener on the signal, not one each.
    expect(getEventListeners(stop.signal, 'abort').length).toBeLessThanOrEqual(2 + 1);
    await calls;
    // undici lets go of a request's listener just after its answer is read.
    await waitFor(() => getEventListeners(stop.signal, 'abort').length === 0, { what: 'no listener left on the signal', timeoutMs: 5_000 });
    expect(Object.keys(sim.state().users)).toEqual(expect.arrayContaining(uids));
  });

  it('holds each project to ratePerProjectPerS, projects independently', async () => {
    const cc = client({ ratePerProjectPerS: 20 });
    for (let i = 0; i < 30; i++) sim.putUserByHand(`11${i}`, profile(`11${i}`));
    const started = performance.now();
    // The bucket starts full (20), so another 10 on one project need half a second of refill.
    await Promise.all(Array.from({ length: 30 }, (_, i) => cc.setRoles('slow', `11${i}`, ['r'])));
    expect(performance.now() - started).toBeGreaterThanOrEqual(450);
    const other = performance.now();
    await Promise.all(Array.from({ length: 15 }, (_, i) => cc.setRoles('fresh', `11${i}`, ['r'])));
    expect(performance.now() - other).toBeLessThan(1_000); // a shared bucket would need 1.25 s more
    expect(Object.keys(sim.state().projects.slow ?? {}).length).toBe(30);
  });

  it('a wrong token is CALL_CENTER_REJECTED with status 401', async () => {
    const cc = client({ token: 'not-the-token' });
    const e = await failure(cc.putUser('12001', profile('12001')));
    expect(e.code).toBe('CALL_CENTER_REJECTED');
    expect(e.details).toMatchObject({ status: 401, attempts: 1 });
    expect(sim.state().users).toEqual({});
  });

  it('the token never reaches a log line or an error', async () => {
    const cc = client({ maxAttempts: 4 });
    sim.setFaults({ errorRate: 0.5, rateLimitRate: 0.2, retryAfterS: 0 });
    const errors = await Promise.all(
      Array.from({ length: 20 }, (_, i) => cc.putUser(`13${i}`, profile(`13${i}`)).then(() => undefined, (e: unknown) => e)),
    );
    // Every earlier test of this file logged into logLines too, at trace.
    expect(logLines.some((l) => l.includes('retrying'))).toBe(true);
    for (const line of logLines) expect(line).not.toContain(TOKEN);
    for (const e of errors.filter(Boolean)) {
      expect(JSON.stringify({ message: (e as Error).message, details: (e as FleetSyncError).details })).not.toContain(TOKEN);
    }
  });
});
