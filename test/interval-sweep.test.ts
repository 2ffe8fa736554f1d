// The interval sweep is the sink group's work: two members share each pass (every park swept once per pass, not
// once per member), the pass repairs hand-made drift, and a park just turned on is not queued behind it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSink, type SinkHandle } from '../connector/sink/sink.js';
import { USERS_OF_PARK_SQL } from '../connector/sync/store.js';
import { claimDueParkSweep, claimIntervalSweep } from '../connector/sync/work-queue.js';
import { createSyncStack, type SyncStack } from '../connector/wiring.js';
import { testLogger, waitFor } from './helpers.js';
import { seedPark, startPipeline, waitForConvergence, waitForProject, type Pipeline, type SeededPark } from './pipeline.js';

const INTERVAL_S = 2;

describe('interval sweep: one pass for the whole group', () => {
  let p: Pipeline;
  let second: { stack: SyncStack; sink: SinkHandle } | null = null;
  const parks: SeededPark[] = [];
  const q = (sql: string, params: unknown[] = []) => p.db.pool.query(sql, params);
  const claims = async () => Number((await q(`SELECT claims FROM fleet_sync_schedule WHERE name = 'interval_sweep'`)).rows[0]?.claims ?? 0);

  beforeAll(async () => {
    p = await startPipeline({ overrides: { RECONCILE_INTERVAL_S: String(INTERVAL_S) } });
    const stack = createSyncStack({ config: p.config, log: testLogger(), metrics: p.metrics });
    second = { stack, sink: startSink({ config: p.config, log: testLogger(), metrics: p.metrics, ...stack }) };
    await waitFor(() => p.sink!.isReady() && second!.sink.isReady(), { what: 'both sink members to consume', timeoutMs: 60_000 });
    for (let i = 0; i < 4; i++) parks.push(await seedPark(p.db.pool, { users: 6 }));
    await waitForConvergence(p, 'the four backfills', 30_000);
  });
  afterAll(async () => {
    await second?.sink.stop();
    await second?.stack.close();
    await p?.stop();
  });

  it('hand-made drift in a park nobody touches is repaired by the next sweep, and an outsider is left alone', async () => {
    const park = parks[0]!;
    const runsBefore = Number((await q(`SELECT count(*) FROM reconcile_runs WHERE park_id = $1 AND reason = 'interval'`, [park.parkId])).rows[0].count);
    const driftAt = (await q('SELECT now() AS at')).rows[0].at as Date;
    p.sim.setRolesByHand(park.projectId, park.uids[0]!, ['cc-admin']);
    p.sim.setRolesByHand(park.projectId, 'outsider', ['cc-lead']);
    await waitForProject(p, park.projectId, 'the drift repaired', { outsiders: ['outsider'], timeoutMs: 90_000 });
    // Repaired by a sweep: the interval pass's, or a backfill asked for again when the group rebalanced (its
    // uncommitted park events are redone by the partitions' next owner).
    const run = await waitFor(
      async () =>
        (await q(`SELECT corrected_grants FROM reconcile_runs WHERE park_id = $1 AND started_at >= $2 AND corrected_grants > 0 ORDER BY id DESC LIMIT 1`, [park.parkId, driftAt]))
          .rows[0] as { corrected_grants: number } | undefined,
      { what: 'a sweep that corrected the grant', timeoutMs: 90_000 },
    );
    expect(run.corrected_grants).toBe(1);
    await waitFor(async () => Number((await q(`SELECT count(*) FROM reconcile_runs WHERE park_id = $1 AND reason = 'interval'`, [park.parkId])).rows[0].count) > runsBefore, {
      what: 'the interval pass to go on sweeping the park',
      timeoutMs: 90_000,
    });
    // The call-center team's own people are not fleet-sync's.
    expect(p.sim.rolesOf(park.projectId, 'outsider')).toEqual(['cc-lead']);
  });

  it("a sweep's page of a park's users is a range of the (park_id, id) index: no page sorts the park's rows", async () => {
    const park = await seedPark(p.db.pool, { users: 1_000, enable: false });
    const client = await p.db.pool.connect();
    try {
      // Whatever the table's size, only an index can give the order without a sort.
      await client.query('SET enable_seqscan = off');
      const { rows } = await client.query(`SELECT id FROM users WHERE park_id = $1 ORDER BY id OFFSET 500 LIMIT 1`, [park.parkId]);
      const plan = (await client.query(`EXPLAIN (FORMAT JSON) ${USERS_OF_PARK_SQL}`, [park.parkId, rows[0].id, 100])).rows[0]['QUERY PLAN'];
      const text = JSON.stringify(plan);
      expect(text).toContain('users_park_id_id_idx');
      expect(text).not.toContain('"Node Type":"Sort"');
    } finally {
      client.release();
    }
  });

  it('each pass sweeps every park once, whichever member runs it: two members do not sweep everything twice', async () => {
    const start = await claims();
    await waitFor(async () => (await claims()) >= start + 3, { what: 'three more interval passes', timeoutMs: 60_000 });
    // No new pass once both members are stopped; a request they left pending stays unrun.
    await second!.sink.stop();
    await p.sink!.stop();
    const passes = await claims();
    const { rows } = await q(
      `SELECT park_id, count(*) FILTER (WHERE finished_at IS NOT NULL AND error IS NULL)::int AS runs,
              count(*) FILTER (WHERE finished_at IS NULL OR error IS NOT NULL)::int AS unfinished,
              array_agg(error) FILTER (WHERE error IS NOT NULL) AS errors
       FROM reconcile_runs WHERE reason = 'interval' GROUP BY park_id`,
    );
    const runs = new Map(rows.map((r) => [r.park_id as string, r as { runs: number; unfinished: number; errors: string[] | null }]));
    for (const park of parks) {
      const r = runs.get(park.parkId);
      expect(r, `interval runs of ${park.parkId}`).toBeDefined();
      // At most one finished run per pass (two members each sweeping everything would give about two).
      expect(r!.runs).toBeLessThanOrEqual(passes);
      expect(r!.runs).toBeGreaterThanOrEqual(2);
      // Only a sweep cut short by a member stopping is left unfinished (the second member's, given back and taken
      // up by the first, which is stopped next).
      expect(r!.unfinished, JSON.stringify(r!.errors)).toBeLessThanOrEqual(2);
      for (const error of r!.errors ?? []) expect(error).toMatch(/abort/i);
    }
    const schedule = (await q(`SELECT next_at > claimed_at AS ahead FROM fleet_sync_schedule WHERE name = 'interval_sweep'`)).rows[0];
    expect(schedule.ahead).toBe(true);
  });

  it('a revocation, then a backfill, then the interval: a park turned on is not queued behind the pass over every park', async () => {
    // Both members are stopped (above): the queue is read as a member would take it.
    await q(`DELETE FROM call_center_park_sweeps`);
    await q(
      `INSERT INTO call_center_park_sweeps (park_id, reason, next_at) VALUES
         ('q-interval-1', 'interval', now() - interval '1 minute'), ('q-interval-2', 'interval', now() - interval '50 seconds'),
         ('q-on', 'park_on', now() - interval '1 second'), ('q-off', 'park_off', now() - interval '1 second')`,
    );
    const order: string[] = [];
    // A member already running an interval sweep takes the toggles' and leaves the interval's to others.
    const busy = { interval: false };
    for (let request = await claimDueParkSweep(p.db.pool, 60_000, busy); request; request = await claimDueParkSweep(p.db.pool, 60_000, busy)) order.push(request.park_id);
    expect(order).toEqual(['q-off', 'q-on']);
    for (let request = await claimDueParkSweep(p.db.pool, 60_000); request; request = await claimDueParkSweep(p.db.pool, 60_000)) order.push(request.park_id);
    expect(order).toEqual(['q-off', 'q-on', 'q-interval-1', 'q-interval-2']);
    // A pass asked for while a park's toggle sweep waits keeps that request as it is.
    await q(`UPDATE fleet_sync_schedule SET next_at = now() - interval '1 second'`);
    await q(`DELETE FROM call_center_park_sweeps`);
    await q(`INSERT INTO call_center_park_sweeps (park_id, reason) VALUES ($1, 'park_on')`, [parks[1]!.parkId]);
    const asked = await claimIntervalSweep(p.db.pool, INTERVAL_S);
    expect(asked?.sort()).toEqual(parks.map((k) => k.parkId).sort());
    const { rows } = await q(`SELECT park_id, reason FROM call_center_park_sweeps ORDER BY park_id`);
    expect(new Map(rows.map((r) => [r.park_id, r.reason]))).toEqual(new Map(parks.map((k, i) => [k.parkId, i === 1 ? 'park_on' : 'interval'])));
    // Not due again until the interval has passed.
    expect(await claimIntervalSweep(p.db.pool, INTERVAL_S)).toBeNull();
  });
});
