// The call-center simulator speaks SPEC §5 faithfully over HTTP, and injects the faults it is told to.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createSimulator, type Simulator } from '../simulator/simulator.js';

const TOKEN = 'sim-test-token';
let sim: Simulator;

async function call(method: string, path: string, body?: unknown, token: string | null = TOKEN) {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(sim.url + path, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, any>) : undefined };
}

beforeAll(async () => {
  sim = createSimulator({ token: TOKEN, seed: 42 });
  await sim.start();
});
afterEach(() => {
  sim.setFaults({ errorRate: 0, latencyMs: 0, rateLimitRate: 0, retryAfterS: 1, rejectUids: [] });
  sim.reset();
});
afterAll(async () => {
  await sim.stop();
});

describe('call-center simulator', { timeout: 15_000 }, () => {
  it('answers 401 {code,message} without the right bearer token, and changes nothing', async () => {
    for (const token of [null, 'wrong']) {
      const res = await call('PUT', '/v1/users/1', { login: 'l', name: 'n' }, token);
      expect(res.status).toBe(401);
      expect(res.body).toEqual({ code: 'UNAUTHORIZED', message: expect.any(String) });
    }
    expect(sim.state().users).toEqual({});
  });

  it('PUT /v1/users/:uid creates and replaces idempotently; GET answers 200 or 404', async () => {
    expect((await call('PUT', '/v1/users/1', { login: 'l', name: 'n', phone: '+7', email: 'e@x' })).status).toBe(200);
    expect((await call('PUT', '/v1/users/1', { login: 'l', name: 'n', phone: '+7', email: 'e@x' })).status).toBe(200);
    expect(sim.state().users).toEqual({ '1': { login: 'l', name: 'n', phone: '+7', email: 'e@x' } });
    await call('PUT', '/v1/users/1', { login: 'l2', name: 'n2', phone: null });
    expect((await call('GET', '/v1/users/1')).body).toEqual({ uid: '1', login: 'l2', name: 'n2', phone: null, email: null });
    const missing = await call('GET', '/v1/users/2');
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ code: expect.any(String), message: expect.any(String) });
  });

  it('PUT /v1/users/:uid rejects a body without string login and name with 400', async () => {
    for (const body of [{ name: 'n' }, { login: 'l' }, { login: 1, name: 'n' }, { login: 'l', name: 'n', phone: 5 }, { login: 'l', name: 'n', email: false }]) {
      const res = await call('PUT', '/v1/users/1', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body).toMatchObject({ code: 'BAD_REQUEST', message: expect.any(String) });
    }
    expect(sim.state().users).toEqual({});
  });

  it('roles: a grant for an unknown uid is 404, [] for one is fine, a set replaces, [] revokes and unlists', async () => {
    expect((await call('PUT', '/v1/projects/p/users/1/roles', { role_ids: ['a'] })).status).toBe(404);
    expect((await call('PUT', '/v1/projects/p/users/1/roles', { role_ids: [] })).status).toBe(200);
    expect((await call('PUT', '/v1/projects/p/users/1/roles', { role_ids: 'a' })).status).toBe(400);
    await call('PUT', '/v1/users/1', { login: 'l', name: 'n' });
    await call('PUT', '/v1/projects/p/users/1/roles', { role_ids: ['b', 'a'] });
    await call('PUT', '/v1/projects/q/users/1/roles', { role_ids: ['x'] });
    expect(sim.rolesOf('p', '1')).toEqual(['a', 'b']);
    await call('PUT', '/v1/projects/p/users/1/roles', { role_ids: ['c'] });
    expect(sim.rolesOf('p', '1')).toEqual(['c']);
    await call('PUT', '/v1/projects/p/users/1/roles', { role_ids: [] });
    expect(sim.state().projects).toEqual({ p: {}, q: { '1': ['x'] } });
    expect((await call('GET', '/v1/projects/p/users')).body).toEqual({ users: [] });
  });

  it('lists a project by uid with keyset cursors: default 100, at most 1000, only uids holding roles', async () => {
    for (let i = 0; i < 1_205; i++) {
      const uid = `u${String(i).padStart(5, '0')}`;
      sim.putUserByHand(uid, { login: uid, name: uid });
      sim.setRolesByHand('p', uid, i % 2 ? ['odd'] : ['even']);
    }
    sim.putUserByHand('u-no-roles', { login: 'x', name: 'x' });

    const first = await call('GET', '/v1/projects/p/users');
    expect(first.body!.users).toHaveLength(100);
    expect(first.body!.users[0]).toEqual({ uid: 'u00000', role_ids: ['even'] });
    expect((await call('GET', '/v1/projects/p/users?limit=5000')).body!.users).toHaveLength(1_000);

    // A grant added behind the cursor and one removed ahead of it while paging: nothing repeats, nothing is skipped.
    const page1 = await call('GET', '/v1/projects/p/users?limit=600');
    sim.setRolesByHand('p', 'u00000', []);
    sim.setRolesByHand('p', 'u00001', ['late']);
    sim.setRolesByHand('p', 'u00700', []);
    const page2 = await call('GET', `/v1/projects/p/users?limit=600&cursor=${page1.body!.next_cursor}`);
    const page3 = await call('GET', `/v1/projects/p/users?limit=600&cursor=${page2.body!.next_cursor}`);
    expect(page3.body!.next_cursor).toBeUndefined();
    const uids = [...page1.body!.users, ...page2.body!.users, ...page3.body!.users].map((u: { uid: string }) => u.uid);
    expect(uids).toHaveLength(1_204);
    expect(new Set(uids).size).toBe(1_204);
    expect(uids).toEqual([...uids].sort());
    expect(uids).not.toContain('u00700');

    expect((await call('GET', '/v1/projects/p/users?limit=0')).status).toBe(400);
    expect((await call('GET', '/v1/projects/p/users?limit=x')).status).toBe(400);
    expect((await call('GET', '/v1/projects/p/users?cursor=%%%')).status).toBe(400);
    expect((await call('GET', '/v1/projects/nobody/users')).body).toEqual({ users: [] });
  });

  it('errorRate 1 answers every /v1 request 5xx before doing anything; control routes stay up', async () => {
    sim.setFaults({ errorRate: 1 });
    const statuses = new Set<number>();
    for (let i = 0; i < 30; i++) statuses.add((await call('PUT', '/v1/users/1', { login: 'l', name: 'n' })).status);
    expect([...statuses].sort()).toEqual([500, 502, 503]);
    expect(sim.state().users).toEqual({});
    expect((await call('GET', '/_sim/state')).status).toBe(200);
    expect(sim.calls()).toMatchObject({ writes: 30, faulted: 30 });
  });

  it('rateLimitRate 1 answers 429 with Retry-After, even before checking the token', async () => {
    sim.setFaults({ rateLimitRate: 1, retryAfterS: 3 });
    const res = await call('GET', '/v1/users/1', undefined, 'wrong');
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBe('3');
  });

  it('rejectUids answers 422 to any call about those uids', async () => {
    sim.putUserByHand('bad', { login: 'l', name: 'n' });
    sim.setFaults({ rejectUids: ['bad'] });
    expect((await call('PUT', '/v1/users/bad', { login: 'l', name: 'n' })).status).toBe(422);
    expect((await call('GET', '/v1/users/bad')).status).toBe(422);
    expect((await call('PUT', '/v1/projects/p/users/bad/roles', { role_ids: ['a'] })).status).toBe(422);
    expect((await call('PUT', '/v1/users/good', { login: 'l', name: 'n' })).status).toBe(200);
  });

  it('latencyMs delays each /v1 answer', async () => {
    sim.setFaults({ latencyMs: 150 });
    const started = performance.now();
    expect((await call('GET', '/v1/users/1')).status).toBe(404);
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('the same seed gives the same faults in the same order', async () => {
    const statuses = async (seed: number) => {
      const other = createSimulator({ token: TOKEN, seed, faults: { errorRate: 0.3, rateLimitRate: 0.2 } });
      const url = await other.start();
      const out: number[] = [];
      for (let i = 0; i < 40; i++) out.push((await fetch(`${url}/v1/users/1`, { headers: { authorization: `Bearer ${TOKEN}` } })).status);
      await other.stop();
      return out;
    };
    const a = await statuses(5);
    expect(await statuses(5)).toEqual(a);
    expect(new Set(a).size).toBeGreaterThan(2);
    expect(await statuses(6)).not.toEqual(a);
  });

  it('other processes drive it over /_sim: faults, state, calls, reset', async () => {
    const put = await call('PUT', '/_sim/faults', { errorRate: 1, rejectUids: ['z'] }, null);
    expect(put.body).toMatchObject({ errorRate: 1, rejectUids: ['z'], latencyMs: 0 });
    expect(sim.faults().errorRate).toBe(1);
    expect((await call('PUT', '/_sim/faults', { errorRate: 2 }, null)).status).toBe(400);
    expect((await call('GET', '/v1/users/1')).status).toBeGreaterThanOrEqual(500);
    await call('PUT', '/_sim/faults', { errorRate: 0 }, null);

    await call('PUT', '/v1/users/1', { login: 'l', name: 'n' });
    await call('PUT', '/v1/projects/p/users/1/roles', { role_ids: ['a'] });
    expect((await call('GET', '/_sim/state', undefined, null)).body).toEqual({
      users: { '1': { login: 'l', name: 'n', phone: null, email: null } },
      projects: { p: { '1': ['a'] } },
    });
    expect((await call('GET', '/_sim/calls', undefined, null)).body).toMatchObject({
      writes: 2,
      reads: 1,
      faulted: 1,
      byRoute: { 'GET /v1/users/:uid': 1, 'PUT /v1/users/:uid': 1, 'PUT /v1/projects/:project_id/users/:uid/roles': 1 },
    });
    await call('POST', '/_sim/reset', undefined, null);
    expect(sim.state()).toEqual({ users: {}, projects: {} });
    expect(sim.calls().writes).toBe(0);
  });
});
