// The whole path a user sees: the api turns a park on, the change travels the CDC stream, the sink backfills
// the park and follows it; off revokes; the status route tells what happened; replay reads the topics back.
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../api/app.js';
import { replay } from '../connector/replay.js';
import { topicFor } from '../connector/events.js';
import { testLogger, waitFor } from './helpers.js';
import { heldGrants, startPipeline, waitForConvergence, type Pipeline } from './pipeline.js';

const WRITE = { authorization: 'Bearer w' };

describe('end to end: api → PostgreSQL → source → Kafka → sink → call center', () => {
  let p: Pipeline;
  let app: FastifyInstance;
  const post = async (url: string, payload: object) => {
    const res = await app.inject({ method: 'POST', url, payload, headers: WRITE });
    return { status: res.statusCode, body: res.json() };
  };
  const status = async () => (await app.inject({ method: 'GET', url: '/v1/sync/call_center/parks', headers: WRITE })).json();

  beforeAll(async () => {
    p = await startPipeline({ overrides: { API_TOKENS: 'w=sync:write,users:read' } });
    await p.db.pool.query(`INSERT INTO parks (id, name) VALUES ('p1', 'One')`);
    await p.db.pool.query(`INSERT INTO roles (id, park_id, name) VALUES ('r1', 'p1', 'Dispatcher')`);
    await p.db.pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) SELECT 'p1', 'uid-' || g, 'l' || g, 'U' || g, 'r1' FROM generate_series(1, 30) g`);
    app = await buildApp({ config: p.config, pool: p.db.pool, log: testLogger(), metrics: p.metrics, readiness: {} });
    await waitFor(() => p.sink!.isReady(), { what: 'the sink to consume', timeoutMs: 60_000 });
  });
  afterAll(async () => {
    await app?.close();
    await p?.stop();
  });

  it('park/on backfills the park, park/off revokes, on again restores; the status route shows each step', async () => {
    const on = await post('/v1/sync/call_center/park/on', { park_id: 'p1', project_id: 'proj-1', roles: [{ role_id: 'r1', call_center_role_id: 'cc-op' }] });
    expect(on.status).toBe(200);
    await waitForConvergence(p, 'the backfill after park/on');
    expect(Object.keys(heldGrants(p.sim)['proj-1']!)).toHaveLength(30);
    await waitFor(async () => (await status()).parks[0].users_granted === 30 && (await status()).parks[0].last_sweep?.finished_at, {
      what: 'the status route to count 30 grants after a finished sweep',
    });
    const afterOn = (await status()).parks[0];
    expect(afterOn).toMatchObject({ park_id: 'p1', enabled: true, project_id: 'proj-1', last_sweep: { reason: 'park_on', checked: 30, failed: 0, drift: 0 } });
    // the backfill granted whatever the stream had not yet granted itself
    expect(afterOn.last_sweep.corrected_grants + afterOn.last_sweep.in_sync).toBe(30);

    await p.db.pool.query(`INSERT INTO users (park_id, yandex_uid, login, name, role_id) VALUES ('p1', 'uid-late', 'late', 'Late', 'r1')`);
    await waitFor(() => p.sim.rolesOf('proj-1', 'uid-late').length === 1, { what: 'a new user to follow' });

    expect((await post('/v1/sync/call_center/park/off', { park_id: 'p1' })).status).toBe(200);
    await waitFor(() => Object.keys(p.sim.state().projects['proj-1'] ?? {}).length === 0, { what: 'the revocation after park/off' });

    expect((await post('/v1/sync/call_center/park/on', { park_id: 'p1', project_id: 'proj-1', roles: [{ role_id: 'r1', call_center_role_id: 'cc-op' }] })).status).toBe(200);
    await waitForConvergence(p, 'the backfill after park/on again');
    expect(Object.keys(heldGrants(p.sim)['proj-1']!)).toHaveLength(31);
    await waitFor(async () => (await status()).parks[0].users_granted === 31, { what: 'the status route to count 31 grants' });
    expect((await status()).parks[0]).toMatchObject({ enabled: true, last_event: { events_applied: expect.any(Number) } });
  });

  it('replay reads a topic back from the beginning as decoded JSON lines, filtered by park', async () => {
    const lines: string[] = [];
    const out = new Writable({
      write(chunk, _enc, done) {
        lines.push(...String(chunk).split('\n').filter(Boolean));
        done();
      },
    });
    const kept = await replay(
      { config: p.config, log: testLogger() },
      { topic: topicFor(p.config.TOPIC_PREFIX, 'users'), from: { kind: 'beginning' }, to: 'stdout', park: 'p1', out },
    );
    expect(kept).toBe(lines.length);
    const events = lines.map((l) => JSON.parse(l));
    const uids = new Set(events.map((e) => e.value?.after?.yandex_uid));
    expect(uids.size).toBe(31);
    expect(events.filter((e) => e.value.op === 'r')).toHaveLength(30);
    expect(events.every((e) => e.value.after.park_id === 'p1')).toBe(true);
  });
});
